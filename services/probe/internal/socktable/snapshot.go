package socktable

import (
	"cmp"
	"slices"
	"strings"
	"time"

	"github.com/netpulse/netpulse/lib/eventpb"
)

// groupKey is what a SocketGroup counts sockets by.
type groupKey struct {
	cgroupID uint64
	pid      uint32
	comm     uint32
	port     uint16
	state    uint8
	side     uint8
}

type groupCount struct {
	key   groupKey
	count uint32
}

// snapshotScratch is reused from snapshot to snapshot.
type snapshotScratch struct {
	counts    map[groupKey]uint32
	groups    []groupCount
	closeWait []int32
}

// Snapshot fills dst (a new message when nil) with the table's summary at
// now and returns it. It reuses dst's groups and sockets, so a snapshot
// into the previous one's message allocates next to nothing. It sets
// time_unix_nano, groups, groups_cut, close_wait, close_wait_total,
// close_wait_cut, sockets_total and seeded; seq, the TCP counters and
// interval_ms are the caller's.
//
// Groups count the sockets per (state, pid, comm, cgroup, local port,
// side); client sockets count under local port 0, since their ephemeral
// ports would make one group per socket. The maxGroups largest groups are
// kept (ties broken by state, pid, port, side, cgroup, comm, so equal
// tables give equal snapshots). close_wait lists the maxCloseWait oldest
// CLOSE_WAIT sockets, oldest first. A limit <= 0 keeps none.
func (t *Table) Snapshot(dst *eventpb.Snapshot, now time.Time, maxGroups, maxCloseWait int) *eventpb.Snapshot {
	if dst == nil {
		dst = &eventpb.Snapshot{}
	}
	sc := &t.snap
	if sc.counts == nil {
		sc.counts = make(map[groupKey]uint32)
	}
	clear(sc.counts)
	sc.closeWait = sc.closeWait[:0]
	for idx := t.head; idx != nilIdx; idx = t.at(idx).next {
		e := t.at(idx)
		k := groupKey{cgroupID: e.cgroupID, pid: e.pid, comm: e.comm, state: e.state, side: e.side}
		if e.side != uint8(eventpb.Side_SIDE_CLIENT) {
			k.port = e.sport
		}
		sc.counts[k]++
		if e.state == uint8(eventpb.TcpState_TCP_STATE_CLOSE_WAIT) {
			sc.closeWait = append(sc.closeWait, idx)
		}
	}

	sc.groups = sc.groups[:0]
	for k, c := range sc.counts {
		sc.groups = append(sc.groups, groupCount{key: k, count: c})
	}
	slices.SortFunc(sc.groups, t.compareGroups)
	keep := min(len(sc.groups), max(maxGroups, 0))
	dst.Groups = reuse(dst.Groups, keep)
	for i, g := range sc.groups[:keep] {
		out := dst.Groups[i]
		out.State = eventpb.TcpState(g.key.state)
		out.Pid = g.key.pid
		out.Comm = t.comms.str(g.key.comm)
		out.CgroupId = g.key.cgroupID
		out.LocalPort = uint32(g.key.port)
		out.Count = g.count
		out.Side = eventpb.Side(g.key.side)
	}
	dst.GroupsCut = uint32(len(sc.groups) - keep)

	slices.SortFunc(sc.closeWait, t.compareAge)
	keep = min(len(sc.closeWait), max(maxCloseWait, 0))
	dst.CloseWait = reuse(dst.CloseWait, keep)
	nowNs := now.UnixNano()
	for i, idx := range sc.closeWait[:keep] {
		t.fillSocket(dst.CloseWait[i], t.at(idx), nowNs)
	}
	dst.CloseWaitTotal = uint32(len(sc.closeWait))
	dst.CloseWaitCut = uint32(len(sc.closeWait) - keep)

	dst.TimeUnixNano = uint64(nowNs)
	dst.SocketsTotal = uint32(t.live)
	dst.Seeded = t.seeded
	return dst
}

func (t *Table) fillSocket(out *eventpb.SnapshotSocket, e *entry, nowNs int64) {
	alen := 16
	if e.family == uint8(eventpb.Family_FAMILY_IPV4) {
		alen = 4
	}
	out.SockId = e.sockID
	out.Cookie = e.cookie
	out.Pid = e.pid
	out.Comm = t.comms.str(e.comm)
	out.CgroupId = e.cgroupID
	out.OwnerSource = eventpb.OwnerSource(e.owner)
	out.Family = eventpb.Family(e.family)
	out.Saddr = append(out.Saddr[:0], e.saddr[:alen]...)
	out.Daddr = append(out.Daddr[:0], e.daddr[:alen]...)
	out.Sport = uint32(e.sport)
	out.Dport = uint32(e.dport)
	out.Side = eventpb.Side(e.side)
	out.AgeUs = uint64(max(nowNs-e.since, 0)) / 1000
	out.AgeEstimated = e.flags&flagEstimated != 0
	out.RecvQueue = e.rqueue
}

// compareGroups puts the largest groups first, then orders by key.
func (t *Table) compareGroups(a, b groupCount) int {
	if c := cmp.Compare(b.count, a.count); c != 0 {
		return c
	}
	x, y := a.key, b.key
	if c := cmp.Compare(x.state, y.state); c != 0 {
		return c
	}
	if c := cmp.Compare(x.pid, y.pid); c != 0 {
		return c
	}
	if c := cmp.Compare(x.port, y.port); c != 0 {
		return c
	}
	if c := cmp.Compare(x.side, y.side); c != 0 {
		return c
	}
	if c := cmp.Compare(x.cgroupID, y.cgroupID); c != 0 {
		return c
	}
	return strings.Compare(t.comms.str(x.comm), t.comms.str(y.comm))
}

// compareAge puts the sockets that entered their state first first.
func (t *Table) compareAge(a, b int32) int {
	x, y := t.at(a), t.at(b)
	if c := cmp.Compare(x.since, y.since); c != 0 {
		return c
	}
	if c := cmp.Compare(x.sockID, y.sockID); c != 0 {
		return c
	}
	return cmp.Compare(x.cookie, y.cookie)
}

// reuse returns s with length n, keeping the messages it already holds
// (beyond its length too) and allocating only the missing ones.
func reuse[T any](s []*T, n int) []*T {
	if cap(s) < n {
		s = append(s[:cap(s)], make([]*T, n-cap(s))...)
	}
	s = s[:n]
	for i := range s {
		if s[i] == nil {
			s[i] = new(T)
		}
	}
	return s
}

// View is one socket of the table as Each hands it out: only valid
// during the call.
type View struct {
	Family       uint8 // eventpb.Family value (4 or 6)
	State        uint8 // eventpb.TcpState
	Side         uint8 // eventpb.Side
	Saddr, Daddr *[16]byte
	Sport, Dport uint16
	Pid          uint32
	Comm         string
	CgroupID     uint64
}

// Each calls fn for every socket of the table.
func (t *Table) Each(fn func(v *View)) {
	var v View
	for idx := t.head; idx != nilIdx; idx = t.at(idx).next {
		e := t.at(idx)
		v = View{
			Family: e.family, State: e.state, Side: e.side, Saddr: &e.saddr, Daddr: &e.daddr,
			Sport: e.sport, Dport: e.dport, Pid: e.pid, Comm: t.comms.str(e.comm), CgroupID: e.cgroupID,
		}
		fn(&v)
	}
}
