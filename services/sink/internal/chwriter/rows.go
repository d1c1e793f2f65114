// Package chwriter turns decoded messages into ClickHouse rows and inserts
// them exactly once: one INSERT per table partition (one atomic part), rows
// tagged with the JetStream stream sequence of their message, and a look-up
// of that sequence for every message the server delivers a second time.
package chwriter

import (
	"encoding/binary"
	"net/netip"
	"time"

	"github.com/netpulse/netpulse/lib/eventpb"
)

// rowBuffer is one partition's pending rows of one table, column by column,
// so that an INSERT appends whole slices and the slices are reused batch
// after batch.
type rowBuffer interface {
	// values returns the column slices in the order of the table's
	// columns (chschema), which is the INSERT's column list.
	values() []any
	reset()
	state() *bufState
}

// bufState is what every row buffer tracks besides its columns.
type bufState struct {
	rows      int
	msgs      []uint64 // stream sequences of the messages in this buffer
	uncertain bool     // an INSERT of these rows failed: it may have landed
}

func (s *bufState) state() *bufState { return s }

// added counts one row of message streamSeq.
func (s *bufState) added(streamSeq uint64) {
	s.rows++
	if n := len(s.msgs); n == 0 || s.msgs[n-1] != streamSeq {
		s.msgs = append(s.msgs, streamSeq)
	}
}

func (s *bufState) resetState() {
	s.rows, s.msgs, s.uncertain = 0, s.msgs[:0], false
}

// eventRows are tcp_events rows.
type eventRows struct {
	bufState
	time                                    []time.Time
	timeNs                                  []uint64
	host, typ, comm, saddr, daddr, probeID  []string
	pid, tid, hsRetrans, segments           []uint32
	family, oldState, newState, owner, side []int8 // Enum8 codes: cheaper to append than names
	sport, dport                            []uint16
	errno                                   []int32
	durationUs, sockID, cgroup, hsUs        []uint64
	cookie, seq, sSeq                       []uint64
}

func (r *eventRows) add(host, probeID string, streamSeq uint64, ev *eventpb.Event, addrs *addrCache) {
	ns := ev.TimeUnixNano
	r.time = append(r.time, time.Unix(0, int64(ns)).UTC())
	r.timeNs = append(r.timeNs, ns)
	r.host = append(r.host, host)
	r.typ = append(r.typ, TypeName(ev.Type))
	r.pid = append(r.pid, ev.Pid)
	r.tid = append(r.tid, ev.Tid)
	r.comm = append(r.comm, ev.Comm)
	r.family = append(r.family, familyCode(ev.Family))
	r.saddr = append(r.saddr, addrs.string(ev.Saddr))
	r.sport = append(r.sport, uint16(ev.Sport))
	r.daddr = append(r.daddr, addrs.string(ev.Daddr))
	r.dport = append(r.dport, uint16(ev.Dport))
	r.oldState = append(r.oldState, stateCode(ev.OldState))
	r.newState = append(r.newState, stateCode(ev.NewState))
	r.durationUs = append(r.durationUs, ev.StateDurationUs)
	r.sockID = append(r.sockID, ev.SockId)
	r.owner = append(r.owner, ownerCode(ev.OwnerSource))
	r.cgroup = append(r.cgroup, ev.CgroupId)
	r.errno = append(r.errno, ev.Error)
	r.hsUs = append(r.hsUs, ev.HandshakeUs)
	r.hsRetrans = append(r.hsRetrans, ev.HandshakeRetransmits)
	r.side = append(r.side, sideCode(ev.Side))
	r.segments = append(r.segments, ev.Segments)
	r.cookie = append(r.cookie, ev.Cookie)
	r.probeID = append(r.probeID, probeID)
	r.seq = append(r.seq, ev.Seq)
	r.sSeq = append(r.sSeq, streamSeq)
	r.added(streamSeq)
}

func (r *eventRows) values() []any {
	return []any{
		r.time, r.timeNs, r.host, r.typ, r.pid, r.tid, r.comm, r.family,
		r.saddr, r.sport, r.daddr, r.dport, r.oldState, r.newState,
		r.durationUs, r.sockID, r.owner, r.cgroup, r.errno, r.hsUs, r.hsRetrans,
		r.side, r.segments, r.cookie, r.probeID, r.seq, r.sSeq,
	}
}

