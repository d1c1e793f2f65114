//go:build ignore

// tcpstate: one ring-buffer record per TCP state transition, with the time
// the socket spent in the state it leaves. Loaded by
// services/probe/internal/tracer.

#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_core_read.h>
#include <bpf/bpf_tracing.h>

char LICENSE[] SEC("license") = "GPL";

// Not in vmlinux.h: these are preprocessor macros in the kernel.
#define AF_INET 2
#define AF_INET6 10
#define IPPROTO_TCP 6
#define TCP_CLOSE 7

enum counter_index {
	COUNTER_SUBMITTED = 0,
	COUNTER_DROPPED = 1,
	COUNTER_MAX,
};

// The one definition of the record. Fields are ordered by size so that
// there is no implicit padding: 96 bytes, a multiple of 8.
struct event {
	__u64 ts_ns;             // bpf_ktime_get_ns (CLOCK_MONOTONIC)
	__u64 skaddr;            // kernel socket address; user space hashes it
	__u64 born_ns;           // when the probe first saw this socket: with
	                         // skaddr, one socket's life (addresses are reused)
	__u64 state_duration_us; // time in oldstate, 0 when not seen entering it
	__u32 pid;               // tgid
	__u32 tid;
	__u16 family;            // AF_INET or AF_INET6
	__u16 sport;             // host order
	__u16 dport;             // host order
	__u8 oldstate;
	__u8 newstate;
	__u8 saddr[16];          // IPv4 in the first 4 bytes, rest zero
	__u8 daddr[16];
	char comm[16];
};
_Static_assert(sizeof(struct event) == 96, "struct event has implicit padding");

// Wakes the reader only once this many bytes wait in the ring; 0 keeps the
// kernel's default (wake whenever the reader had caught up, which under load
// is nearly every record). Set from Go before load.
const volatile __u64 wakeup_bytes = 0;

// What the probe remembers of a live socket.
struct sock_info {
	__u64 entered_ns; // when it entered its current state
	__u64 born_ns;    // when the probe first saw it
};

// skaddr -> sock_info. LRU so that sockets whose CLOSE we never see cannot
// fill it. max_entries is set from Go before load.
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 65536);
	__type(key, __u64);
	__type(value, struct sock_info);
} sock_start SEC(".maps");

// Size set from Go before load.
struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, 16 << 20);
} events SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, COUNTER_MAX);
	__type(key, __u32);
	__type(value, __u64);
} counters SEC(".maps");

// Puts struct event into BTF for bpf2go -type event; in .rodata, so it
// costs no extra map.
const struct event *const unused_event = 0;

static __always_inline void count(__u32 idx)
{
	__u64 *v = bpf_map_lookup_elem(&counters, &idx);

	if (v)
		*v += 1; // per-CPU slot: no atomics needed
}

SEC("tracepoint/sock/inet_sock_set_state")
int handle_set_state(struct trace_event_raw_inet_sock_set_state *ctx)
{
	__u16 family = ctx->family;
	__u64 skaddr = (__u64)ctx->skaddr;
	int oldstate = ctx->oldstate;
	int newstate = ctx->newstate;
	__u64 now = bpf_ktime_get_ns();
	__u64 duration_us = 0;
	struct sock_info *info, fresh = {.entered_ns = now, .born_ns = now};
	__u64 born = now;
	struct event *e;
	__u64 flags;

	if (ctx->protocol != IPPROTO_TCP)
		return 0;
	if (family != AF_INET && family != AF_INET6)
		return 0;

	// Book-keeping first: it must happen even when the ring is full, or the
	// next duration of this socket would be wrong.
	info = bpf_map_lookup_elem(&sock_start, &skaddr);
	if (info) {
		if (now > info->entered_ns)
			duration_us = (now - info->entered_ns) / 1000;
		born = info->born_ns;
	}
	if (newstate == TCP_CLOSE) {
		bpf_map_delete_elem(&sock_start, &skaddr);
	} else if (info) {
		info->entered_ns = now;
	} else {
		bpf_map_update_elem(&sock_start, &skaddr, &fresh, BPF_ANY);
	}

	e = bpf_ringbuf_reserve(&events, sizeof(*e), 0);
	if (!e) {
		count(COUNTER_DROPPED);
		return 0;
	}

	__u64 id = bpf_get_current_pid_tgid();

	e->ts_ns = now;
	e->skaddr = skaddr;
	e->born_ns = born;
	e->state_duration_us = duration_us;
	e->pid = id >> 32;
	e->tid = (__u32)id;
	e->family = family;
	e->sport = ctx->sport;
	e->dport = ctx->dport;
	e->oldstate = oldstate;
	e->newstate = newstate;
	// Reserved ring memory holds old records: clear what IPv4 leaves unused.
	__builtin_memset(e->saddr, 0, sizeof(e->saddr));
	__builtin_memset(e->daddr, 0, sizeof(e->daddr));
	if (family == AF_INET) {
		bpf_core_read(e->saddr, sizeof(ctx->saddr), &ctx->saddr);
		bpf_core_read(e->daddr, sizeof(ctx->daddr), &ctx->daddr);
	} else {
		bpf_core_read(e->saddr, sizeof(ctx->saddr_v6), &ctx->saddr_v6);
		bpf_core_read(e->daddr, sizeof(ctx->daddr_v6), &ctx->daddr_v6);
	}
	bpf_get_current_comm(&e->comm, sizeof(e->comm));

	// Each wakeup costs the reader an epoll round trip; batch them. The Go
	// reader polls with a deadline, so records never wait longer than that.
	flags = 0;
	if (wakeup_bytes > 0)
		flags = bpf_ringbuf_query(&events, BPF_RB_AVAIL_DATA) >= wakeup_bytes ?
				BPF_RB_FORCE_WAKEUP :
				BPF_RB_NO_WAKEUP;
	bpf_ringbuf_submit(e, flags);
	count(COUNTER_SUBMITTED);
	return 0;
}
