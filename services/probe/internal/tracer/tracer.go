package tracer

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/link"
	"github.com/cilium/ebpf/ringbuf"
	"github.com/cilium/ebpf/rlimit"
)

// pollInterval bounds how long a record may wait in the ring buffer: the
// kernel side skips most wakeups (see wakeup_bytes in tcpstate.bpf.c), so
// the reader also wakes itself this often.
const pollInterval = 50 * time.Millisecond

// hook is one kernel tracepoint and the program that handles it.
type hook struct {
	group, name string
	prog        string
	raw         bool // raw tracepoint: the handler needs the struct sock argument
	required    bool // without it the tracer is useless: Open fails
}

// hooks lists every attachment, in attach order: owners are remembered
// (send/recv/accept) before the events that report them are attached.
var hooks = []hook{
	{group: "sock", name: "sock_send_length", prog: tcpstateProgHandleSend},
	{group: "sock", name: "sock_recv_length", prog: tcpstateProgHandleRecv},
	{group: "syscalls", name: "sys_exit_accept4", prog: tcpstateProgHandleAccept4},
	{group: "syscalls", name: "sys_exit_accept", prog: tcpstateProgHandleAccept},
	{group: "sock", name: "inet_sock_set_state", prog: tcpstateProgHandleSetState, required: true},
	{group: "tcp", name: "tcp_retransmit_skb", prog: tcpstateProgHandleRetransmit},
	{group: "tcp", name: "tcp_retransmit_synack", prog: tcpstateProgHandleSynackRetransmit},
	{group: "tcp", name: "tcp_send_reset", prog: tcpstateProgHandleSendReset},
	{group: "tcp", name: "tcp_receive_reset", prog: tcpstateProgHandleReceiveReset},
	{group: "sock", name: "inet_sk_error_report", prog: tcpstateProgHandleErrorReport, raw: true},
	// Frees socket entries; without it they are freed at CLOSE, and
	// SOCKET_ERROR events raised after CLOSE lose their socket's owner.
	{group: "tcp", name: "tcp_destroy_sock", prog: tcpstateProgHandleDestroy},
	// Dropped TCP packets, counted in maps (Drops), not in the ring.
	{group: "skb", name: "kfree_skb", prog: tcpstateProgHandleKfreeSkb},
}

// Skipped is a tracepoint the tracer could not use on this kernel; the
// others work without it.
type Skipped struct {
	Tracepoint string // "group:name"
	Err        error  // wraps os.ErrNotExist when the kernel lacks it
}

func (s Skipped) String() string { return s.Tracepoint + ": " + s.Err.Error() }

// Tracer owns the loaded programs, their links and the ring-buffer reader.
// Read may be called once; Close releases everything.
type Tracer struct {
	maps    *ebpf.Collection
	progs   []*ebpf.Program
	tps     []string // progs[i]'s tracepoint, "group:name"
	links   []link.Link
	skipped []Skipped
	reader  *ringbuf.Reader
	netns   uint32 // the probe's own network namespace (SeedListener)

	listenerSeeds  atomic.Uint64 // new listener entries from SeedListener
	drops          drops
	dropReasonsErr error

	detachOnce sync.Once
	detachErr  error
	detached   atomic.Bool
	reading    atomic.Bool
}

// Open loads the programs with cfg's map sizes and attaches each to its
// tracepoint. A tracepoint this kernel lacks, or whose program it refuses,
// is skipped (see Skipped) unless it is sock:inet_sock_set_state. It needs
// root or CAP_BPF, CAP_PERFMON, CAP_DAC_READ_SEARCH (tracefs is root's, mode
// 0700) and, when tracefs must be mounted, CAP_SYS_ADMIN (package caps).
func Open(cfg Config) (*Tracer, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	cfg = cfg.withDefaults()
	return open(cfg, wakeupBytes(cfg.RingBufferBytes))
}

