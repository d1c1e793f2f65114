package tracer

import (
	"bytes"
	"crypto/rand"
	"encoding/binary"
	"fmt"
	"unsafe"

	"golang.org/x/sys/unix"

	"github.com/netpulse/netpulse/lib/eventpb"
	"github.com/netpulse/netpulse/services/probe/internal/mix"
)

// Record sizes: the generated mirrors of the C structs are the only place
// that defines them.
const (
	eventSize = int(unsafe.Sizeof(tcpstateEvent{}))
	connSize  = int(unsafe.Sizeof(tcpstateConn{}))
)

// Decoder turns raw tcpstate records into contract messages. It is a plain
// value: decoding does no I/O, keeps no state and, with reused outputs,
// allocates nothing.
type Decoder struct {
	// OffsetNs is CLOCK_REALTIME - CLOCK_MONOTONIC: added to the kernel's
	// monotonic timestamp it gives wall-clock time.
	OffsetNs int64
	// SockKey is mixed into the socket address so that sock_id joins the
	// records of one socket without publishing kernel addresses.
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

// DecodeRecord decodes one raw record from Tracer.Read. A finished
// connection (RecordConn) fills conn and returns isConn true; every other
// record fills ev. It overwrites every field of the message it fills except
// Seq, reusing its address slices, so reused messages cost no allocation;
// the other message is not touched. On error neither is touched.
//
// Field semantics (beyond the contract's comments):
//   - sock_id: keyed hash of the kernel socket address and the time the
//     probe saw the socket open (0 for sockets older than the probe), so
//     it is stable for the socket's life; 0 when the kernel gave no socket
//     (RESET_SENT for a segment that matched none).
//   - pid/comm/cgroup_id: the owner; owner_source says where it came from
//     (TASK: the current task is the owner; SOCKET: remembered from its
//     last connect/listen/accept/send/recv/close; LISTENER: not accepted
//     yet, the listening port's owner; UNKNOWN: the interrupted task).
//     tid is always the thread that ran.
//   - side: CLIENT from SYN_SENT, SERVER from SYN_RECV or accept().
//   - SYNACK_RETRANSMIT: sock_id is that of the request socket (joins no
//     other event), new_state NEW_SYN_RECV, segments 1.
//   - RETRANSMIT: segments = GSO segments of the retransmitted skb; only
//     attempts the kernel counted in TcpRetransSegs are reported.
//   - RESET_SENT: new_state 0 when there was no socket.
//   - Connection bytes_sent/bytes_received are payload bytes: SYN and FIN
//     sequence numbers are taken out (for sockets older than the probe
//     side is unknown and bytes_sent may include the SYN: one byte more).
func (d Decoder) DecodeRecord(raw []byte, ev *eventpb.Event, conn *eventpb.Connection) (isConn bool, err error) {
	if len(raw) < 4 {
		return false, fmt.Errorf("decode: record is %d bytes, too short for a type", len(raw))
	}
	typ := RecordType(binary.LittleEndian.Uint32(raw))
	switch {
	case typ == RecordConn:
		if conn == nil {
			return true, fmt.Errorf("decode: connection record but no Connection to fill")
		}
		return true, d.decodeConn(raw, conn)
	case typ >= RecordStateChange && typ <= RecordConnectFailed:
		return false, d.decodeEvent(raw, typ, ev)
	default:
		return false, fmt.Errorf("decode: unknown record type %d", uint32(typ))
	}
}

// errAddrNotAvail is Linux's EADDRNOTAVAIL.
const errAddrNotAvail = 99

func (d Decoder) decodeEvent(raw []byte, typ RecordType, out *eventpb.Event) error {
	if len(raw) != eventSize {
		return fmt.Errorf("decode: %s record is %d bytes, want %d", typ, len(raw), eventSize)
	}
	var ev tcpstateEvent
	copyRecord(unsafe.Pointer(&ev), raw)

	family, addrLen, err := decodeFamily(ev.Family)
	if err != nil {
		return err
	}
	// State changes and failed connects are transitions; other records
	// carry the socket's state, 0 when there was no socket.
	minState := uint8(0)
	if typ == RecordStateChange || typ == RecordConnectFailed {
		minState = 1
	}
	oldState, err := tcpState(ev.Oldstate, minState)
	if err != nil {
		return fmt.Errorf("decode: old state: %w", err)
	}
	newState, err := tcpState(ev.Newstate, minState)
	if err != nil {
		return fmt.Errorf("decode: new state: %w", err)
	}
	side, source, err := sideAndSource(ev.Side, ev.OwnerSource)
	if err != nil {
		return err
	}

	out.Type = eventpb.EventType(typ)
	out.TimeUnixNano = uint64(int64(ev.TsNs) + d.OffsetNs)
	out.Pid = ev.Pid
	out.Tid = ev.Tid
	setComm(&out.Comm, ev.Comm[:])
	out.Family = family
	out.Saddr = append(out.Saddr[:0], ev.Saddr[:addrLen]...)
	out.Daddr = append(out.Daddr[:0], ev.Daddr[:addrLen]...)
	out.Sport = uint32(ev.Sport)
	out.Dport = uint32(ev.Dport)
	out.OldState = oldState
	out.NewState = newState
	out.StateDurationUs = ev.StateDurationUs
	out.SockId = d.sockID(ev.Skaddr, ev.BornNs)
	out.OwnerSource = source
	out.CgroupId = ev.CgroupId
	out.Error = ev.Error
	if typ == RecordConnectFailed && ev.Error == 0 && ev.Sport == 0 {
		// connect() sets SYN_SENT just before it picks the local port; a
		// socket that closes with none was refused one: the kernel found no
		// free port towards that remote (connect returns EADDRNOTAVAIL, and
		// never sets sk_err for it).
		out.Error = errAddrNotAvail
	}
	out.HandshakeUs = ev.HandshakeUs
	out.HandshakeRetransmits = ev.HandshakeRetrans
	out.Side = side
	out.Segments = ev.Segments
	out.SegsOut = ev.SegsOut
	out.Cookie = ev.Cookie
	return nil
}

func (d Decoder) decodeConn(raw []byte, out *eventpb.Connection) error {
	if len(raw) != connSize {
		return fmt.Errorf("decode: %s record is %d bytes, want %d", RecordConn, len(raw), connSize)
	}
	var c tcpstateConn
	copyRecord(unsafe.Pointer(&c), raw)

	family, addrLen, err := decodeFamily(c.Family)
	if err != nil {
		return err
	}
	lastState, err := tcpState(c.LastState, 1)
	if err != nil {
		return fmt.Errorf("decode: last state: %w", err)
	}
	side, source, err := sideAndSource(c.Side, c.OwnerSource)
	if err != nil {
		return err
	}
	if c.BornNs > c.TsNs {
		return fmt.Errorf("decode: connection starts (%d) after it ends (%d)", c.BornNs, c.TsNs)
	}

	out.TimeUnixNano = uint64(int64(c.TsNs) + d.OffsetNs)
	out.SockId = d.sockID(c.Skaddr, c.BornNs)
	out.Pid = c.Pid
	setComm(&out.Comm, c.Comm[:])
	out.CgroupId = c.CgroupId
	out.OwnerSource = source
	out.Family = family
	out.Saddr = append(out.Saddr[:0], c.Saddr[:addrLen]...)
	out.Daddr = append(out.Daddr[:0], c.Daddr[:addrLen]...)
	out.Sport = uint32(c.Sport)
	out.Dport = uint32(c.Dport)
	out.Side = side
	out.StartUnixNano, out.DurationUs = 0, 0
	if c.BornNs != 0 {
		out.StartUnixNano = uint64(int64(c.BornNs) + d.OffsetNs)
		out.DurationUs = (c.TsNs - c.BornNs) / 1000
	}
	out.BytesSent = c.BytesSent
	out.BytesReceived = c.BytesReceived
	out.SegmentsOut = c.SegsOut
	out.SegmentsIn = c.SegsIn
	out.Retransmits = c.TotalRetrans
	out.SrttUs = c.SrttUs
	out.HandshakeUs = c.HandshakeUs
	out.HandshakeRetransmits = c.HandshakeRetrans
	out.LastState = lastState
	out.Error = c.Error
	out.Cookie = c.Cookie
	return nil
}

// sockID hides the kernel address; born tells two lives of one address
// apart.
func (d Decoder) sockID(skaddr, born uint64) uint64 {
	if skaddr == 0 {
		return 0
	}
	return mix.SplitMix64(mix.SplitMix64(skaddr^d.SockKey) ^ born)
}

func decodeFamily(f uint16) (eventpb.Family, int, error) {
	switch f {
	case unix.AF_INET:
		return eventpb.Family_FAMILY_IPV4, 4, nil
	case unix.AF_INET6:
		return eventpb.Family_FAMILY_IPV6, 16, nil
	}
	return 0, 0, fmt.Errorf("decode: unknown address family %d", f)
}

func sideAndSource(side, source uint8) (eventpb.Side, eventpb.OwnerSource, error) {
	if side > uint8(eventpb.Side_SIDE_SERVER) {
		return 0, 0, fmt.Errorf("decode: side %d is not 0..2", side)
	}
	if source > uint8(eventpb.OwnerSource_OWNER_SOURCE_LISTENER) {
		return 0, 0, fmt.Errorf("decode: owner source %d is not 0..3", source)
	}
	return eventpb.Side(side), eventpb.OwnerSource(source), nil
}

// copyRecord fills the record at dst from raw (len(raw) is its size). It
// copies rather than casting raw in place because raw need not be aligned.
func copyRecord(dst unsafe.Pointer, raw []byte) {
	copy(unsafe.Slice((*byte)(dst), len(raw)), raw)
}

func tcpState(s, lowest uint8) (eventpb.TcpState, error) {
	if s < lowest || s > uint8(eventpb.TcpState_TCP_STATE_NEW_SYN_RECV) {
		return 0, fmt.Errorf("%d is not a TCP state (%d..12)", s, lowest)
	}
	return eventpb.TcpState(s), nil
}

// setComm sets *dst to comm up to its first NUL. The same process emits
// many records in a row, so keeping an equal string avoids allocating.
func setComm(dst *string, comm []int8) {
	b := unsafe.Slice((*byte)(unsafe.Pointer(unsafe.SliceData(comm))), len(comm))
	if i := bytes.IndexByte(b, 0); i >= 0 {
		b = b[:i]
	}
	if *dst != string(b) { // compiler does not allocate for this comparison
		*dst = string(b)
	}
}