func (r *eventRows) reset() {
	r.resetState()
	r.time, r.timeNs = r.time[:0], r.timeNs[:0]
	r.host, r.typ, r.comm, r.saddr, r.daddr, r.probeID = r.host[:0], r.typ[:0], r.comm[:0], r.saddr[:0], r.daddr[:0], r.probeID[:0]
	r.pid, r.tid, r.hsRetrans, r.segments = r.pid[:0], r.tid[:0], r.hsRetrans[:0], r.segments[:0]
	r.family, r.oldState, r.newState, r.owner, r.side = r.family[:0], r.oldState[:0], r.newState[:0], r.owner[:0], r.side[:0]
	r.sport, r.dport = r.sport[:0], r.dport[:0]
	r.errno = r.errno[:0]
	r.durationUs, r.sockID, r.cgroup, r.hsUs = r.durationUs[:0], r.sockID[:0], r.cgroup[:0], r.hsUs[:0]
	r.cookie, r.seq, r.sSeq = r.cookie[:0], r.seq[:0], r.sSeq[:0]
}

// connRows are tcp_connections rows.
type connRows struct {
	bufState
	time, start                                    []time.Time
	timeNs, startNs                                []uint64
	host, comm, saddr, daddr, probeID              []string
	pid, segsOut, segsIn, retrans, srtt, hsRetrans []uint32
	owner, side, family, lastState                 []int8
	sport, dport                                   []uint16
	errno                                          []int32
	cgroup, durationUs, bytesSent, bytesRecv, hsUs []uint64
	sockID, cookie, seq, sSeq                      []uint64
}

func (r *connRows) add(host, probeID string, streamSeq uint64, c *eventpb.Connection, addrs *addrCache) {
	r.time = append(r.time, time.Unix(0, int64(c.TimeUnixNano)).UTC())
	r.timeNs = append(r.timeNs, c.TimeUnixNano)
	r.host = append(r.host, host)
	r.pid = append(r.pid, c.Pid)
	r.comm = append(r.comm, c.Comm)
	r.cgroup = append(r.cgroup, c.CgroupId)
	r.owner = append(r.owner, ownerCode(c.OwnerSource))
	r.side = append(r.side, sideCode(c.Side))
	r.family = append(r.family, familyCode(c.Family))
	r.saddr = append(r.saddr, addrs.string(c.Saddr))
	r.sport = append(r.sport, uint16(c.Sport))
	r.daddr = append(r.daddr, addrs.string(c.Daddr))
	r.dport = append(r.dport, uint16(c.Dport))
	r.start = append(r.start, time.Unix(0, int64(c.StartUnixNano)).UTC())
	r.startNs = append(r.startNs, c.StartUnixNano)
	r.durationUs = append(r.durationUs, c.DurationUs)
	r.bytesSent = append(r.bytesSent, c.BytesSent)
	r.bytesRecv = append(r.bytesRecv, c.BytesReceived)
	r.segsOut = append(r.segsOut, c.SegmentsOut)
	r.segsIn = append(r.segsIn, c.SegmentsIn)
	r.retrans = append(r.retrans, c.Retransmits)
	r.srtt = append(r.srtt, c.SrttUs)
	r.hsUs = append(r.hsUs, c.HandshakeUs)
	r.hsRetrans = append(r.hsRetrans, c.HandshakeRetransmits)
	r.lastState = append(r.lastState, stateCode(c.LastState))
	r.errno = append(r.errno, c.Error)
	r.sockID = append(r.sockID, c.SockId)
	r.cookie = append(r.cookie, c.Cookie)
	r.probeID = append(r.probeID, probeID)
	r.seq = append(r.seq, c.Seq)
	r.sSeq = append(r.sSeq, streamSeq)
	r.added(streamSeq)
}