// open is Open with the wakeup threshold as a parameter, for measuring.
func open(cfg Config, wakeup uint64) (_ *Tracer, err error) {
	if err := rlimit.RemoveMemlock(); err != nil {
		return nil, fmt.Errorf("tracer: remove memlock rlimit: %w%s", err, rootHint(err))
	}
	spec, err := loadTcpstate()
	if err != nil {
		return nil, fmt.Errorf("tracer: load embedded program: %w", err)
	}
	spec.Maps[tcpstateMapEvents].MaxEntries = uint32(cfg.RingBufferBytes)
	spec.Maps[tcpstateMapSocks].MaxEntries = uint32(cfg.SocketMapEntries)
	spec.Maps[tcpstateMapListeners].MaxEntries = uint32(cfg.ListenerMapEntries)
	spec.Maps[tcpstateMapSynacks].MaxEntries = uint32(cfg.SynackMapEntries)
	for _, m := range []string{tcpstateMapDropsA, tcpstateMapDropsB} {
		spec.Maps[m].MaxEntries = uint32(cfg.DropMapEntries)
	}
	spec.Maps[tcpstateMapDropSlot].InnerMap.MaxEntries = uint32(cfg.DropMapEntries)
	if err := spec.Variables[tcpstateVarWakeupBytes].Set(wakeup); err != nil {
		return nil, fmt.Errorf("tracer: set wakeup_bytes: %w", err)
	}
	if err := spec.Variables[tcpstateVarEphemeralLow].Set(ephemeralLow()); err != nil {
		return nil, fmt.Errorf("tracer: set ephemeral_low: %w", err)
	}
	netns, err := selfNetns()
	if err != nil {
		return nil, err
	}
	tracefs, err := ensureTracefs()
	if err != nil {
		return nil, err
	}

	_, err = os.Stat(filepath.Join(tracefs, "events", "tcp", "tcp_destroy_sock"))
	if err := spec.Variables[tcpstateVarForgetAtDestroy].Set(err == nil); err != nil {
		return nil, fmt.Errorf("tracer: set forget_at_destroy: %w", err)
	}

	t := &Tracer{netns: netns}
	defer func() {
		if err != nil {
			t.closeAll()
		}
	}()
	// Maps first, shared by every program; each program then loads on its
	// own so that one the kernel refuses costs only its own signal.
	mapsOnly := spec.Copy()
	mapsOnly.Programs = nil
	t.maps, err = ebpf.NewCollection(mapsOnly)
	if err != nil {
		return nil, fmt.Errorf("tracer: create eBPF maps: %w%s", err, rootHint(err))
	}
	for _, h := range hooks {
		if err := t.attach(spec, tracefs, h); err != nil {
			tp := h.group + ":" + h.name
			if h.required {
				return nil, fmt.Errorf("tracer: %s: %w%s", tp, err, rootHint(err))
			}
			t.skipped = append(t.skipped, Skipped{Tracepoint: tp, Err: err})
		}
	}
	if t.attached("skb:kfree_skb") {
		d := &t.drops
		d.maps = [2]*ebpf.Map{t.maps.Maps[tcpstateMapDropsA], t.maps.Maps[tcpstateMapDropsB]}
		d.slot = t.maps.Maps[tcpstateMapDropSlot]
		d.keyless = t.maps.Maps[tcpstateMapDropsKeyless]
		d.keylessSeen = make([]uint64, d.keyless.MaxEntries())
		// Without BTF names reasons are numbers (REASON_<n>): still counted.
		t.drops.reasons, t.dropReasonsErr = KernelDropReasons()
	}
	t.reader, err = ringbuf.NewReader(t.maps.Maps[tcpstateMapEvents])
	if err != nil {
		return nil, fmt.Errorf("tracer: open ring buffer reader: %w", err)
	}
	return t, nil
}

// attach loads h's program against the shared maps and links it.
func (t *Tracer) attach(spec *ebpf.CollectionSpec, tracefs string, h hook) error {
	if _, err := os.Stat(filepath.Join(tracefs, "events", h.group, h.name)); err != nil {
		return fmt.Errorf("not in this kernel: %w", err)
	}
	one := spec.Copy()
	one.Programs = map[string]*ebpf.ProgramSpec{h.prog: spec.Programs[h.prog]}
	coll, err := ebpf.NewCollectionWithOptions(one, ebpf.CollectionOptions{MapReplacements: t.maps.Maps})
	if err != nil {
		var verr *ebpf.VerifierError
		if errors.As(err, &verr) {
			return fmt.Errorf("kernel verifier rejected %s: %+v", h.prog, verr)
		}
		return fmt.Errorf("load %s: %w", h.prog, err)
	}
	prog := coll.DetachProgram(h.prog)
	coll.Close() // its maps are clones of t.maps
	t.progs = append(t.progs, prog)
	t.tps = append(t.tps, h.group+":"+h.name)
	var l link.Link
	if h.raw {
		l, err = link.AttachRawTracepoint(link.RawTracepointOptions{Name: h.name, Program: prog})
	} else {
		l, err = link.Tracepoint(h.group, h.name, prog, nil)
	}
	if err != nil {
		return fmt.Errorf("attach: %w", err)
	}
	t.links = append(t.links, l)
	return nil
}

// attached reports whether the program of tracepoint tp ("group:name")
// was linked.
func (t *Tracer) attached(tp string) bool {
	for _, s := range t.skipped {
		if s.Tracepoint == tp {
			return false
		}
	}
	return true
}

// DropReasonsErr is why the drop reasons could not be named from the
// kernel's BTF (they are then REASON_<n>); nil when they could.
func (t *Tracer) DropReasonsErr() error { return t.dropReasonsErr }

// Skipped lists the tracepoints Open could not use, for the caller to log
// once; their signals are missing from the stream.
func (t *Tracer) Skipped() []Skipped { return t.skipped }

