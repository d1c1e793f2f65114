//go:build ignore

// tcpstate: the kernel side of the netpulse probe. Tracepoints only (no
// kprobes, no fentry): every program below attaches on its own, so a kernel
// that lacks one tracepoint loses only that signal. Records go to one ring
// buffer: struct event (state changes, retransmits, resets, errors, failed
// connects) and struct conn (a finished connection). Loaded by
// services/probe/internal/tracer, which documents the field semantics.

#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_core_read.h>
#include <bpf/bpf_tracing.h>
#include <bpf/bpf_endian.h>

char LICENSE[] SEC("license") = "GPL";

// Not in vmlinux.h: these are preprocessor macros in the kernel.
#define AF_INET 2
#define AF_INET6 10
#define IPPROTO_TCP 6
#define EBUSY 16
#define EINVAL 22
#define ENOMEM 12
#define EAGAIN 11
#define EHOSTUNREACH 113
#define EEXIST 17
#define ETH_P_IP 0x0800
#define ETH_P_IPV6 0x86DD

// TCP states (include/net/tcp_states.h).
enum {
	S_ESTABLISHED = 1,
	S_SYN_SENT = 2,
	S_SYN_RECV = 3,
	S_FIN_WAIT1 = 4,
	S_FIN_WAIT2 = 5,
	S_TIME_WAIT = 6,
	S_CLOSE = 7,
	S_CLOSE_WAIT = 8,
	S_LAST_ACK = 9,
	S_LISTEN = 10,
	S_CLOSING = 11,
	S_NEW_SYN_RECV = 12,
};

// Record types: 1..7 are the contract's EventType numbers; a struct conn
// is RECORD_CONN.
enum record_type {
	RECORD_STATE_CHANGE = 1,
	RECORD_RETRANSMIT = 2,
	RECORD_SYNACK_RETRANSMIT = 3,
	RECORD_RESET_SENT = 4,
	RECORD_RESET_RECEIVED = 5,
	RECORD_SOCKET_ERROR = 6,
	RECORD_CONNECT_FAILED = 7,
	RECORD_CONN = 8,
	RECORD_TYPES = 9,
};

// The contract's Side and OwnerSource numbers.
enum { SIDE_UNKNOWN = 0, SIDE_CLIENT = 1, SIDE_SERVER = 2 };
enum { SRC_UNKNOWN = 0, SRC_TASK = 1, SRC_SOCKET = 2, SRC_LISTENER = 3 };

// Per-CPU counters. Records: submitted at [type], dropped (ring full) at
// [COUNTER_DROPPED + type]. Maps: successful inserts and deletes, so that
// user space can tell evictions (inserts - deletes - live entries).
enum counter_index {
	COUNTER_SUBMITTED = 0,
	COUNTER_DROPPED = RECORD_TYPES,
	COUNTER_SOCK_INSERT = 2 * RECORD_TYPES,
	COUNTER_SOCK_DELETE,
	COUNTER_LISTENER_INSERT,
	COUNTER_LISTENER_DELETE,
	COUNTER_SYNACK_INSERT,
	COUNTER_SYNACK_DELETE,
	COUNTER_RETRANSMIT_FAILED, // attempts the kernel did not count
	COUNTER_ACCEPT_UNRESOLVED, // accepted fd whose socket could not be read
	COUNTER_DROP_PACKETS,      // TCP packets the kernel dropped (kfree_skb)
	COUNTER_DROP_KEYLESS,      // of those, counted without their key: map full
	COUNTER_MAX,
};

// One event record. Fields are ordered by size so that there is no
// implicit padding: 144 bytes, a multiple of 8.
struct event {
	__u32 type;              // enum record_type, 1..7
	__u32 pid;               // owner tgid, see owner_source
	__u64 ts_ns;             // bpf_ktime_get_ns (CLOCK_MONOTONIC)
	__u64 skaddr;            // kernel socket address; user space hashes it
	__u64 born_ns;           // when the probe saw the socket open, else 0:
	                         // with skaddr, one socket's life
	__u64 state_duration_us; // time in oldstate, 0 when not seen entering it
	__u64 cookie;            // sk_cookie, 0 until the kernel assigned one
	__u64 cgroup_id;         // owner's cgroup v2 id
	__u64 handshake_us;      // on the change to ESTABLISHED
	__u32 tid;               // current thread
	__s32 error;             // positive errno or 0
	__u32 segments;          // RETRANSMIT, SYNACK_RETRANSMIT
	__u32 handshake_retrans; // on the change to ESTABLISHED
	__u16 family;            // AF_INET or AF_INET6
	__u16 sport;             // host order
	__u16 dport;             // host order
	__u8 oldstate;
	__u8 newstate;           // other types: the socket's state, 0 unknown
	__u8 side;
	__u8 owner_source;
	__u8 pad[2];
	__u32 segs_out;          // RETRANSMIT: tcp_sock.segs_out, sent so far
	__u8 saddr[16];          // IPv4 in the first 4 bytes, rest zero
	__u8 daddr[16];
	char comm[16];           // owner's comm
};
_Static_assert(sizeof(struct event) == 144, "struct event has implicit padding");

// One finished connection (ESTABLISHED was reached, now CLOSE): 160 bytes.
struct conn {
	__u32 type;              // RECORD_CONN
	__u32 pid;
	__u64 ts_ns;             // close time
	__u64 skaddr;
	__u64 born_ns;           // start: when the probe saw it open, else 0
	__u64 cookie;
	__u64 cgroup_id;
	__u64 handshake_us;
	__u64 bytes_sent;        // bytes_acked without SYN and FIN
	__u64 bytes_received;    // bytes_received without FIN
	__u32 segs_out;
	__u32 segs_in;
	__u32 total_retrans;
	__u32 srtt_us;           // smoothed RTT in us (srtt_us >> 3)
	__u32 handshake_retrans;
	__s32 error;             // sk_err at close
	__u16 family;
	__u16 sport;
	__u16 dport;
	__u8 last_state;         // the state it left for CLOSE
	__u8 side;
	__u8 owner_source;
	__u8 pad[7];
	__u8 saddr[16];
	__u8 daddr[16];
	char comm[16];
};
_Static_assert(sizeof(struct conn) == 160, "struct conn has implicit padding");