func (r *connRows) values() []any {
	return []any{
		r.time, r.timeNs, r.host, r.pid, r.comm, r.cgroup, r.owner, r.side, r.family,
		r.saddr, r.sport, r.daddr, r.dport, r.start, r.startNs, r.durationUs,
		r.bytesSent, r.bytesRecv, r.segsOut, r.segsIn, r.retrans, r.srtt, r.hsUs, r.hsRetrans,
		r.lastState, r.errno, r.sockID, r.cookie, r.probeID, r.seq, r.sSeq,
	}
}

func (r *connRows) reset() {
	r.resetState()
	r.time, r.start, r.timeNs, r.startNs = r.time[:0], r.start[:0], r.timeNs[:0], r.startNs[:0]
	r.host, r.comm, r.saddr, r.daddr, r.probeID = r.host[:0], r.comm[:0], r.saddr[:0], r.daddr[:0], r.probeID[:0]
	r.pid, r.segsOut, r.segsIn, r.retrans, r.srtt, r.hsRetrans = r.pid[:0], r.segsOut[:0], r.segsIn[:0], r.retrans[:0], r.srtt[:0], r.hsRetrans[:0]
	r.owner, r.side, r.family, r.lastState = r.owner[:0], r.side[:0], r.family[:0], r.lastState[:0]
	r.sport, r.dport, r.errno = r.sport[:0], r.dport[:0], r.errno[:0]
	r.cgroup, r.durationUs, r.bytesSent, r.bytesRecv, r.hsUs = r.cgroup[:0], r.durationUs[:0], r.bytesSent[:0], r.bytesRecv[:0], r.hsUs[:0]
	r.sockID, r.cookie, r.seq, r.sSeq = r.sockID[:0], r.cookie[:0], r.seq[:0], r.sSeq[:0]
}

// Row kinds of socket_snapshots (chschema's Enum8 codes).
const (
	rowSummary   int8 = 0
	rowGroup     int8 = 1
	rowCloseWait int8 = 2
)

// snapRows are socket_snapshots rows. Every snapshot makes one summary
// row, one row per group and one per listed CLOSE_WAIT socket; a column
// a row kind does not use gets its zero value.
type snapRows struct {
	bufState
	time                                             []time.Time
	timeNs                                           []uint64
	host, comm, saddr, daddr, probeID                []string
	kind, tcpState, owner, side, family              []int8
	pid, count, recvQueue, groupsCut, cwTotal, cwCut []uint32
	socketsTotal, intervalMs                         []uint32
	localPort, dport                                 []uint16
	ageEstimated, seeded                             []uint8
	cgroup, sockID, cookie, ageUs, outSegs, retrSegs []uint64
	seq, sSeq                                        []uint64
}

// row appends one row of kind with every column at its zero value but the
// snapshot's own; the caller sets the rest on the last element.
func (r *snapRows) row(kind int8, host, probeID string, streamSeq uint64, s *eventpb.Snapshot) {
	r.time = append(r.time, time.Unix(0, int64(s.TimeUnixNano)).UTC())
	r.timeNs = append(r.timeNs, s.TimeUnixNano)
	r.host = append(r.host, host)
	r.kind = append(r.kind, kind)
	r.tcpState = append(r.tcpState, 0)
	r.pid = append(r.pid, 0)
	r.comm = append(r.comm, "")
	r.cgroup = append(r.cgroup, 0)
	r.owner = append(r.owner, 0)
	r.side = append(r.side, 0)
	r.localPort = append(r.localPort, 0)
	r.count = append(r.count, 0)
	r.family = append(r.family, 0)
	r.saddr = append(r.saddr, "")
	r.daddr = append(r.daddr, "")
	r.dport = append(r.dport, 0)
	r.sockID = append(r.sockID, 0)
	r.cookie = append(r.cookie, 0)
	r.ageUs = append(r.ageUs, 0)
	r.ageEstimated = append(r.ageEstimated, 0)
	r.recvQueue = append(r.recvQueue, 0)
	r.groupsCut = append(r.groupsCut, 0)
	r.cwTotal = append(r.cwTotal, 0)
	r.cwCut = append(r.cwCut, 0)
	r.socketsTotal = append(r.socketsTotal, 0)
	r.seeded = append(r.seeded, 0)
	r.outSegs = append(r.outSegs, 0)
	r.retrSegs = append(r.retrSegs, 0)
	r.intervalMs = append(r.intervalMs, 0)
	r.probeID = append(r.probeID, probeID)
	r.seq = append(r.seq, s.Seq)
	r.sSeq = append(r.sSeq, streamSeq)
	r.added(streamSeq)
}

