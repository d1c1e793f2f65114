// Package endpoints counts, per local address and remote endpoint, the
// sockets that hold a 4-tuple after their connection ended: TIME_WAIT, and
// FIN_WAIT2 (this host closed, the peer has not). Ephemeral ports run out
// towards one endpoint, not host-wide, and a peer that never closes shows
// as FIN_WAIT2 sockets towards it, so both are grouped by endpoint.
//
// TIME_WAIT sockets never pass the state tracepoint and belong to no
// process, so a Tracker combines three sources at each snapshot: the
// kernel's socket dump filtered to those two states (exact, in the probe's
// network namespace), the socket table's live client sockets (the other
// 4-tuples in use), and, from the state tracepoint, the processes that
// close connections towards each endpoint and how many entered TIME_WAIT
// since the last snapshot (every namespace).
package endpoints

import (
	"cmp"
	"net/netip"
	"slices"

	"github.com/netpulse/netpulse/lib/eventpb"
	"github.com/netpulse/netpulse/services/probe/internal/sockdiag"
	"github.com/netpulse/netpulse/services/probe/internal/socktable"
)

// Key is one group: client side, local address -> remote daddr:dport;
// server side (a listener's local port), local address:localPort <-
// remote daddr, dport 0.
type Key struct {
	Family    uint8 // eventpb.Family value: 4 or 6
	Saddr     [16]byte
	Daddr     [16]byte
	Dport     uint16
	LocalPort uint16 // server side only
}

// Owner is a process, as the probe attributes sockets.
type Owner struct {
	Pid      uint32
	Comm     string
	CgroupID uint64
}

// closer is what the tracepoint taught about one client-side endpoint.
type closer struct {
	owner   Owner
	entered uint32 // into TIME_WAIT since the last Fill
	active  bool   // an event since the last Fill
}

type group struct {
	key                Key
	owner              Owner
	timeWait, finWait2 uint32
	live, entered      uint32
	oldestFinWait2Us   uint64
}

func (g *group) used() uint32 { return g.timeWait + g.finWait2 + g.live }

// Tracker keeps the closers between snapshots and builds the groups of
// each. Not safe for concurrent use.
type Tracker struct {
	maxClosers int
	closers    map[Key]*closer
	entered    uint64 // into TIME_WAIT since the last Fill, every endpoint

	// Scratch, reused from snapshot to snapshot.
	groups    map[Key]*group
	list      []*group
	listening map[uint16]bool
	tw, fw2   uint32 // dumped
	read      bool   // the dump succeeded

	// Forgotten counts events towards endpoints not remembered because
	// maxClosers were: their owner and TIME_WAIT entries are missing from
	// the groups (the totals still count them).
	Forgotten uint64
}

// New makes a Tracker that remembers up to maxClosers endpoints' closers.
func New(maxClosers int) *Tracker {
	return &Tracker{
		maxClosers: maxClosers, closers: map[Key]*closer{},
		groups: map[Key]*group{}, listening: map[uint16]bool{},
	}
}

// Observe takes every event the probe decodes; it keeps state changes of
// connections this host opened that this host closes.
func (t *Tracker) Observe(ev *eventpb.Event) {
	if ev.Type != eventpb.EventType_EVENT_TYPE_STATE_CHANGE {
		return
	}
	intoTimeWait := ev.NewState == eventpb.TcpState_TCP_STATE_CLOSE &&
		(ev.OldState == eventpb.TcpState_TCP_STATE_FIN_WAIT2 || ev.OldState == eventpb.TcpState_TCP_STATE_CLOSING)
	closing := ev.OldState == eventpb.TcpState_TCP_STATE_ESTABLISHED && ev.NewState == eventpb.TcpState_TCP_STATE_FIN_WAIT1
	if !intoTimeWait && !closing {
		return
	}
	if intoTimeWait {
		t.entered++
	}
	if ev.Side != eventpb.Side_SIDE_CLIENT {
		return // one endpoint per remote port: nothing to group
	}
	k, ok := eventKey(ev)
	if !ok {
		return
	}
	c := t.closers[k]
	if c == nil {
		if len(t.closers) >= t.maxClosers {
			t.Forgotten++
			return
		}
		c = &closer{}
		t.closers[k] = c
	}
	c.active = true
	if intoTimeWait {
		c.entered++
	}
	// ESTABLISHED -> FIN_WAIT1 runs in the closing process; the later
	// transitions run in softirq and carry the owner the table knew.
	if ev.Pid != 0 && (closing || c.owner.Pid == 0) {
		c.owner = Owner{Pid: ev.Pid, Comm: ev.Comm, CgroupID: ev.CgroupId}
	}
}