// Wakes the reader only once this many bytes wait in the ring; 0 keeps the
// kernel's default (wake whenever the reader had caught up, which under load
// is nearly every record). Set from Go before load.
const volatile __u64 wakeup_bytes = 0;

// Set from Go when tcp:tcp_destroy_sock attaches: a socket's entry then
// outlives its CLOSE until the kernel frees the socket, because the
// kernel reports some errors (a refused connect) just after CLOSE.
const volatile __u8 forget_at_destroy = 0;

// The first port of the ephemeral range (ip_local_port_range), set from
// Go: a drop's port in it is the client side's, zeroed in its key.
const volatile __u16 ephemeral_low = 0;

// A process that owns a socket.
struct owner {
	__u64 cgroup_id;
	__u32 tgid;
	__u32 pad;
	char comm[16];
};

enum { OWNER_NONE = 0, OWNER_SOCKET = 1, OWNER_LISTENER = 2 };

// What the probe remembers of a live socket.
struct sock_info {
	__u64 entered_ns;        // when it entered its current state, 0 unseen
	__u64 born_ns;           // when the probe saw it open, 0 unseen
	__u64 handshake_us;
	struct owner owner;
	__u32 handshake_retrans;
	__u8 side;
	__u8 established;        // reached ESTABLISHED: a conn record at CLOSE
	__u8 owner_kind;         // OWNER_*
	__u8 has_base;           // last_retrans is a valid baseline
	__u32 last_retrans;      // tcp_sock.total_retrans at the last look
	__u32 pad;
};

// skaddr -> sock_info. LRU so that sockets whose CLOSE we never see cannot
// fill it. max_entries is set from Go before load.
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 65536);
	__type(key, __u64);
	__type(value, struct sock_info);
} socks SEC(".maps");

// A listening port: its children are owned by the listener's process until
// accepted.
struct listen_key {
	__u32 netns; // network namespace inode number
	__u16 family;
	__u16 port;  // host order
};

struct listen_owner {
	__u64 skaddr; // 0 when seeded from user space
	struct owner owner;
};

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 4096);
	__type(key, struct listen_key);
	__type(value, struct listen_owner);
} listeners SEC(".maps");

// A connection request whose SYN-ACK was retransmitted: when the first
// SYN-ACK left, for the server's handshake time.
struct synack_key {
	__u32 netns;
	__u16 family;
	__u16 sport;
	__u16 dport;
	__u16 pad;
	__u8 saddr[16];
	__u8 daddr[16];
};

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 4096);
	__type(key, struct synack_key);
	__type(value, __u64);
} synacks SEC(".maps");

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

// Dropped TCP packets (skb:kfree_skb), counted in the kernel per key so
// that a storm costs a map update per packet, not a ring-buffer record.
// 48 bytes, no implicit padding.
struct drop_key {
	__u32 reason; // enum skb_drop_reason as this kernel numbers it; 0: none
	__u16 family;
	__u16 lport;  // this host's end, host order
	__u16 rport;  // the remote end
	__u8 ingress; // 1: on its way in
	__u8 pad[5];
	__u8 laddr[16];
	__u8 raddr[16];
};

struct drop_value {
	__u64 count;
	struct owner owner; // tgid 0: unknown
};

// Two maps, swapped by user space at every interval through drop_slot: a
// map-in-map update waits for running programs (synchronize_rcu), so the
// map swapped out is quiet when user space reads and empties it.
struct drop_map {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 8192);
	__type(key, struct drop_key);
	__type(value, struct drop_value);
};

struct drop_map drops_a SEC(".maps");
struct drop_map drops_b SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY_OF_MAPS);
	__uint(max_entries, 1);
	__type(key, __u32);
	__array(values, struct drop_map);
} drop_slot SEC(".maps") = {
	.values = {[0] = &drops_a},
};

// Drops whose key found no room (the active map full), per reason (255:
// 255 and above): totals since load, never reset.
#define DROP_KEYLESS_REASONS 256
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, DROP_KEYLESS_REASONS);
	__type(key, __u32);
	__type(value, __u64);
} drops_keyless SEC(".maps");

// Put the record and key types into BTF for bpf2go -type; in .rodata, so
// they cost no extra map.
const struct event *const unused_event = 0;
const struct conn *const unused_conn = 0;
const struct listen_key *const unused_listen_key = 0;
const struct listen_owner *const unused_listener = 0;
const struct drop_key *const unused_drop_key = 0;
const struct drop_value *const unused_drop_value = 0;

static __always_inline void count(__u32 idx)
{
	__u64 *v = bpf_map_lookup_elem(&counters, &idx);

	if (v)
		*v += 1; // per-CPU slot: no atomics needed
}

static __always_inline void *reserve(__u64 size, __u32 type)
{
	void *r = bpf_ringbuf_reserve(&events, size, 0);

	if (!r)
		count(COUNTER_DROPPED + type);
	return r;
}

// Each wakeup costs the reader an epoll round trip; batch them. The Go
// reader polls with a deadline, so records never wait longer than that.
static __always_inline void submit(void *r, __u32 type)
{
	__u64 flags = 0;

	if (wakeup_bytes > 0)
		flags = bpf_ringbuf_query(&events, BPF_RB_AVAIL_DATA) >= wakeup_bytes ?
				BPF_RB_FORCE_WAKEUP :
				BPF_RB_NO_WAKEUP;
	bpf_ringbuf_submit(r, flags);
	count(COUNTER_SUBMITTED + type);
}

static __always_inline void current_owner(struct owner *o)
{
	o->tgid = bpf_get_current_pid_tgid() >> 32;
	o->pad = 0;
	o->cgroup_id = bpf_get_current_cgroup_id();
	bpf_get_current_comm(o->comm, sizeof(o->comm));
}

// Fills the owner fields of a record: the remembered owner when there is
// one, else the current task (UNKNOWN: whoever the kernel interrupted).
static __always_inline void fill_owner(const struct sock_info *info, __u32 *pid, __u64 *cgroup_id,
				       char *comm, __u8 *source)
{
	__u32 tgid = bpf_get_current_pid_tgid() >> 32;

	if (info && info->owner_kind != OWNER_NONE) {
		*pid = info->owner.tgid;
		*cgroup_id = info->owner.cgroup_id;
		__builtin_memcpy(comm, info->owner.comm, 16);
		if (info->owner_kind == OWNER_LISTENER)
			*source = SRC_LISTENER;
		else
			*source = info->owner.tgid == tgid ? SRC_TASK : SRC_SOCKET;
		return;
	}
	*pid = tgid;
	*cgroup_id = bpf_get_current_cgroup_id();
	bpf_get_current_comm(comm, 16);
	*source = SRC_UNKNOWN;
}

