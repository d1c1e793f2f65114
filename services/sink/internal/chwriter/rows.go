// Package chwriter turns decoded events into ClickHouse rows and inserts them
// exactly once: one INSERT per partition (one atomic part), rows tagged with
// the JetStream stream sequence of their message, and a look-up of that
// sequence for every message the server delivers a second time.
package chwriter

import (
	"net/netip"
	"time"

	"github.com/netpulse/netpulse/lib/eventpb"
)

// columns is the explicit column list of every INSERT, in the order the
// rows below append them. chschema's table definition must contain them all
// (checked by a test).
var columns = []string{
	"time", "time_ns", "host", "type", "pid", "tid", "comm", "family",
	"saddr", "sport", "daddr", "dport", "old_state", "new_state",
	"state_duration_us", "sock_id", "probe_id", "seq", "stream_seq",
}

// Columns returns the INSERT column list.
func Columns() []string { return append([]string(nil), columns...) }

// rows holds one partition's pending rows column by column, so an INSERT
// appends whole slices and the slices are reused batch after batch.
type rows struct {
	time                         []time.Time
	timeNs                       []uint64
	host, typ, comm              []string
	pid, tid                     []uint32
	family                       []int8 // Enum8 codes: cheaper to append than names
	saddr, daddr                 []string
	sport, dport                 []uint16
	oldState, newState           []int8
	durationUs, sockID, seq, sSq []uint64
	probeID                      []string

	msgs      []uint64 // stream sequences of the messages in this buffer
	uncertain bool     // an INSERT of these rows failed: it may have landed
}

func (r *rows) len() int { return len(r.timeNs) }

func (r *rows) reset() {
	r.time, r.timeNs = r.time[:0], r.timeNs[:0]
	r.host, r.typ, r.comm = r.host[:0], r.typ[:0], r.comm[:0]
	r.pid, r.tid = r.pid[:0], r.tid[:0]
	r.family, r.saddr, r.daddr = r.family[:0], r.saddr[:0], r.daddr[:0]
	r.sport, r.dport = r.sport[:0], r.dport[:0]
	r.oldState, r.newState = r.oldState[:0], r.newState[:0]
	r.durationUs, r.sockID, r.seq, r.sSq = r.durationUs[:0], r.sockID[:0], r.seq[:0], r.sSq[:0]
	r.probeID = r.probeID[:0]
	r.msgs = r.msgs[:0]
	r.uncertain = false
}

// add appends one event. host and probeID come from the batch header.
func (r *rows) add(host, probeID string, streamSeq uint64, ev *eventpb.Event, addrs *addrCache) {
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
	r.probeID = append(r.probeID, probeID)
	r.seq = append(r.seq, ev.Seq)
	r.sSq = append(r.sSq, streamSeq)
	if n := len(r.msgs); n == 0 || r.msgs[n-1] != streamSeq {
		r.msgs = append(r.msgs, streamSeq)
	}
}

// values returns the column slices in the order of columns.
func (r *rows) values() []any {
	return []any{
		r.time, r.timeNs, r.host, r.typ, r.pid, r.tid, r.comm, r.family,
		r.saddr, r.sport, r.daddr, r.dport, r.oldState, r.newState,
		r.durationUs, r.sockID, r.probeID, r.seq, r.sSq,
	}
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

// addrCache formats addresses once: a host talks to few peers, and
// formatting every row's address was a tenth of the sink's CPU.
type addrCache struct {
	m map[netip.Addr]string
}

const addrCacheMax = 1 << 16

func (c *addrCache) string(b []byte) string {
	a, ok := netip.AddrFromSlice(b)
	if !ok {
		return ""
	}
	if s, ok := c.m[a]; ok {
		return s
	}
	if c.m == nil || len(c.m) >= addrCacheMax {
		c.m = make(map[netip.Addr]string, 1024) // bounded: start over
	}
	s := a.String()
	c.m[a] = s
	return s
}

// partitionOf is the UTC day of ns as YYYYMMDD: toYYYYMMDD(time) of the
// table's PARTITION BY.
func partitionOf(ns uint64) uint32 {
	y, m, d := time.Unix(0, int64(ns)).UTC().Date()
	return uint32(y*10000 + int(m)*100 + d)
}

// dayBounds is [start, end) of a YYYYMMDD partition in Unix seconds.
func dayBounds(day uint32) (int64, int64) {
	t := time.Date(int(day/10000), time.Month(day/100%100), int(day%100), 0, 0, 0, 0, time.UTC)
	return t.Unix(), t.AddDate(0, 0, 1).Unix()
}
