// Package chwriter turns decoded messages into ClickHouse rows and inserts
// them exactly once: one INSERT per table partition (one atomic part), rows
// tagged with the JetStream stream sequence of their message, and a look-up
// of that sequence for every message the server delivers a second time.
package chwriter

import (
	"slices"
	"strings"
	"time"

	"github.com/netpulse/netpulse/lib/eventpb"
	"github.com/netpulse/netpulse/lib/wire"
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
	runs                                    []eventRun // the rows' runs in the table's sort order, see order
	sorted                                  []span     // order's result, reused
	time                                    []time.Time
	timeNs                                  []uint64
	host, typ, comm, saddr, daddr, probeID  []string
	pid, tid, hsRetrans, segments, segsOut  []uint32
	family, oldState, newState, owner, side []int8 // Enum8 codes: cheaper to append than names
	sport, dport                            []uint16
	errno                                   []int32
	durationUs, sockID, cgroup, hsUs        []uint64
	cookie, seq, sSeq                       []uint64
}

// eventRun is a run of consecutive tcp_events rows already in the table's
// sort order, ORDER BY (host, type, time): one host and type, times (in
// seconds, as DateTime stores them) never decreasing. A probe's message is
// one host and, for state changes, one type, in time order: one run.
type eventRun struct {
	start       int // first row
	host, typ   string
	first, last uint64 // seconds of the first and the last row
}

// span is rows [lo, hi).
type span struct{ lo, hi int }

func (r *eventRows) add(host, probeID string, streamSeq uint64, ev *eventpb.Event, addrs *addrCache) {
	ns := ev.TimeUnixNano
	typ := wire.EventTypes.Name(ev.Type)
	if sec, n := ns/1e9, len(r.runs); n == 0 || r.runs[n-1].typ != typ || sec < r.runs[n-1].last || r.runs[n-1].host != host {
		r.runs = append(r.runs, eventRun{start: r.rows, host: host, typ: typ, first: sec, last: sec})
	} else {
		r.runs[n-1].last = sec
	}
	r.time = append(r.time, time.Unix(0, int64(ns)).UTC())
	r.timeNs = append(r.timeNs, ns)
	r.host = append(r.host, host)
	r.typ = append(r.typ, typ)
	r.pid = append(r.pid, ev.Pid)
	r.tid = append(r.tid, ev.Tid)
	r.comm = append(r.comm, ev.Comm)
	r.family = append(r.family, wire.Families.Code(ev.Family))
	r.saddr = append(r.saddr, addrs.string(ev.Saddr))
	r.sport = append(r.sport, uint16(ev.Sport))
	r.daddr = append(r.daddr, addrs.string(ev.Daddr))
	r.dport = append(r.dport, uint16(ev.Dport))
	r.oldState = append(r.oldState, wire.States.Code(ev.OldState))
	r.newState = append(r.newState, wire.States.Code(ev.NewState))
	r.durationUs = append(r.durationUs, ev.StateDurationUs)
	r.sockID = append(r.sockID, ev.SockId)
	r.owner = append(r.owner, wire.OwnerSources.Code(ev.OwnerSource))
	r.cgroup = append(r.cgroup, ev.CgroupId)
	r.errno = append(r.errno, ev.Error)
	r.hsUs = append(r.hsUs, ev.HandshakeUs)
	r.hsRetrans = append(r.hsRetrans, ev.HandshakeRetransmits)
	r.side = append(r.side, wire.Sides.Code(ev.Side))
	r.segments = append(r.segments, ev.Segments)
	r.cookie = append(r.cookie, ev.Cookie)
	r.segsOut = append(r.segsOut, ev.SegsOut)
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
		r.side, r.segments, r.cookie, r.segsOut, r.probeID, r.seq, r.sSeq,
	}
}

// minRunRows is the shortest average run order puts in sort order: the
// INSERT appends each run of each column on its own (a call and an
// allocation each), which shorter runs would not repay.
const minRunRows = 16

// order returns the rows as spans in the table's sort order (host, type,
// time), or nil when they are in it already or cannot be put in it by
// reordering whole runs (then the server sorts them, as it would anyway).
// ClickHouse skips sorting a block that is already in order
// (MergeTreeDataWriterBlocksAlreadySorted, 18.16 too): a tenth of its CPU
// per INSERT. The rows inserted are the same, only their order in the
// block changes; the order within a run (time ties) is kept.
func (r *eventRows) order() []span {
	n := len(r.runs)
	if n <= 1 || n > r.rows/minRunRows {
		return nil
	}
	idx := make([]int, n)
	for i := range idx {
		idx[i] = i
	}
	slices.SortStableFunc(idx, func(a, b int) int {
		x, y := &r.runs[a], &r.runs[b]
		if c := strings.Compare(x.host, y.host); c != 0 {
			return c
		}
		if c := strings.Compare(x.typ, y.typ); c != 0 {
			return c
		}
		switch {
		case x.first < y.first:
			return -1
		case x.first > y.first:
			return 1
		}
		return 0
	})
	r.sorted = r.sorted[:0]
	for k, i := range idx {
		run := &r.runs[i]
		if k > 0 {
			prev := &r.runs[idx[k-1]]
			if prev.host == run.host && prev.typ == run.typ && run.first < prev.last {
				return nil // overlapping runs: only a row-by-row sort would do
			}
		}
		hi := r.rows
		if i+1 < n {
			hi = r.runs[i+1].start
		}
		// Runs that stay adjacent are appended as one.
		if m := len(r.sorted); m > 0 && r.sorted[m-1].hi == run.start {
			r.sorted[m-1].hi = hi
		} else {
			r.sorted = append(r.sorted, span{run.start, hi})
		}
	}
	if len(r.sorted) == 1 {
		return nil
	}
	return r.sorted
}

func (r *eventRows) reset() {
	r.resetState()
	clear(r.runs) // drop the strings
	r.runs = r.runs[:0]
	r.time, r.timeNs = r.time[:0], r.timeNs[:0]
	r.host, r.typ, r.comm, r.saddr, r.daddr, r.probeID = r.host[:0], r.typ[:0], r.comm[:0], r.saddr[:0], r.daddr[:0], r.probeID[:0]
	r.pid, r.tid, r.hsRetrans, r.segments, r.segsOut = r.pid[:0], r.tid[:0], r.hsRetrans[:0], r.segments[:0], r.segsOut[:0]
	r.family, r.oldState, r.newState, r.owner, r.side = r.family[:0], r.oldState[:0], r.newState[:0], r.owner[:0], r.side[:0]
	r.sport, r.dport = r.sport[:0], r.dport[:0]
	r.errno = r.errno[:0]
	r.durationUs, r.sockID, r.cgroup, r.hsUs = r.durationUs[:0], r.sockID[:0], r.cgroup[:0], r.hsUs[:0]
	r.cookie, r.seq, r.sSeq = r.cookie[:0], r.seq[:0], r.sSeq[:0]
}

func b2u(b bool) uint8 {
	if b {
		return 1
	}
	return 0
}