static __always_inline void fill_event(struct event *e, __u32 type, __u64 now, __u64 skaddr,
				       const struct sock_info *info)
{
	__u64 id = bpf_get_current_pid_tgid();

	// Reserved ring memory holds old records: every field is written.
	__builtin_memset(e, 0, sizeof(*e));
	e->type = type;
	e->ts_ns = now;
	e->skaddr = skaddr;
	e->tid = (__u32)id;
	if (info) {
		e->born_ns = info->born_ns;
		e->side = info->side;
	}
	fill_owner(info, &e->pid, &e->cgroup_id, e->comm, &e->owner_source);
}

static __always_inline __u64 sk_cookie(const struct sock *sk)
{
	if (!sk)
		return 0;
	return BPF_CORE_READ(sk, __sk_common.skc_cookie.counter);
}

static __always_inline __u32 sk_netns(const struct sock *sk)
{
	return BPF_CORE_READ(sk, __sk_common.skc_net.net, ns.inum);
}

// Copies the addresses of a tracepoint that carries saddr/daddr (IPv4) and
// saddr_v6/daddr_v6 fields.
#define COPY_ADDRS(dst, ctx, family)                                                     \
	do {                                                                             \
		if ((family) == AF_INET) {                                               \
			bpf_core_read((dst)->saddr, sizeof((ctx)->saddr), &(ctx)->saddr);       \
			bpf_core_read((dst)->daddr, sizeof((ctx)->daddr), &(ctx)->daddr);       \
		} else {                                                                 \
			bpf_core_read((dst)->saddr, sizeof((ctx)->saddr_v6), &(ctx)->saddr_v6); \
			bpf_core_read((dst)->daddr, sizeof((ctx)->daddr_v6), &(ctx)->daddr_v6); \
		}                                                                        \
	} while (0)

// tcp:tcp_retransmit_skb and tcp:tcp_send_reset on older kernels (Debian
// 12's 6.1 checked): both events of one class, tcp_event_sk_skb, a full
// socket's 4-tuple. Newer kernels give each its own record (6.18:
// trace_event_raw_tcp_retransmit_skb adds err; trace_event_raw_tcp_send_reset
// has sockaddrs taken from the segment, sk may be NULL). vmlinux.h (6.18)
// lacks the class, so here is its layout as a CO-RE flavour: the ___6_1
// suffix is ignored when matching kernel types and fields match by name.
// The programs pick a layout with bpf_core_type_exists; the loader poisons
// the other branch's relocations, which the verifier then never reaches.
struct trace_event_raw_tcp_event_sk_skb___6_1 {
	const void *skbaddr;
	const void *skaddr;
	int state;
	__u16 sport;
	__u16 dport;
	__u16 family;
	__u8 saddr[4];
	__u8 daddr[4];
	__u8 saddr_v6[16];
	__u8 daddr_v6[16];
} __attribute__((preserve_access_index));

// What handle_retransmit and handle_send_reset use of either layout. Read
// into one struct first so that everything after the read, and so the
// record, is the same code on every kernel.
struct sk_skb_args {
	__u64 skaddr;
	__u64 skbaddr;
	__s32 state;
	__s32 err;      // tcp_retransmit_skb's err where it has one; else 0,
	                // and the kernel reports only retransmits it sent
	__u16 sport;    // host order
	__u16 dport;
	__u16 family;
	__u16 pad;
	__u8 saddr[16]; // IPv4 in the first 4 bytes, rest zero
	__u8 daddr[16];
};

// The fields that the 6.1 class and 6.18's tcp_retransmit_skb name alike.
#define READ_SK_SKB(a, ctx)                                \
	do {                                               \
		(a)->skaddr = (__u64)(ctx)->skaddr;        \
		(a)->skbaddr = (__u64)(ctx)->skbaddr;      \
		(a)->state = (ctx)->state;                 \
		(a)->sport = (ctx)->sport;                 \
		(a)->dport = (ctx)->dport;                 \
		(a)->family = (ctx)->family;               \
		COPY_ADDRS(a, ctx, (a)->family);           \
	} while (0)

static __always_inline void read_retransmit(void *ctx, struct sk_skb_args *a)
{
	if (bpf_core_type_exists(struct trace_event_raw_tcp_retransmit_skb)) {
		struct trace_event_raw_tcp_retransmit_skb *c = ctx;

		READ_SK_SKB(a, c);
		if (bpf_core_field_exists(c->err))
			a->err = c->err;
	} else {
		struct trace_event_raw_tcp_event_sk_skb___6_1 *c = ctx;

		READ_SK_SKB(a, c);
	}
}

// saddr/daddr of the own layout are a struct sockaddr_in or sockaddr_in6,
// the 4-tuple of the offending segment already turned round: saddr is this
// host.
static __always_inline void read_send_reset(void *ctx, struct sk_skb_args *a)
{
	struct trace_event_raw_tcp_send_reset *c = ctx;
	struct trace_event_raw_tcp_event_sk_skb___6_1 *old = ctx;

	if (!bpf_core_type_exists(struct trace_event_raw_tcp_send_reset)) {
		READ_SK_SKB(a, old);
		return;
	}
	a->skaddr = (__u64)c->skaddr;
	a->skbaddr = (__u64)c->skbaddr;
	a->state = c->state;
	bpf_core_read(&a->family, sizeof(a->family), &c->saddr[0]);
	if (a->family == AF_INET) {
		struct sockaddr_in sa, da;

		bpf_core_read(&sa, sizeof(sa), &c->saddr);
		bpf_core_read(&da, sizeof(da), &c->daddr);
		__builtin_memcpy(a->saddr, &sa.sin_addr, 4);
		__builtin_memcpy(a->daddr, &da.sin_addr, 4);
		a->sport = bpf_ntohs(sa.sin_port);
		a->dport = bpf_ntohs(da.sin_port);
	} else if (a->family == AF_INET6) {
		struct sockaddr_in6 sa, da;

		bpf_core_read(&sa, sizeof(sa), &c->saddr);
		bpf_core_read(&da, sizeof(da), &c->daddr);
		__builtin_memcpy(a->saddr, &sa.sin6_addr, 16);
		__builtin_memcpy(a->daddr, &da.sin6_addr, 16);
		a->sport = bpf_ntohs(sa.sin6_port);
		a->dport = bpf_ntohs(da.sin6_port);
	}
}

