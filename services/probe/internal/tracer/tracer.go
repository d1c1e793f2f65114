package tracer

import (
	"context"
	"errors"
	"fmt"
	"os"
	"sync"
	"sync/atomic"
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

// Tracer owns the loaded tcpstate program, its tracepoint link and the
// ring-buffer reader. Read may be called once; Close releases everything.
type Tracer struct {
	objs   tcpstateObjects
	link   link.Link
	reader *ringbuf.Reader

	detachOnce sync.Once
	detachErr  error
	detached   atomic.Bool
	reading    atomic.Bool
}

// Counters are the program's own totals since Open, summed over CPUs.
type Counters struct {
	// Submitted is the number of records written to the ring buffer.
	Submitted uint64
	// Dropped is the number of transitions lost because the ring buffer was
	// full (the reader fell behind).
	Dropped uint64
}

// Open loads the program with cfg's map sizes and attaches it to
// sock:inet_sock_set_state. It needs root (CAP_BPF, CAP_PERFMON and, when
// tracefs must be mounted, CAP_SYS_ADMIN).
func Open(cfg Config) (*Tracer, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	cfg = cfg.withDefaults()
	return open(cfg, wakeupBytes(cfg.RingBufferBytes))
}

// open is Open with the wakeup threshold as a parameter, for measuring.
func open(cfg Config, wakeup uint64) (*Tracer, error) {
	if err := rlimit.RemoveMemlock(); err != nil {
		return nil, fmt.Errorf("tracer: remove memlock rlimit: %w%s", err, rootHint(err))
	}
	spec, err := loadTcpstate()
	if err != nil {
		return nil, fmt.Errorf("tracer: load embedded program: %w", err)
	}
	spec.Maps[tcpstateMapEvents].MaxEntries = uint32(cfg.RingBufferBytes)
	spec.Maps[tcpstateMapSockStart].MaxEntries = uint32(cfg.SocketMapEntries)
	if err := spec.Variables[tcpstateVarWakeupBytes].Set(wakeup); err != nil {
		return nil, fmt.Errorf("tracer: set wakeup_bytes: %w", err)
	}

	t := &Tracer{}
	if err := spec.LoadAndAssign(&t.objs, nil); err != nil {
		var verr *ebpf.VerifierError
		if errors.As(err, &verr) {
			return nil, fmt.Errorf("tracer: kernel verifier rejected the program: %+v", verr)
		}
		return nil, fmt.Errorf("tracer: load eBPF objects: %w%s", err, rootHint(err))
	}
	if err := ensureTracefs(); err != nil {
		t.objs.Close()
		return nil, err
	}
	t.link, err = link.Tracepoint("sock", "inet_sock_set_state", t.objs.HandleSetState, nil)
	if err != nil {
		t.objs.Close()
		return nil, fmt.Errorf("tracer: attach tracepoint sock:inet_sock_set_state: %w%s", err, rootHint(err))
	}
	t.reader, err = ringbuf.NewReader(t.objs.Events)
	if err != nil {
		t.link.Close()
		t.objs.Close()
		return nil, fmt.Errorf("tracer: open ring buffer reader: %w", err)
	}
	return t, nil
}

// wakeupBytes is how much data must wait in the ring before the program
// wakes the reader: 1/16 of the ring keeps wakeups rare under load while
// leaving ample room before it fills.
func wakeupBytes(ringBytes int) uint64 { return uint64(ringBytes / 16) }

func rootHint(err error) string {
	if errors.Is(err, os.ErrPermission) {
		return " (not permitted: run as root, or with CAP_BPF, CAP_PERFMON and CAP_SYS_RESOURCE)"
	}
	return ""
}

// Read calls fn with every raw record (one struct event, see Decoder) until
// ctx is done. fn's slice is only valid during the call. When ctx is done it
// detaches the tracepoint, hands fn whatever is left in the ring buffer and
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

// drain hands fn every record still in the ring after the tracepoint was
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

// detach stops new records; the program and maps stay loaded.
func (t *Tracer) detach() {
	t.detachOnce.Do(func() {
		if err := t.link.Close(); err != nil {
			t.detachErr = fmt.Errorf("tracer: detach tracepoint: %w", err)
		}
		t.detached.Store(true)
	})
}

// Counters reads the program's counters.
func (t *Tracer) Counters() (Counters, error) {
	var c Counters
	for idx, dst := range []*uint64{&c.Submitted, &c.Dropped} {
		var perCPU []uint64
		if err := t.objs.Counters.Lookup(uint32(idx), &perCPU); err != nil {
			return Counters{}, fmt.Errorf("tracer: read counter %d: %w", idx, err)
		}
		for _, v := range perCPU {
			*dst += v
		}
	}
	return c, nil
}

// Close detaches the program and frees the reader, maps and program. It
// ends a running Read.
func (t *Tracer) Close() error {
	t.detach()
	return errors.Join(
		t.detachErr,
		wrap("close ring buffer reader", t.reader.Close()),
		wrap("close eBPF objects", t.objs.Close()),
	)
}

func wrap(what string, err error) error {
	if err == nil {
		return nil
	}
	return fmt.Errorf("tracer: %s: %w", what, err)
}