// wakeupBytes is how much data must wait in the ring before the program
// wakes the reader: 1/16 of the ring keeps wakeups rare under load while
// leaving ample room before it fills.
func wakeupBytes(ringBytes int) uint64 { return uint64(ringBytes / 16) }

// ephemeralLow is the first port of this namespace's ephemeral range; 0
// (no port is taken for a client's) when it cannot be read.
func ephemeralLow() uint16 {
	b, err := os.ReadFile("/proc/sys/net/ipv4/ip_local_port_range")
	if err != nil {
		return 0
	}
	f := strings.Fields(string(b))
	if len(f) != 2 {
		return 0
	}
	v, err := strconv.ParseUint(f[0], 10, 16)
	if err != nil {
		return 0
	}
	return uint16(v)
}

func selfNetns() (uint32, error) {
	fi, err := os.Stat("/proc/self/ns/net")
	if err != nil {
		return 0, fmt.Errorf("tracer: own network namespace: %w", err)
	}
	st, ok := fi.Sys().(*syscall.Stat_t)
	if !ok {
		return 0, errors.New("tracer: own network namespace: no inode number")
	}
	return uint32(st.Ino), nil
}

func rootHint(err error) string {
	if errors.Is(err, os.ErrPermission) {
		return " (not permitted: run as root, or with CAP_BPF, CAP_PERFMON, CAP_DAC_READ_SEARCH and CAP_SYS_PTRACE; README \"Running the probe without root\")"
	}
	return ""
}

// Read calls fn with every raw record (see Decoder.DecodeRecord) until ctx
// is done. fn's slice is only valid during the call. When ctx is done it
// detaches the tracepoints, hands fn whatever is left in the ring buffer and
// returns nil; it also returns nil once Close was called. Read may be called
// only once per Tracer.
func (t *Tracer) Read(ctx context.Context, fn func(raw []byte)) error {
	if !t.reading.CompareAndSwap(false, true) {
		return errors.New("tracer: Read called twice")
	}

	// Wakes the loop as soon as ctx ends instead of at the next poll.
	done := make(chan struct{})
	defer close(done)
	go func() {
		select {
		case <-ctx.Done():
			t.detach()
			_ = t.reader.Flush()
		case <-done:
		}
	}()

	var rec ringbuf.Record
	t.reader.SetDeadline(time.Now().Add(pollInterval))
	for {
		if t.detached.Load() {
			return t.drain(&rec, fn)
		}
		err := t.reader.ReadInto(&rec)
		switch {
		case err == nil:
			fn(rec.RawSample)
		case errors.Is(err, os.ErrDeadlineExceeded):
			t.reader.SetDeadline(time.Now().Add(pollInterval))
		case errors.Is(err, ringbuf.ErrFlushed):
			// The stop signal; the loop head sees detached.
		case errors.Is(err, ringbuf.ErrClosed):
			return nil
		default:
			return fmt.Errorf("tracer: read ring buffer: %w", err)
		}
	}
}

// drain hands fn every record still in the ring after the tracepoints were
// detached. A ReadInto that returns an error has looked at the ring after
// the detach (it waited, then read to its end), so that ends the drain.
func (t *Tracer) drain(rec *ringbuf.Record, fn func(raw []byte)) error {
	if t.detachErr != nil {
		return t.detachErr
	}
	t.reader.SetDeadline(time.Now())
	for {
		err := t.reader.ReadInto(rec)
		switch {
		case err == nil:
			fn(rec.RawSample)
		case errors.Is(err, os.ErrDeadlineExceeded), errors.Is(err, ringbuf.ErrFlushed), errors.Is(err, ringbuf.ErrClosed):
			return nil
		default:
			return fmt.Errorf("tracer: drain ring buffer: %w", err)
		}
	}
}

// detach stops new records; the programs and maps stay loaded.
func (t *Tracer) detach() {
	t.detachOnce.Do(func() {
		var errs []error
		for _, l := range t.links {
			if err := l.Close(); err != nil {
				errs = append(errs, err)
			}
		}
		if err := errors.Join(errs...); err != nil {
			t.detachErr = fmt.Errorf("tracer: detach tracepoints: %w", err)
		}
		t.detached.Store(true)
	})
}

// Close detaches the programs and frees the reader, maps and programs. It
// ends a running Read.
func (t *Tracer) Close() error {
	t.detach()
	return errors.Join(t.detachErr, t.closeAll())
}

func (t *Tracer) closeAll() error {
	var errs []error
	if t.reader != nil {
		errs = append(errs, wrap("close ring buffer reader", t.reader.Close()))
	}
	if !t.detached.Load() {
		for _, l := range t.links {
			errs = append(errs, wrap("close link", l.Close()))
		}
	}
	for _, p := range t.progs {
		errs = append(errs, wrap("close program", p.Close()))
	}
	if t.maps != nil {
		t.maps.Close()
	}
	return errors.Join(errs...)
}

func wrap(what string, err error) error {
	if err == nil {
		return nil
	}
	return fmt.Errorf("tracer: %s: %w", what, err)
}