static __always_inline struct listen_owner *find_listener(__u32 netns, __u16 family, __u16 port)
{
	struct listen_key k = {.netns = netns, .family = family, .port = port};

	return bpf_map_lookup_elem(&listeners, &k);
}

// Server handshake, on the child's change SYN_RECV -> ESTABLISHED (6.18:
// the child socket exists only once the final ACK arrived). Defined as the
// time from the first SYN-ACK to ESTABLISHED, with the SYN-ACK retransmits
// (tcp_sock.total_retrans, which the kernel copies from the request's
// num_retrans):
//  - no retransmit: srtt_us >> 3, the kernel's first RTT sample, taken from
//    the request's first SYN-ACK send time (snt_synack) to now;
//  - retransmitted: now - snt_synack as read by handle_synack_retransmit;
//  - that entry lost (LRU): total_rto_time in ms (kernels >= 6.7, only when
//    the SYN-ACK timer fired), else 0 (unknown).
static __always_inline void server_handshake(struct sock *sk, struct trace_event_raw_inet_sock_set_state *ctx,
					     __u64 now, __u64 *us, __u32 *retrans)
{
	struct tcp_sock *tp = (void *)sk;
	struct synack_key k = {};
	__u64 *first;

	*retrans = BPF_CORE_READ(tp, total_retrans);
	if (*retrans == 0) {
		*us = BPF_CORE_READ(tp, srtt_us) >> 3;
		return;
	}
	k.netns = sk_netns(sk);
	k.family = ctx->family;
	k.sport = ctx->sport;
	k.dport = ctx->dport;
	COPY_ADDRS(&k, ctx, k.family);
	first = bpf_map_lookup_elem(&synacks, &k);
	if (first) {
		*us = now > *first ? (now - *first) / 1000 : 0;
		if (bpf_map_delete_elem(&synacks, &k) == 0)
			count(COUNTER_SYNACK_DELETE);
		return;
	}
	*us = 0;
	if (bpf_core_field_exists(tp->total_rto_time))
		*us = (__u64)BPF_CORE_READ(tp, total_rto_time) * 1000;
}

// Emits the conn record of a socket that reached ESTABLISHED and now closes.
static __always_inline void emit_conn(struct sock *sk, struct trace_event_raw_inet_sock_set_state *ctx,
				      const struct sock_info *info, __u64 now, int oldstate, int sk_err)
{
	struct tcp_sock *tp = (void *)sk;
	struct conn *c;
	__u64 acked, received;
	__u32 flags_done = 1u << bpf_core_enum_value(enum sock_flags, SOCK_DONE);

	c = reserve(sizeof(*c), RECORD_CONN);
	if (!c)
		return;
	__builtin_memset(c, 0, sizeof(*c));
	c->type = RECORD_CONN;
	c->ts_ns = now;
	c->skaddr = (__u64)sk;
	c->born_ns = info->born_ns;
	c->cookie = sk_cookie(sk);
	c->handshake_us = info->handshake_us;
	c->handshake_retrans = info->handshake_retrans;
	c->side = info->side;
	c->last_state = oldstate;
	c->error = sk_err;
	c->family = ctx->family;
	c->sport = ctx->sport;
	c->dport = ctx->dport;
	COPY_ADDRS(c, ctx, c->family);
	fill_owner(info, &c->pid, &c->cgroup_id, c->comm, &c->owner_source);

	// bytes_acked counts sequence space: the active opener's SYN and an
	// acknowledged FIN are one byte each. bytes_received counts a received
	// FIN (checked on 6.18). Both are taken out so the fields are payload.
	acked = BPF_CORE_READ(tp, bytes_acked);
	if (info->side == SIDE_CLIENT && acked > 0)
		acked--;
	if ((oldstate == S_FIN_WAIT1 || oldstate == S_FIN_WAIT2 || oldstate == S_CLOSING ||
	     oldstate == S_LAST_ACK) &&
	    BPF_CORE_READ(tp, snd_una) == BPF_CORE_READ(tp, write_seq) && acked > 0)
		acked--;
	received = BPF_CORE_READ(tp, bytes_received);
	if ((BPF_CORE_READ(sk, __sk_common.skc_flags) & flags_done) && received > 0)
		received--; // tcp_fin sets SOCK_DONE
	c->bytes_sent = acked;
	c->bytes_received = received;
	c->segs_out = BPF_CORE_READ(tp, segs_out);
	c->segs_in = BPF_CORE_READ(tp, segs_in);
	c->total_retrans = BPF_CORE_READ(tp, total_retrans);
	c->srtt_us = BPF_CORE_READ(tp, srtt_us) >> 3;
	submit(c, RECORD_CONN);
}

static __always_inline void emit_state(struct trace_event_raw_inet_sock_set_state *ctx, __u32 type,
				       __u64 now, struct sock *sk, const struct sock_info *info,
				       __u64 duration_us, int sk_err)
{
	struct event *e = reserve(sizeof(*e), type);

	if (!e)
		return;
	fill_event(e, type, now, (__u64)sk, info);
	e->cookie = sk_cookie(sk);
	e->state_duration_us = duration_us;
	e->error = sk_err;
	e->family = ctx->family;
	e->sport = ctx->sport;
	e->dport = ctx->dport;
	e->oldstate = ctx->oldstate;
	e->newstate = ctx->newstate;
	if (info && ctx->newstate == S_ESTABLISHED) {
		e->handshake_us = info->handshake_us;
		e->handshake_retrans = info->handshake_retrans;
	}
	COPY_ADDRS(e, ctx, e->family);
	submit(e, type);
}

