package socktable

import (
	"net/netip"
	"testing"

	"github.com/netpulse/netpulse/lib/eventpb"
)

// Short names for the enums the tests use a lot.
const (
	stEst       = eventpb.TcpState_TCP_STATE_ESTABLISHED
	stSynSent   = eventpb.TcpState_TCP_STATE_SYN_SENT
	stSynRecv   = eventpb.TcpState_TCP_STATE_SYN_RECV
	stFinWait1  = eventpb.TcpState_TCP_STATE_FIN_WAIT1
	stFinWait2  = eventpb.TcpState_TCP_STATE_FIN_WAIT2
	stClose     = eventpb.TcpState_TCP_STATE_CLOSE
	stCloseWait = eventpb.TcpState_TCP_STATE_CLOSE_WAIT
	stLastAck   = eventpb.TcpState_TCP_STATE_LAST_ACK
	stListen    = eventpb.TcpState_TCP_STATE_LISTEN

	sideClient = eventpb.Side_SIDE_CLIENT
	sideServer = eventpb.Side_SIDE_SERVER

	ownUnknown  = eventpb.OwnerSource_OWNER_SOURCE_UNKNOWN
	ownTask     = eventpb.OwnerSource_OWNER_SOURCE_TASK
	ownSocket   = eventpb.OwnerSource_OWNER_SOURCE_SOCKET
	ownListener = eventpb.OwnerSource_OWNER_SOURCE_LISTENER
	ownScan     = eventpb.OwnerSource_OWNER_SOURCE_SCAN

	v4 = eventpb.Family_FAMILY_IPV4
	v6 = eventpb.Family_FAMILY_IPV6
)

// GetSeeded returns the seeded socket with this cookie that no event has
// named yet.
func (t *Table) GetSeeded(cookie uint64) (Entry, bool) {
	idx, ok := t.byCookie[cookie]
	if !ok {
		return Entry{}, false
	}
	return t.entryView(idx), true
}

// BeginSeed makes the table remember closing sockets again, as for a Seed
// after the first (the probe seeds once: New tables start so, and resyncs
// use BeginResync).
func (t *Table) BeginSeed() {
	t.recording = true
}

// t0 is an arbitrary wall-clock time (Unix ns) the synthetic events start at.
const t0 = int64(1_800_000_000_000_000_000)

const ms = int64(1_000_000)

type evOpt func(*eventpb.Event)

// ev makes a state change of socket id at time at, from 10.0.0.1:40000 to
// 10.0.0.2:80 unless opts say otherwise, with no known owner.
func ev(id uint64, at int64, from, to eventpb.TcpState, opts ...evOpt) *eventpb.Event {
	e := &eventpb.Event{
		Type: eventpb.EventType_EVENT_TYPE_STATE_CHANGE, TimeUnixNano: uint64(at), SockId: id,
		Family: v4, Saddr: []byte{10, 0, 0, 1}, Daddr: []byte{10, 0, 0, 2}, Sport: 40000, Dport: 80,
		OldState: from, NewState: to, Pid: 4242, Comm: "softirq-victim",
	}
	for _, o := range opts {
		o(e)
	}
	return e
}

func addrs(src, dst string) evOpt {
	return func(e *eventpb.Event) {
		s, d := netip.MustParseAddrPort(src), netip.MustParseAddrPort(dst)
		e.Saddr, e.Daddr = s.Addr().AsSlice(), d.Addr().AsSlice()
		e.Sport, e.Dport = uint32(s.Port()), uint32(d.Port())
		e.Family = v4
		if s.Addr().Is6() {
			e.Family = v6
		}
	}
}

func owner(src eventpb.OwnerSource, pid uint32, comm string, cgroup uint64) evOpt {
	return func(e *eventpb.Event) { e.OwnerSource, e.Pid, e.Comm, e.CgroupId = src, pid, comm, cgroup }
}

func side(s eventpb.Side) evOpt      { return func(e *eventpb.Event) { e.Side = s } }
func cookie(c uint64) evOpt          { return func(e *eventpb.Event) { e.Cookie = c } }
func typ(ty eventpb.EventType) evOpt { return func(e *eventpb.Event) { e.Type, e.OldState = ty, 0 } }
func sport(p uint32) evOpt           { return func(e *eventpb.Event) { e.Sport = p } }

func mustApply(t *testing.T, tb *Table, evs ...*eventpb.Event) {
	t.Helper()
	for _, e := range evs {
		if err := tb.Apply(e); err != nil {
			t.Fatal(err)
		}
	}
}

func mustGet(t *testing.T, tb *Table, id uint64) Entry {
	t.Helper()
	e, ok := tb.Get(id)
	if !ok {
		t.Fatalf("socket %d not in the table", id)
	}
	return e
}

func ap(s string) netip.AddrPort { return netip.MustParseAddrPort(s) }
