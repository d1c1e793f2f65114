package socktable

import (
	"errors"
	"testing"
	"unsafe"

	"github.com/netpulse/netpulse/lib/eventpb"
)

func TestEntryIsCompact(t *testing.T) {
	if n := unsafe.Sizeof(entry{}); n > 96 {
		t.Errorf("entry is %d bytes, budget 96", n)
	}
}

func TestClientLifecycle(t *testing.T) {
	tb := New(10)
	curl := owner(ownTask, 100, "curl", 7)

	// connect(): the kernel has not picked the source port yet.
	mustApply(t, tb, ev(1, t0, stClose, stSynSent, sport(0), curl, side(sideClient)))
	want := Entry{SockID: 1, Family: v4, State: stSynSent, StateSince: t0, Src: ap("10.0.0.1:0"), Dst: ap("10.0.0.2:80"),
		Side: sideClient, PID: 100, Comm: "curl", CgroupID: 7, OwnerSource: ownTask}
	if got := mustGet(t, tb, 1); got != want {
		t.Fatalf("after SYN_SENT:\n got %+v\nwant %+v", got, want)
	}

	// The SYN-ACK arrives in softirq: no owner, the real port, a cookie.
	mustApply(t, tb, ev(1, t0+2*ms, stSynSent, stEst, cookie(77)))
	want.State, want.StateSince, want.Src, want.Cookie = stEst, t0+2*ms, ap("10.0.0.1:40000"), 77
	if got := mustGet(t, tb, 1); got != want {
		t.Fatalf("after ESTABLISHED:\n got %+v\nwant %+v", got, want)
	}

	// A retransmit is not a state change: state and since stay.
	mustApply(t, tb, ev(1, t0+5*ms, 0, stEst, typ(eventpb.EventType_EVENT_TYPE_RETRANSMIT)))
	if got := mustGet(t, tb, 1); got != want {
		t.Fatalf("after a retransmit:\n got %+v\nwant %+v", got, want)
	}

	mustApply(t, tb,
		ev(1, t0+10*ms, stEst, stFinWait1, curl),
		ev(1, t0+11*ms, stFinWait1, stFinWait2))
	want.State, want.StateSince = stFinWait2, t0+11*ms
	if got := mustGet(t, tb, 1); got != want {
		t.Fatalf("after FIN_WAIT2:\n got %+v\nwant %+v", got, want)
	}

	mustApply(t, tb, ev(1, t0+20*ms, stFinWait2, stClose))
	if _, ok := tb.Get(1); ok || tb.Len() != 0 {
		t.Fatalf("closed socket still in the table (len %d)", tb.Len())
	}
	if st := tb.Stats(); st.Comms != 0 || st.Sockets != 0 {
		t.Errorf("stats after close: %+v", st)
	}
	// A CLOSE for a socket the table never saw creates nothing.
	mustApply(t, tb, ev(2, t0+30*ms, stSynSent, stClose))
	if tb.Len() != 0 {
		t.Errorf("CLOSE of an unknown socket made an entry")
	}
}