SEC("tracepoint/sock/inet_sock_set_state")
int handle_set_state(struct trace_event_raw_inet_sock_set_state *ctx)
{
	__u16 family = ctx->family;
	struct sock *sk = (void *)ctx->skaddr;
	__u64 skaddr = (__u64)sk;
	int oldstate = ctx->oldstate;
	int newstate = ctx->newstate;
	__u64 now = bpf_ktime_get_ns();
	__u64 duration_us = 0;
	struct sock_info *info, si = {};
	bool opens, have = false;
	int sk_err = 0;

	if (ctx->protocol != IPPROTO_TCP)
		return 0;
	if (family != AF_INET && family != AF_INET6)
		return 0;

	// Book-keeping first: it must happen even when the ring is full, or the
	// next duration of this socket would be wrong.
	opens = (oldstate == S_CLOSE && (newstate == S_SYN_SENT || newstate == S_LISTEN)) ||
		(oldstate == S_LISTEN && newstate == S_SYN_RECV);
	info = bpf_map_lookup_elem(&socks, &skaddr);
	if (info && !opens) {
		si = *info; // a copy: the entry may be deleted or reused below
		have = true;
		if (si.entered_ns && now > si.entered_ns)
			duration_us = (now - si.entered_ns) / 1000;
	}
	if (opens) {
		have = true;
		si.born_ns = now;
		if (newstate == S_SYN_SENT) {
			si.side = SIDE_CLIENT;
			si.has_base = 1; // total_retrans starts at 0
		}
		if (newstate == S_SYN_RECV) {
			// A child of a listener: owned by the listener's process until
			// accept() hands it over.
			struct listen_owner *l = find_listener(sk_netns(sk), family, ctx->sport);

			si.side = SIDE_SERVER;
			if (l) {
				si.owner = l->owner;
				si.owner_kind = OWNER_LISTENER;
			}
		}
	}
	if (newstate == S_SYN_SENT && si.side == SIDE_UNKNOWN)
		si.side = SIDE_CLIENT;
	if (newstate == S_SYN_RECV && si.side == SIDE_UNKNOWN)
		si.side = SIDE_SERVER;

	// Transitions that only a process causes (connect, listen, close,
	// shutdown): the current task owns the socket.
	if ((oldstate == S_CLOSE && (newstate == S_SYN_SENT || newstate == S_LISTEN)) ||
	    (oldstate == S_ESTABLISHED && newstate == S_FIN_WAIT1) ||
	    (oldstate == S_CLOSE_WAIT && newstate == S_LAST_ACK)) {
		current_owner(&si.owner);
		si.owner_kind = OWNER_SOCKET;
		have = true;
	}

	if (newstate == S_ESTABLISHED) {
		have = true;
		si.established = 1;
		if (oldstate == S_SYN_SENT) {
			// Client: time in SYN_SENT, and the SYNs sent again meanwhile.
			si.handshake_us = duration_us;
			si.handshake_retrans = BPF_CORE_READ((struct tcp_sock *)sk, total_retrans);
		} else if (oldstate == S_SYN_RECV) {
			server_handshake(sk, ctx, now, &si.handshake_us, &si.handshake_retrans);
		}
		// Retransmits from here on are the growth of total_retrans.
		si.last_retrans = BPF_CORE_READ((struct tcp_sock *)sk, total_retrans);
		si.has_base = 1;
	}

	if (newstate == S_LISTEN) {
		struct listen_key k = {.netns = sk_netns(sk), .family = family, .port = ctx->sport};
		struct listen_owner l = {.skaddr = skaddr, .owner = si.owner};

		if (bpf_map_update_elem(&listeners, &k, &l, BPF_NOEXIST) == 0)
			count(COUNTER_LISTENER_INSERT);
		else
			bpf_map_update_elem(&listeners, &k, &l, BPF_ANY);
	}

	if (newstate == S_CLOSE) {
		sk_err = BPF_CORE_READ(sk, sk_err);
		if (info && forget_at_destroy) {
			// Kept for events that follow; no second conn record.
			info->entered_ns = now;
			info->established = 0;
		} else if (info && bpf_map_delete_elem(&socks, &skaddr) == 0) {
			count(COUNTER_SOCK_DELETE);
		}
		if (oldstate == S_LISTEN) {
			struct listen_key k = {.netns = sk_netns(sk), .family = family, .port = ctx->sport};
			struct listen_owner *l = bpf_map_lookup_elem(&listeners, &k);

			// Only this socket's entry (SO_REUSEPORT siblings keep theirs), or
			// a seeded one, which is this listener as far as we know.
			if (l && (l->skaddr == skaddr || l->skaddr == 0) &&
			    bpf_map_delete_elem(&listeners, &k) == 0)
				count(COUNTER_LISTENER_DELETE);
		}
	} else if (have) {
		si.entered_ns = now;
		if (info && !opens) {
			*info = si;
		} else if (bpf_map_update_elem(&socks, &skaddr, &si, BPF_NOEXIST) == 0) {
			count(COUNTER_SOCK_INSERT);
		} else {
			bpf_map_update_elem(&socks, &skaddr, &si, BPF_ANY);
		}
	}

	emit_state(ctx, RECORD_STATE_CHANGE, now, sk, have ? &si : 0, duration_us, sk_err);
	if (newstate == S_CLOSE) {
		// A connect that never got through; not a listener closing and
		// not a reset of an established connection.
		if (oldstate == S_SYN_SENT)
			emit_state(ctx, RECORD_CONNECT_FAILED, now, sk, have ? &si : 0, duration_us, sk_err);
		if (have && si.established)
			emit_conn(sk, ctx, &si, now, oldstate, sk_err);
	}
	return 0;
}

// The kernel counts a retransmit in TcpRetransSegs just before handing it
// to tcp_transmit_skb; since 6.13 this tracepoint also reports attempts
// that gave up earlier (err set). Those early exits return these errors
// (-EBUSY: the original is still in a host queue); an error from the
// transmit itself (e.g. a netfilter drop, -EPERM) was counted and is
// reported.
static __always_inline bool retransmit_counted(int err)
{
	return err == 0 || (err != -EBUSY && err != -EINVAL && err != -ENOMEM && err != -EAGAIN &&
			    err != -EHOSTUNREACH);
}