// add appends the rows of snapshot s.
func (r *snapRows) add(host, probeID string, streamSeq uint64, s *eventpb.Snapshot, addrs *addrCache) {
	r.row(rowSummary, host, probeID, streamSeq, s)
	i := r.rows - 1
	r.groupsCut[i], r.cwTotal[i], r.cwCut[i] = s.GroupsCut, s.CloseWaitTotal, s.CloseWaitCut
	r.socketsTotal[i], r.seeded[i] = s.SocketsTotal, b2u(s.Seeded)
	r.outSegs[i], r.retrSegs[i], r.intervalMs[i] = s.TcpOutSegs, s.TcpRetransSegs, s.IntervalMs

	for _, g := range s.Groups {
		r.row(rowGroup, host, probeID, streamSeq, s)
		i := r.rows - 1
		r.tcpState[i], r.pid[i], r.comm[i], r.cgroup[i] = stateCode(g.State), g.Pid, g.Comm, g.CgroupId
		r.localPort[i], r.count[i], r.side[i] = uint16(g.LocalPort), g.Count, sideCode(g.Side)
	}
	for _, c := range s.CloseWait {
		r.row(rowCloseWait, host, probeID, streamSeq, s)
		i := r.rows - 1
		r.tcpState[i] = int8(eventpb.TcpState_TCP_STATE_CLOSE_WAIT)
		r.pid[i], r.comm[i], r.cgroup[i], r.owner[i], r.side[i] = c.Pid, c.Comm, c.CgroupId, ownerCode(c.OwnerSource), sideCode(c.Side)
		r.localPort[i], r.count[i], r.family[i] = uint16(c.Sport), 1, familyCode(c.Family)
		r.saddr[i], r.daddr[i], r.dport[i] = addrs.string(c.Saddr), addrs.string(c.Daddr), uint16(c.Dport)
		r.sockID[i], r.cookie[i], r.ageUs[i] = c.SockId, c.Cookie, c.AgeUs
		r.ageEstimated[i], r.recvQueue[i] = b2u(c.AgeEstimated), c.RecvQueue
	}
}

func (r *snapRows) values() []any {
	return []any{
		r.time, r.timeNs, r.host, r.kind, r.tcpState, r.pid, r.comm, r.cgroup, r.owner, r.side,
		r.localPort, r.count, r.family, r.saddr, r.daddr, r.dport, r.sockID, r.cookie,
		r.ageUs, r.ageEstimated, r.recvQueue, r.groupsCut, r.cwTotal, r.cwCut, r.socketsTotal,
		r.seeded, r.outSegs, r.retrSegs, r.intervalMs, r.probeID, r.seq, r.sSeq,
	}
}

func (r *snapRows) reset() {
	r.resetState()
	r.time, r.timeNs = r.time[:0], r.timeNs[:0]
	r.host, r.comm, r.saddr, r.daddr, r.probeID = r.host[:0], r.comm[:0], r.saddr[:0], r.daddr[:0], r.probeID[:0]
	r.kind, r.tcpState, r.owner, r.side, r.family = r.kind[:0], r.tcpState[:0], r.owner[:0], r.side[:0], r.family[:0]
	r.pid, r.count, r.recvQueue, r.groupsCut, r.cwTotal, r.cwCut = r.pid[:0], r.count[:0], r.recvQueue[:0], r.groupsCut[:0], r.cwTotal[:0], r.cwCut[:0]
	r.socketsTotal, r.intervalMs = r.socketsTotal[:0], r.intervalMs[:0]
	r.localPort, r.dport = r.localPort[:0], r.dport[:0]
	r.ageEstimated, r.seeded = r.ageEstimated[:0], r.seeded[:0]
	r.cgroup, r.sockID, r.cookie, r.ageUs, r.outSegs, r.retrSegs = r.cgroup[:0], r.sockID[:0], r.cookie[:0], r.ageUs[:0], r.outSegs[:0], r.retrSegs[:0]
	r.seq, r.sSeq = r.seq[:0], r.sSeq[:0]
}