func TestServerLifecycleAndOwnerFill(t *testing.T) {
	tb := New(10)
	nginx := owner(ownTask, 200, "nginx", 9)
	lst := []evOpt{addrs("0.0.0.0:80", "0.0.0.0:0"), nginx}
	srv := addrs("10.0.0.1:80", "10.0.0.5:51000")

	mustApply(t, tb, ev(1, t0, stClose, stListen, lst...))
	if got := mustGet(t, tb, 1); got.Side != sideServer || got.State != stListen || got.PID != 200 {
		t.Fatalf("listener: %+v", got)
	}

	// The handshake completes in softirq; the probe knows the listener's owner.
	mustApply(t, tb, ev(2, t0+ms, stSynRecv, stEst, srv, owner(ownListener, 200, "nginx", 9)))
	got := mustGet(t, tb, 2)
	if got.Side != sideServer || got.OwnerSource != ownListener || got.Src != ap("10.0.0.1:80") {
		t.Fatalf("accepted socket: %+v", got)
	}

	// An event in softirq gets the listener's owner, marked as such.
	e := ev(2, t0+2*ms, 0, stEst, srv, typ(eventpb.EventType_EVENT_TYPE_RETRANSMIT))
	if !tb.FillOwner(e) || e.Pid != 200 || e.Comm != "nginx" || e.CgroupId != 9 || e.OwnerSource != ownListener {
		t.Fatalf("fill from the listener owner: %+v", e)
	}
	// An event that already has the listener's owner gains nothing.
	e = ev(2, t0+2*ms, 0, stEst, srv, owner(ownListener, 200, "nginx", 9))
	if tb.FillOwner(e) {
		t.Fatalf("LISTENER filled with LISTENER: %+v", e)
	}

	// accept() and a read in the worker: the real owner.
	mustApply(t, tb, ev(2, t0+3*ms, 0, stEst, srv, typ(eventpb.EventType_EVENT_TYPE_RETRANSMIT), owner(ownTask, 201, "nginx-worker", 9)))
	// The peer's FIN arrives in softirq: the victim task is not the owner.
	fin := ev(2, t0+4*ms, stEst, stCloseWait, srv)
	if !tb.FillOwner(fin) || fin.Pid != 201 || fin.Comm != "nginx-worker" || fin.OwnerSource != ownSocket {
		t.Fatalf("fill of the FIN event: %+v", fin)
	}
	mustApply(t, tb, fin)
	// A LISTENER-owned event does not override the worker.
	mustApply(t, tb, ev(2, t0+5*ms, 0, stCloseWait, srv, typ(eventpb.EventType_EVENT_TYPE_RETRANSMIT), owner(ownListener, 200, "nginx", 9)))
	want := Entry{SockID: 2, Family: v4, State: stCloseWait, StateSince: t0 + 4*ms, Src: ap("10.0.0.1:80"), Dst: ap("10.0.0.5:51000"),
		Side: sideServer, PID: 201, Comm: "nginx-worker", CgroupID: 9, OwnerSource: ownSocket}
	if got := mustGet(t, tb, 2); got != want {
		t.Fatalf("in CLOSE_WAIT:\n got %+v\nwant %+v", got, want)
	}
	// An event in the owner's context is left alone.
	task := ev(2, t0+6*ms, stCloseWait, stLastAck, srv, owner(ownTask, 201, "nginx-worker", 9))
	if tb.FillOwner(task) {
		t.Fatal("filled an event that had its owner")
	}
	mustApply(t, tb, task, ev(2, t0+7*ms, stLastAck, stClose, srv))
	if _, ok := tb.Get(2); ok {
		t.Fatal("closed socket still there")
	}
	// The table knows nothing about socket 3.
	if tb.FillOwner(ev(3, t0, stEst, stCloseWait)) {
		t.Fatal("filled an unknown socket")
	}
	if st := tb.Stats(); st.OwnerFills != 2 || st.Sockets != 1 || st.Comms != 1 {
		t.Errorf("stats %+v", st)
	}
}

func TestSideInferredWhenEventsDoNotSay(t *testing.T) {
	tb := New(10)
	mustApply(t, tb,
		ev(1, t0, stClose, stSynSent),
		ev(2, t0, stSynRecv, stEst, addrs("10.0.0.1:80", "10.0.0.9:1234")),
		ev(3, t0, stEst, stCloseWait, addrs("10.0.0.1:81", "10.0.0.9:1234")))
	for id, want := range map[uint64]eventpb.Side{1: sideClient, 2: sideServer, 3: eventpb.Side_SIDE_UNSPECIFIED} {
		if got := mustGet(t, tb, id).Side; got != want {
			t.Errorf("socket %d: side %v, want %v", id, got, want)
		}
	}
}