// segments is what the kernel added to TcpRetransSegs for this attempt. It
// adds the same to tcp_sock.total_retrans just before transmitting, so for
// a socket with a baseline it is the growth of total_retrans since the
// last look: exact whatever err says (on 6.18 some attempts reported with
// -EBUSY were counted, others not). Without a baseline (a socket older
// than the probe), the skb's GSO segment count, and err decides.
SEC("tracepoint/tcp/tcp_retransmit_skb")
int handle_retransmit(void *ctx)
{
	__u64 now = bpf_ktime_get_ns();
	struct sk_skb_args a = {};
	struct tcp_sock *tp;
	struct tcp_skb_cb *cb;
	struct sock_info *info;
	struct event *e;
	__u32 segs, total;

	read_retransmit(ctx, &a);
	if (a.family != AF_INET && a.family != AF_INET6)
		return 0;
	tp = (void *)a.skaddr;
	total = BPF_CORE_READ(tp, total_retrans);
	info = bpf_map_lookup_elem(&socks, &a.skaddr);
	if (info && info->has_base) {
		segs = total - info->last_retrans;
		info->last_retrans = total;
	} else {
		segs = 0;
		if (retransmit_counted(a.err)) {
			// tcp_skb_pcount(): a GSO packet is this many segments.
			cb = (void *)a.skbaddr + bpf_core_field_offset(struct sk_buff, cb);
			segs = BPF_CORE_READ(cb, tcp_gso_segs);
			if (segs == 0)
				segs = 1;
		}
		if (info) {
			info->last_retrans = total;
			info->has_base = 1;
		}
	}
	if (segs == 0) {
		count(COUNTER_RETRANSMIT_FAILED);
		return 0;
	}

	e = reserve(sizeof(*e), RECORD_RETRANSMIT);
	if (!e)
		return 0;
	fill_event(e, RECORD_RETRANSMIT, now, a.skaddr, info);
	e->cookie = sk_cookie((void *)a.skaddr);
	e->segments = segs;
	// With the previous retransmit's, what this connection sent meanwhile:
	// the detectors' retransmit ratio of a connection still open.
	e->segs_out = BPF_CORE_READ(tp, segs_out);
	e->family = a.family;
	e->sport = a.sport;
	e->dport = a.dport;
	e->newstate = a.state;
	__builtin_memcpy(e->saddr, a.saddr, 16);
	__builtin_memcpy(e->daddr, a.daddr, 16);
	submit(e, RECORD_RETRANSMIT);
	return 0;
}

// sk is the listener, req the request socket the SYN-ACK belongs to. The
// event is about the request: its address is the skaddr (no other event
// has it), its owner the listener's.
SEC("tracepoint/tcp/tcp_retransmit_synack")
int handle_synack_retransmit(struct trace_event_raw_tcp_retransmit_synack *ctx)
{
	__u64 now = bpf_ktime_get_ns();
	struct sock *lsk = (void *)ctx->skaddr;
	struct tcp_request_sock *req = (void *)ctx->req;
	__u16 family = ctx->family;
	struct synack_key k = {};
	struct sock_info *info, li = {};
	struct listen_owner *l;
	struct event *e;
	__u64 first;

	if (family != AF_INET && family != AF_INET6)
		return 0;

	// Remember when the first SYN-ACK left (tcp_clock_us, the same
	// monotonic clock as bpf_ktime_get_ns) for the server's handshake time.
	k.netns = sk_netns(lsk);
	k.family = family;
	k.sport = ctx->sport;
	k.dport = ctx->dport;
	COPY_ADDRS(&k, ctx, family);
	first = BPF_CORE_READ(req, snt_synack) * 1000;
	if (first == 0 || first > now)
		first = now;
	if (bpf_map_update_elem(&synacks, &k, &first, BPF_NOEXIST) == 0)
		count(COUNTER_SYNACK_INSERT);

	// Owner: the listener's, from its socket entry or the port map.
	info = bpf_map_lookup_elem(&socks, &(__u64){(__u64)lsk});
	if (info && info->owner_kind != OWNER_NONE) {
		li.owner = info->owner;
		li.owner_kind = OWNER_LISTENER;
	} else {
		l = find_listener(k.netns, family, ctx->sport);
		if (l) {
			li.owner = l->owner;
			li.owner_kind = OWNER_LISTENER;
		}
	}
	li.side = SIDE_SERVER;

	e = reserve(sizeof(*e), RECORD_SYNACK_RETRANSMIT);
	if (!e)
		return 0;
	fill_event(e, RECORD_SYNACK_RETRANSMIT, now, (__u64)req, &li);
	e->cookie = sk_cookie((void *)req);
	e->segments = 1;
	e->family = family;
	e->sport = ctx->sport;
	e->dport = ctx->dport;
	e->newstate = S_NEW_SYN_RECV;
	COPY_ADDRS(e, ctx, family);
	submit(e, RECORD_SYNACK_RETRANSMIT);
	return 0;
}

// sk may be NULL (6.18: no socket for the segment, e.g. a closed port) or
// not a full socket; then the addresses are the segment's (read_send_reset).
// 6.1 reports only resets of full sockets.
SEC("tracepoint/tcp/tcp_send_reset")
int handle_send_reset(void *ctx)
{
	__u64 now = bpf_ktime_get_ns();
	struct sk_skb_args a = {};
	struct sock_info *info = 0;
	struct event *e;

	read_send_reset(ctx, &a);
	if (a.family != AF_INET && a.family != AF_INET6)
		return 0;
	if (a.skaddr)
		info = bpf_map_lookup_elem(&socks, &a.skaddr);
	e = reserve(sizeof(*e), RECORD_RESET_SENT);
	if (!e)
		return 0;
	fill_event(e, RECORD_RESET_SENT, now, a.skaddr, info);
	e->cookie = sk_cookie((void *)a.skaddr);
	e->family = a.family;
	e->newstate = a.state;
	e->sport = a.sport;
	e->dport = a.dport;
	__builtin_memcpy(e->saddr, a.saddr, 16);
	__builtin_memcpy(e->daddr, a.daddr, 16);
	submit(e, RECORD_RESET_SENT);
	return 0;
}