func eventKey(ev *eventpb.Event) (Key, bool) {
	k := Key{Dport: uint16(ev.Dport)}
	switch {
	case ev.Family == eventpb.Family_FAMILY_IPV4 && len(ev.Saddr) == 4 && len(ev.Daddr) == 4:
		k.Family = 4
	case ev.Family == eventpb.Family_FAMILY_IPV6 && len(ev.Saddr) == 16 && len(ev.Daddr) == 16:
		k.Family = 6
	default:
		return k, false
	}
	copy(k.Saddr[:], ev.Saddr)
	copy(k.Daddr[:], ev.Daddr)
	return k, true
}

// Dump reads the kernel's TIME_WAIT and FIN_WAIT2 sockets (a
// sockdiag.Dumper's DumpFunc over those states).
type Dump func(states sockdiag.StateSet, fn func(s *sockdiag.Socket)) error

// States are the states Fill dumps.
const States = sockdiag.StateSet(1<<sockdiag.StateTimeWait | 1<<sockdiag.StateFinWait2)

// A snapshot's groups are built in three steps: Listening and Fill under
// the lock that guards the table and Observe, ReadKernel between them
// without it (a dump of tens of thousands of TIME_WAIT sockets must not
// hold up the events).

// Listening notes the table's listening ports: dumped sockets on them are
// connections this host accepted, grouped by local port.
func (t *Tracker) Listening(table *socktable.Table) {
	clear(t.groups)
	clear(t.listening)
	t.tw, t.fw2, t.read = 0, 0, false
	table.Each(func(v *socktable.View) {
		if v.State == uint8(eventpb.TcpState_TCP_STATE_LISTEN) {
			t.listening[v.Sport] = true
		}
	})
}

// ReadKernel counts the kernel's TIME_WAIT and FIN_WAIT2 sockets into the
// groups. finTimeoutS (tcp_fin_timeout) ages orphaned FIN_WAIT2 sockets,
// whose dump gives the time left until they are reaped. On error the
// groups are left to the table and the tracepoint (Fill then sets
// endpoints_read false).
func (t *Tracker) ReadKernel(dump Dump, finTimeoutS uint32) error {
	err := dump(States, func(s *sockdiag.Socket) {
		g := t.group(socketKey(s, t.listening))
		if s.State == sockdiag.StateTimeWait {
			t.tw++
			g.timeWait++
			return
		}
		t.fw2++
		g.finWait2++
		// A socket still open waits since the peer acknowledged our FIN;
		// an orphan (closed, kept as a timewait socket) has the rest of
		// tcp_fin_timeout left.
		ageMs := uint64(s.Info.LastAckRecvMs)
		if s.Inode == 0 && s.Info.Len == 0 {
			ageMs = uint64(max(int64(finTimeoutS)*1000-int64(s.ExpiresMs), 0))
		}
		g.oldestFinWait2Us = max(g.oldestFinWait2Us, ageMs*1000)
	})
	t.read = err == nil
	return err
}