func TestMissedTransitionIsEstimated(t *testing.T) {
	tb := New(10)
	// First sight of a socket through a reset event: in ESTABLISHED since
	// at least then.
	mustApply(t, tb, ev(1, t0, 0, stEst, typ(eventpb.EventType_EVENT_TYPE_RESET_SENT)))
	if got := mustGet(t, tb, 1); got.State != stEst || got.StateSince != t0 || !got.AgeEstimated {
		t.Fatalf("%+v", got)
	}
	// Its next state change is exact.
	mustApply(t, tb, ev(1, t0+ms, stEst, stCloseWait))
	if got := mustGet(t, tb, 1); got.StateSince != t0+ms || got.AgeEstimated {
		t.Fatalf("%+v", got)
	}
}

func TestBadEvents(t *testing.T) {
	tb := New(10)
	for name, e := range map[string]*eventpb.Event{
		"no sock_id":       ev(0, t0, stClose, stSynSent),
		"no family":        ev(1, t0, stClose, stSynSent, func(e *eventpb.Event) { e.Family = 0 }),
		"short address":    ev(1, t0, stClose, stSynSent, func(e *eventpb.Event) { e.Saddr = e.Saddr[:3] }),
		"v6 with v4 addrs": ev(1, t0, stClose, stSynSent, func(e *eventpb.Event) { e.Family = v6 }),
		"state 0":          ev(1, t0, stClose, 0),
		"state 13":         ev(1, t0, stClose, 13),
		"port 70000":       ev(1, t0, stClose, stSynSent, sport(70000)),
	} {
		if err := tb.Apply(e); !errors.Is(err, ErrBadEvent) {
			t.Errorf("%s: error %v", name, err)
		}
	}
	if st := tb.Stats(); st.BadEvents != 7 || st.Sockets != 0 {
		t.Errorf("stats %+v", st)
	}
}

func TestEvictionLeastRecentlyUpdated(t *testing.T) {
	tb := New(3)
	mustApply(t, tb,
		ev(1, t0, stClose, stSynSent, owner(ownTask, 1, "a", 0)),
		ev(2, t0, stClose, stSynSent, owner(ownTask, 2, "b", 0)),
		ev(3, t0, stClose, stSynSent, owner(ownTask, 3, "c", 0)),
		ev(1, t0+ms, stSynSent, stEst), // 2 is now the least recently updated
		ev(4, t0+2*ms, stClose, stSynSent, owner(ownTask, 4, "d", 0)))
	if _, ok := tb.Get(2); ok {
		t.Error("socket 2 not evicted")
	}
	for _, id := range []uint64{1, 3, 4} {
		mustGet(t, tb, id)
	}
	mustApply(t, tb, ev(5, t0+3*ms, stClose, stSynSent)) // evicts 3
	if _, ok := tb.Get(3); ok {
		t.Error("socket 3 not evicted")
	}
	if st := tb.Stats(); st.Evictions != 2 || st.Sockets != 3 || st.Comms != 2 {
		t.Errorf("stats %+v (comms of 1 and 4 left)", st)
	}
	// Freed slots are reused: the table never grows past its bound.
	for i := range 100 {
		mustApply(t, tb, ev(uint64(10+i), t0+int64(4+i)*ms, stClose, stSynSent))
	}
	if tb.slots.slots() != 3 || tb.Len() != 3 {
		t.Errorf("%d slots, %d sockets for a bound of 3", tb.slots.slots(), tb.Len())
	}
}

func TestInterner(t *testing.T) {
	in := newInterner()
	a := in.ref("nginx")
	b := in.ref("nginx")
	c := in.ref("curl")
	if a != b || a == c || in.ref("") != 0 || in.len() != 2 {
		t.Fatalf("ids %d %d %d", a, b, c)
	}
	in.unref(a)
	if in.str(b) != "nginx" {
		t.Fatal("string dropped while still used")
	}
	in.unref(b)
	if in.len() != 1 {
		t.Fatalf("%d strings, want 1", in.len())
	}
	if d := in.ref("sshd"); d != a {
		t.Errorf("freed id %d not reused (got %d)", a, d)
	}
}