SEC("tracepoint/tcp/tcp_receive_reset")
int handle_receive_reset(struct trace_event_raw_tcp_event_sk *ctx)
{
	__u64 now = bpf_ktime_get_ns();
	__u64 skaddr = (__u64)ctx->skaddr;
	struct sock *sk = (void *)skaddr;
	struct sock_info *info;
	struct event *e;
	__u16 family = ctx->family;

	if (family != AF_INET && family != AF_INET6)
		return 0;
	info = bpf_map_lookup_elem(&socks, &skaddr);
	e = reserve(sizeof(*e), RECORD_RESET_RECEIVED);
	if (!e)
		return 0;
	fill_event(e, RECORD_RESET_RECEIVED, now, skaddr, info);
	e->cookie = sk_cookie(sk);
	e->family = family;
	e->sport = ctx->sport;
	e->dport = ctx->dport;
	e->newstate = BPF_CORE_READ(sk, __sk_common.skc_state);
	COPY_ADDRS(e, ctx, family);
	submit(e, RECORD_RESET_RECEIVED);
	return 0;
}

SEC("tracepoint/tcp/tcp_destroy_sock")
int handle_destroy(struct trace_event_raw_tcp_event_sk *ctx)
{
	__u64 skaddr = (__u64)ctx->skaddr;

	if (bpf_map_delete_elem(&socks, &skaddr) == 0)
		count(COUNTER_SOCK_DELETE);
	return 0;
}

// A raw tracepoint: the sock:inet_sk_error_report record carries no socket
// address, and the owner, sock_id and cookie need the socket. Its one
// argument is the struct sock; fields are CO-RE reads of it.
SEC("raw_tracepoint/inet_sk_error_report")
int handle_error_report(struct bpf_raw_tracepoint_args *ctx)
{
	__u64 now = bpf_ktime_get_ns();
	struct sock *sk = (void *)ctx->args[0];
	__u64 skaddr = (__u64)sk;
	struct sock_info *info;
	struct event *e;
	__u16 family;

	if (BPF_CORE_READ(sk, sk_protocol) != IPPROTO_TCP)
		return 0;
	family = BPF_CORE_READ(sk, __sk_common.skc_family);
	if (family != AF_INET && family != AF_INET6)
		return 0;
	info = bpf_map_lookup_elem(&socks, &skaddr);
	e = reserve(sizeof(*e), RECORD_SOCKET_ERROR);
	if (!e)
		return 0;
	fill_event(e, RECORD_SOCKET_ERROR, now, skaddr, info);
	e->cookie = sk_cookie(sk);
	e->error = BPF_CORE_READ(sk, sk_err);
	e->family = family;
	e->sport = BPF_CORE_READ(sk, __sk_common.skc_num);
	e->dport = bpf_ntohs(BPF_CORE_READ(sk, __sk_common.skc_dport));
	e->newstate = BPF_CORE_READ(sk, __sk_common.skc_state);
	if (family == AF_INET) {
		bpf_core_read(e->saddr, 4, &sk->__sk_common.skc_rcv_saddr);
		bpf_core_read(e->daddr, 4, &sk->__sk_common.skc_daddr);
	} else {
		bpf_core_read(e->saddr, 16, &sk->__sk_common.skc_v6_rcv_saddr);
		bpf_core_read(e->daddr, 16, &sk->__sk_common.skc_v6_daddr);
	}
	submit(e, RECORD_SOCKET_ERROR);
	return 0;
}

// Remembers the current task as the owner of sk; cheap when it already is.
static __always_inline void claim(struct sock *sk, bool accepted)
{
	__u64 skaddr = (__u64)sk;
	__u32 tgid = bpf_get_current_pid_tgid() >> 32;
	struct sock_info *info = bpf_map_lookup_elem(&socks, &skaddr);
	struct sock_info fresh = {};

	if (info) {
		if (info->owner_kind == OWNER_SOCKET && info->owner.tgid == tgid)
			return;
		current_owner(&info->owner);
		info->owner_kind = OWNER_SOCKET;
		if (accepted && info->side == SIDE_UNKNOWN)
			info->side = SIDE_SERVER;
		return;
	}
	// Older than the probe (or evicted): remember the owner from now on.
	current_owner(&fresh.owner);
	fresh.owner_kind = OWNER_SOCKET;
	if (accepted)
		fresh.side = SIDE_SERVER;
	if (bpf_map_update_elem(&socks, &skaddr, &fresh, BPF_NOEXIST) == 0)
		count(COUNTER_SOCK_INSERT);
}

static __always_inline int on_msg(struct trace_event_raw_sock_msg_length *ctx)
{
	if (ctx->protocol != IPPROTO_TCP || (ctx->family != AF_INET && ctx->family != AF_INET6))
		return 0;
	claim(ctx->sk, false);
	return 0;
}

SEC("tracepoint/sock/sock_send_length")
int handle_send(struct trace_event_raw_sock_msg_length *ctx)
{
	return on_msg(ctx);
}

SEC("tracepoint/sock/sock_recv_length")
int handle_recv(struct trace_event_raw_sock_msg_length *ctx)
{
	return on_msg(ctx);
}

// accept() returned fd: current->files->fdt->fd[fd]->private_data is the
// struct socket of the accepted connection.
static __always_inline int on_accept(long fd)
{
	struct task_struct *task = (void *)bpf_get_current_task();
	struct fdtable *fdt;
	struct file **fds, *file;
	struct socket *sock;
	struct sock *sk;

	if (fd < 0)
		return 0;
	fdt = BPF_CORE_READ(task, files, fdt);
	if (!fdt || fd >= BPF_CORE_READ(fdt, max_fds))
		goto unresolved;
	fds = BPF_CORE_READ(fdt, fd);
	if (bpf_probe_read_kernel(&file, sizeof(file), &fds[fd]) || !file)
		goto unresolved;
	sock = BPF_CORE_READ(file, private_data);
	if (!sock)
		goto unresolved;
	sk = BPF_CORE_READ(sock, sk);
	if (!sk)
		goto unresolved;
	if (BPF_CORE_READ(sk, sk_protocol) != IPPROTO_TCP)
		return 0; // accept4 on a unix socket, say
	claim(sk, true);
	return 0;
unresolved:
	count(COUNTER_ACCEPT_UNRESOLVED);
	return 0;
}

SEC("tracepoint/syscalls/sys_exit_accept4")
int handle_accept4(struct trace_event_raw_sys_exit *ctx)
{
	return on_accept(ctx->ret);
}

SEC("tracepoint/syscalls/sys_exit_accept")
int handle_accept(struct trace_event_raw_sys_exit *ctx)
{
	return on_accept(ctx->ret);
}