// Fill adds the table's live client sockets and the closers to the groups
// and sets dst's endpoint fields but the settings: endpoints (the largest
// groups by 4-tuples in use, up to maxGroups), endpoints_cut,
// time_wait_total, fin_wait2_total, time_wait_entered, endpoints_read.
func (t *Tracker) Fill(dst *eventpb.Snapshot, table *socktable.Table, maxGroups int) {
	table.Each(func(v *socktable.View) {
		if v.Side != uint8(eventpb.Side_SIDE_CLIENT) || v.State == uint8(eventpb.TcpState_TCP_STATE_LISTEN) ||
			v.State == uint8(eventpb.TcpState_TCP_STATE_FIN_WAIT2) {
			return // sock_diag counts FIN_WAIT2 (and TIME_WAIT, never in the table)
		}
		g := t.group(Key{Family: v.Family, Saddr: *v.Saddr, Daddr: *v.Daddr, Dport: v.Dport})
		g.live++
		if g.owner.Pid == 0 && v.Pid != 0 {
			g.owner = Owner{Pid: v.Pid, Comm: v.Comm, CgroupID: v.CgroupID}
		}
	})

	for k, c := range t.closers {
		if !c.active {
			if g := t.groups[k]; g == nil || g.timeWait+g.finWait2 == 0 {
				delete(t.closers, k) // nothing left of its closes
				continue
			}
		}
		g := t.group(k)
		g.entered = c.entered
		if c.owner.Pid != 0 {
			g.owner = c.owner // the closer names who makes the TIME_WAIT
		}
		c.entered, c.active = 0, false
	}

	t.list = t.list[:0]
	for _, g := range t.groups {
		t.list = append(t.list, g)
	}
	slices.SortFunc(t.list, compareGroups)
	keep := min(len(t.list), max(maxGroups, 0))
	dst.Endpoints = reuse(dst.Endpoints, keep)
	for i, g := range t.list[:keep] {
		fillGroup(dst.Endpoints[i], g)
	}
	dst.EndpointsCut = uint32(len(t.list) - keep)
	dst.TimeWaitTotal, dst.FinWait2Total, dst.EndpointsRead = t.tw, t.fw2, t.read
	dst.TimeWaitEntered, t.entered = t.entered, 0
}

func (t *Tracker) group(k Key) *group {
	g := t.groups[k]
	if g == nil {
		g = &group{key: k}
		t.groups[k] = g
	}
	return g
}

// socketKey is the group of a dumped socket: server side when its local
// port is a listener's.
func socketKey(s *sockdiag.Socket, listening map[uint16]bool) Key {
	var k Key
	k.Family = 4
	if s.Family != 2 { // AF_INET
		k.Family = 6
	}
	putAddr(&k.Saddr, s.Src.Addr())
	putAddr(&k.Daddr, s.Dst.Addr())
	if listening[s.Src.Port()] {
		k.LocalPort = s.Src.Port()
	} else {
		k.Dport = s.Dst.Port()
	}
	return k
}

// putAddr stores a as the table does: IPv4 in the first 4 bytes.
func putAddr(dst *[16]byte, a netip.Addr) {
	if a.Is4() {
		b := a.As4()
		copy(dst[:], b[:])
		return
	}
	*dst = a.As16()
}

func fillGroup(out *eventpb.EndpointGroup, g *group) {
	alen := 16
	out.Family = eventpb.Family_FAMILY_IPV6
	if g.key.Family == 4 {
		alen, out.Family = 4, eventpb.Family_FAMILY_IPV4
	}
	out.Saddr = append(out.Saddr[:0], g.key.Saddr[:alen]...)
	out.Daddr = append(out.Daddr[:0], g.key.Daddr[:alen]...)
	out.Dport = uint32(g.key.Dport)
	out.LocalPort = uint32(g.key.LocalPort)
	out.Pid, out.Comm, out.CgroupId = g.owner.Pid, g.owner.Comm, g.owner.CgroupID
	out.TimeWait, out.FinWait2, out.Live = g.timeWait, g.finWait2, g.live
	out.TimeWaitEntered = g.entered
	out.FinWait2OldestUs = g.oldestFinWait2Us
}

// compareGroups puts the groups with the most 4-tuples in use first, then
// orders by key so that equal inputs give equal snapshots.
func compareGroups(a, b *group) int {
	if c := cmp.Compare(b.used(), a.used()); c != 0 {
		return c
	}
	if c := cmp.Compare(b.entered, a.entered); c != 0 {
		return c
	}
	x, y := &a.key, &b.key
	if c := cmp.Compare(x.Family, y.Family); c != 0 {
		return c
	}
	if c := slices.Compare(x.Daddr[:], y.Daddr[:]); c != 0 {
		return c
	}
	if c := cmp.Compare(x.Dport, y.Dport); c != 0 {
		return c
	}
	if c := slices.Compare(x.Saddr[:], y.Saddr[:]); c != 0 {
		return c
	}
	return cmp.Compare(x.LocalPort, y.LocalPort)
}

func reuse(s []*eventpb.EndpointGroup, n int) []*eventpb.EndpointGroup {
	for len(s) < n {
		s = append(s, &eventpb.EndpointGroup{})
	}
	for _, g := range s[n:] {
		g.Reset()
	}
	return s[:n]
}