func b2u(b bool) uint8 {
	if b {
		return 1
	}
	return 0
}

// TypeName is the contract's name of an event type (the tcp_events.type value).
func TypeName(t eventpb.EventType) string {
	switch t {
	case eventpb.EventType_EVENT_TYPE_STATE_CHANGE:
		return "state_change"
	case eventpb.EventType_EVENT_TYPE_RETRANSMIT:
		return "retransmit"
	case eventpb.EventType_EVENT_TYPE_SYNACK_RETRANSMIT:
		return "synack_retransmit"
	case eventpb.EventType_EVENT_TYPE_RESET_SENT:
		return "reset_sent"
	case eventpb.EventType_EVENT_TYPE_RESET_RECEIVED:
		return "reset_received"
	case eventpb.EventType_EVENT_TYPE_SOCKET_ERROR:
		return "socket_error"
	case eventpb.EventType_EVENT_TYPE_CONNECT_FAILED:
		return "connect_failed"
	}
	return "unknown"
}

// familyCode is the family's value in the Enum8 column ('ipv4' = 4,
// 'ipv6' = 6, 'unknown' = 0).
func familyCode(f eventpb.Family) int8 {
	switch f {
	case eventpb.Family_FAMILY_IPV4, eventpb.Family_FAMILY_IPV6:
		return int8(f)
	}
	return 0
}

// stateCode is the state's value in the Enum8 columns: the kernel's number,
// 0 ('UNKNOWN') for anything else.
func stateCode(s eventpb.TcpState) int8 {
	if s < eventpb.TcpState_TCP_STATE_UNSPECIFIED || s > eventpb.TcpState_TCP_STATE_NEW_SYN_RECV {
		return 0
	}
	return int8(s)
}

// ownerCode is the owner source's value in the Enum8 columns: the proto's
// number, 0 ('unknown') for values this sink does not know.
func ownerCode(o eventpb.OwnerSource) int8 {
	if o < eventpb.OwnerSource_OWNER_SOURCE_UNKNOWN || o > eventpb.OwnerSource_OWNER_SOURCE_SCAN {
		return 0
	}
	return int8(o)
}

// sideCode is the side's value in the Enum8 columns: the proto's number,
// 0 ('unspecified') for values this sink does not know.
func sideCode(s eventpb.Side) int8 {
	if s < eventpb.Side_SIDE_UNSPECIFIED || s > eventpb.Side_SIDE_SERVER {
		return 0
	}
	return int8(s)
}

// addrCache formats addresses once: a host talks to few peers, and
// formatting every row's address was a tenth of the sink's CPU. It is
// direct-mapped and small enough for the CPU cache: a map of every peer
// seen cost more per hit (cache misses) than formatting does, once peers
// number tens of thousands. A slot holds the last address that hashed to
// it; a collision only means formatting again.
type addrCache struct {
	slots *[addrSlots]addrSlot
}

type addrSlot struct {
	n int8 // address length, 0: empty
	b [16]byte
	s string
}

const addrSlots = 1 << 12 // 4096 slots, 160 KiB

func (c *addrCache) string(b []byte) string {
	var h uint64
	switch len(b) {
	case 4:
		h = uint64(binary.LittleEndian.Uint32(b)) * 0x9e3779b97f4a7c15
	case 16:
		h = (binary.LittleEndian.Uint64(b) ^ binary.LittleEndian.Uint64(b[8:])*0xff51afd7ed558ccd) * 0x9e3779b97f4a7c15
	default:
		return ""
	}
	if c.slots == nil {
		c.slots = new([addrSlots]addrSlot)
	}
	slot := &c.slots[h>>(64-12)]
	if int(slot.n) == len(b) && string(slot.b[:slot.n]) == string(b) {
		return slot.s
	}
	a, _ := netip.AddrFromSlice(b)
	slot.n = int8(copy(slot.b[:], b))
	slot.s = a.String()
	return slot.s
}
