package tracer

import (
	"bytes"
	"crypto/rand"
	"encoding/binary"
	"fmt"
	"unsafe"

	"golang.org/x/sys/unix"

	"github.com/netpulse/netpulse/lib/eventpb"
)

// Address families as the kernel numbers them (AF_INET, AF_INET6).
const (
	afInet  = 2
	afInet6 = 10
)

// recordSize is the size of one ring-buffer record: the generated mirror
// of the C struct event is the only place that defines it.
const recordSize = int(unsafe.Sizeof(tcpstateEvent{}))

// Decoder turns raw tcpstate records into contract events. It is a plain
// value: Decode does no I/O and keeps no state.
type Decoder struct {
	// OffsetNs is CLOCK_REALTIME - CLOCK_MONOTONIC: added to the kernel's
	// monotonic timestamp it gives wall-clock time.
	OffsetNs int64
	// SockKey is mixed into the socket address so that sock_id joins the
	// events of one socket without publishing kernel addresses.
	SockKey uint64
}

// NewDecoder reads the clock offset once and picks a random SockKey.
func NewDecoder() Decoder {
	var key [8]byte
	_, _ = rand.Read(key[:]) // never fails; crashes the program instead
	return Decoder{OffsetNs: clockOffsetNs(), SockKey: binary.LittleEndian.Uint64(key[:])}
}

// clockOffsetNs brackets the realtime read between two monotonic reads and
// uses their midpoint, which halves the error from being preempted.
func clockOffsetNs() int64 {
	var m1, rt, m2 unix.Timespec
	_ = unix.ClockGettime(unix.CLOCK_MONOTONIC, &m1) // cannot fail for these clocks
	_ = unix.ClockGettime(unix.CLOCK_REALTIME, &rt)
	_ = unix.ClockGettime(unix.CLOCK_MONOTONIC, &m2)
	mono := m1.Nano() + (m2.Nano()-m1.Nano())/2
	return rt.Nano() - mono
}

// Decode fills out from one raw record. It overwrites every field except
// Seq, reusing out's address slices, so a reused out costs no allocation.
func (d Decoder) Decode(raw []byte, out *eventpb.Event) error {
	if len(raw) != recordSize {
		return fmt.Errorf("decode: record is %d bytes, want %d", len(raw), recordSize)
	}
	var ev tcpstateEvent
	copyRecord(&ev, raw)

	var family eventpb.Family
	var addrLen int
	switch ev.Family {
	case afInet:
		family, addrLen = eventpb.Family_FAMILY_IPV4, 4
	case afInet6:
		family, addrLen = eventpb.Family_FAMILY_IPV6, 16
	default:
		return fmt.Errorf("decode: unknown address family %d", ev.Family)
	}
	oldState, err := tcpState(ev.Oldstate)
	if err != nil {
		return fmt.Errorf("decode: old state: %w", err)
	}
	newState, err := tcpState(ev.Newstate)
	if err != nil {
		return fmt.Errorf("decode: new state: %w", err)
	}

	out.Type = eventpb.EventType_EVENT_TYPE_STATE_CHANGE
	out.TimeUnixNano = uint64(int64(ev.TsNs) + d.OffsetNs)
	out.Pid = ev.Pid
	out.Tid = ev.Tid
	setComm(out, ev.Comm[:])
	out.Family = family
	out.Saddr = append(out.Saddr[:0], ev.Saddr[:addrLen]...)
	out.Daddr = append(out.Daddr[:0], ev.Daddr[:addrLen]...)
	out.Sport = uint32(ev.Sport)
	out.Dport = uint32(ev.Dport)
	out.OldState = oldState
	out.NewState = newState
	out.StateDurationUs = ev.StateDurationUs
	// Kernel addresses are reused; born_ns tells two lives of one address apart.
	out.SockId = splitmix64(splitmix64(ev.Skaddr^d.SockKey) ^ ev.BornNs)
	return nil
}

// copyRecord fills ev from raw (len(raw) >= recordSize). It copies rather
// than casting raw in place because raw need not be aligned.
func copyRecord(ev *tcpstateEvent, raw []byte) {
	copy(unsafe.Slice((*byte)(unsafe.Pointer(ev)), recordSize), raw)
}

func tcpState(s uint8) (eventpb.TcpState, error) {
	if s < uint8(eventpb.TcpState_TCP_STATE_ESTABLISHED) || s > uint8(eventpb.TcpState_TCP_STATE_NEW_SYN_RECV) {
		return 0, fmt.Errorf("%d is not a TCP state (1..12)", s)
	}
	return eventpb.TcpState(s), nil
}

// setComm sets out.Comm to comm up to its first NUL. The same process
// emits many events in a row, so keeping an equal string avoids allocating.
func setComm(out *eventpb.Event, comm []int8) {
	b := unsafe.Slice((*byte)(unsafe.Pointer(unsafe.SliceData(comm))), len(comm))
	if i := bytes.IndexByte(b, 0); i >= 0 {
		b = b[:i]
	}
	if out.Comm != string(b) { // compiler does not allocate for this comparison
		out.Comm = string(b)
	}
}

// splitmix64 is the finaliser of the SplitMix64 generator: a bijection that
// spreads every input bit over the output, so sock ids do not reveal
// address structure.
func splitmix64(x uint64) uint64 {
	x += 0x9e3779b97f4a7c15
	x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9
	x = (x ^ (x >> 27)) * 0x94d049bb133c111b
	return x ^ (x >> 31)
}