// Reads the dropped packet's addresses and ports into k, this host's end
// first once the direction is known (swap). False for anything but a TCP
// segment with its IP header in place (a packet dropped before the IP
// layer parsed it, a later fragment).
static __always_inline bool read_tcp_packet(struct sk_buff *skb, __u16 proto, struct drop_key *k,
					    __u16 *sport, __u16 *dport, __u8 saddr[16], __u8 daddr[16])
{
	unsigned char *head = BPF_CORE_READ(skb, head);
	__u16 nh = BPF_CORE_READ(skb, network_header);
	__u32 thoff;
	__be16 ports[2];

	if (nh == (__u16)~0U)
		return false;
	if (proto == ETH_P_IP) {
		struct iphdr ip;

		if (bpf_probe_read_kernel(&ip, sizeof(ip), head + nh))
			return false;
		if (ip.version != 4 || ip.protocol != IPPROTO_TCP || (bpf_ntohs(ip.frag_off) & 0x1fff))
			return false;
		k->family = AF_INET;
		__builtin_memcpy(saddr, &ip.saddr, 4);
		__builtin_memcpy(daddr, &ip.daddr, 4);
		thoff = nh + ip.ihl * 4;
	} else {
		struct ipv6hdr ip6;

		if (bpf_probe_read_kernel(&ip6, sizeof(ip6), head + nh))
			return false;
		// Extension headers are not followed: TCP right after the header.
		if (ip6.version != 6 || ip6.nexthdr != IPPROTO_TCP)
			return false;
		k->family = AF_INET6;
		__builtin_memcpy(saddr, &ip6.saddr, 16);
		__builtin_memcpy(daddr, &ip6.daddr, 16);
		thoff = nh + sizeof(ip6);
	}
	if (bpf_probe_read_kernel(ports, sizeof(ports), head + thoff))
		return false;
	*sport = bpf_ntohs(ports[0]);
	*dport = bpf_ntohs(ports[1]);
	return true;
}

static __always_inline void count_keyless(__u32 reason)
{
	__u32 idx = reason < DROP_KEYLESS_REASONS ? reason : DROP_KEYLESS_REASONS - 1;
	__u64 *v = bpf_map_lookup_elem(&drops_keyless, &idx);

	if (v)
		*v += 1;
	count(COUNTER_DROP_KEYLESS);
}

// The owner of a dropped packet's socket: the one the probe remembers for
// the socket, else, on the way in, the listener of its port. Never the
// current task: drops happen in softirq, on behalf of whoever.
static __always_inline void drop_owner(struct sock *sk, struct sk_buff *skb, struct drop_key *k,
				       struct owner *o)
{
	__u32 netns;
	__u8 state = 0;

	if (sk) {
		state = BPF_CORE_READ(sk, __sk_common.skc_state);
		if (state != S_TIME_WAIT && state != S_NEW_SYN_RECV) {
			__u64 skaddr = (__u64)sk;
			struct sock_info *info = bpf_map_lookup_elem(&socks, &skaddr);

			if (info && info->owner_kind != OWNER_NONE) {
				*o = info->owner;
				return;
			}
		}
		netns = sk_netns(sk);
	} else {
		netns = BPF_CORE_READ(skb, dev, nd_net.net, ns.inum);
	}
	if (k->ingress) {
		struct listen_owner *l = find_listener(netns, k->family, k->lport);

		if (l)
			*o = l->owner;
	}
}

SEC("tracepoint/skb/kfree_skb")
int handle_kfree_skb(struct trace_event_raw_kfree_skb *ctx)
{
	struct sk_buff *skb = ctx->skbaddr;
	__u16 proto = ctx->protocol;
	struct drop_key k = {};
	struct drop_value *v, fresh = {};
	struct sock *sk = NULL;
	__u8 saddr[16] = {}, daddr[16] = {};
	__u16 sport, dport;
	__u32 zero = 0;
	void *m;
	int err;

	if (proto != ETH_P_IP && proto != ETH_P_IPV6)
		return 0;
	if (!read_tcp_packet(skb, proto, &k, &sport, &dport, saddr, daddr))
		return 0;
	if (bpf_core_field_exists(ctx->reason))
		k.reason = ctx->reason;
	// The receive path names its socket (rx_sk, 6.12+); elsewhere skb->sk
	// is the sender's socket on the way out, and on the way in nothing or
	// the receiver's (early demux), told apart by the local port.
	if (bpf_core_field_exists(ctx->rx_sk))
		sk = ctx->rx_sk;
	if (sk) {
		k.ingress = 1;
	} else {
		sk = BPF_CORE_READ(skb, sk);
		k.ingress = !sk || BPF_CORE_READ(sk, __sk_common.skc_num) == dport;
	}
	if (k.ingress) {
		k.lport = dport;
		k.rport = sport;
		__builtin_memcpy(k.laddr, daddr, 16);
		__builtin_memcpy(k.raddr, saddr, 16);
	} else {
		k.lport = sport;
		k.rport = dport;
		__builtin_memcpy(k.laddr, saddr, 16);
		__builtin_memcpy(k.raddr, daddr, 16);
	}
	count(COUNTER_DROP_PACKETS);
	// One key per service, not per connection: the client's port goes.
	// This host serves when it listens on the local port; else the local
	// port is its own client's when it is an ephemeral one.
	{
		__u32 netns = sk ? sk_netns(sk) : BPF_CORE_READ(skb, dev, nd_net.net, ns.inum);

		if (find_listener(netns, k.family, k.lport))
			k.rport = 0;
		else if (ephemeral_low && k.lport >= ephemeral_low)
			k.lport = 0;
	}

	m = bpf_map_lookup_elem(&drop_slot, &zero);
	if (!m) {
		count_keyless(k.reason);
		return 0;
	}
	v = bpf_map_lookup_elem(m, &k);
	if (!v) {
		drop_owner(sk, skb, &k, &fresh.owner);
		err = bpf_map_update_elem(m, &k, &fresh, BPF_NOEXIST);
		if (err && err != -EEXIST) {
			count_keyless(k.reason);
			return 0;
		}
		v = bpf_map_lookup_elem(m, &k);
		if (!v) {
			count_keyless(k.reason);
			return 0;
		}
	}
	__sync_fetch_and_add(&v->count, 1);
	return 0;
}
