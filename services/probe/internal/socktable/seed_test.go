package socktable

import (
	"reflect"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/netpulse/netpulse/lib/eventpb"
	"github.com/netpulse/netpulse/services/probe/internal/sockdiag"
)

// fullSocket gives s the tcp_info only full sockets have (a FIN_WAIT2
// socket without is a timewait one).
func fullSocket(s sockdiag.Socket) sockdiag.Socket {
	s.Info.Len = 232
	return s
}

func diagSock(state uint8, src, dst string, cookie, inode uint64) sockdiag.Socket {
	s := sockdiag.Socket{Family: unix.AF_INET, State: state, Src: ap(src), Dst: ap(dst), Cookie: cookie, Inode: inode}
	if s.Src.Addr().Is6() {
		s.Family = unix.AF_INET6
	}
	return s
}

// seedFixture is a host as sock_diag saw it when the probe started, with
// two sockets that events had already put in the table.
func seedFixture(t *testing.T) (*Table, time.Time) {
	t.Helper()
	tb := New(100)
	// Made between attaching the tracepoints and the dump: known from events.
	mustApply(t, tb,
		ev(500, t0-3*ms, stClose, stSynSent, addrs("10.0.0.1:0", "10.0.0.4:9000"), owner(ownTask, 300, "app", 5)),
		ev(500, t0-2*ms, stSynSent, stEst, addrs("10.0.0.1:40010", "10.0.0.4:9000")),
		// An event after the dump, with the cookie the dump gave it.
		ev(600, t0-ms, stEst, stCloseWait, addrs("10.0.0.1:80", "10.0.0.7:5000"), cookie(21)),
		// Its SYN_SENT is known; the dump saw it ESTABLISHED, the event
		// saying so comes late (see TestSeedDuplicateDroppedByLateEvent).
		ev(900, t0-3*ms, stClose, stSynSent, addrs("10.0.0.1:0", "10.0.0.8:7000")))

	socks := []sockdiag.Socket{
		diagSock(sockdiag.StateListen, "0.0.0.0:80", "0.0.0.0:0", 10, 1000),
		diagSock(sockdiag.StateEstablished, "10.0.0.1:80", "10.0.0.9:5555", 11, 1001),
		diagSock(sockdiag.StateCloseWait, "10.0.0.1:80", "10.0.0.9:5556", 12, 1002),
		diagSock(sockdiag.StateEstablished, "10.0.0.1:40001", "10.0.0.3:443", 13, 1003),
		diagSock(sockdiag.StateTimeWait, "10.0.0.1:40002", "10.0.0.3:443", 14, 0),
		diagSock(sockdiag.StateNewSynRecv, "10.0.0.1:80", "10.0.0.9:5557", 15, 0),
		diagSock(sockdiag.StateEstablished, "[::1]:40003", "[::1]:8080", 16, 1016),
		diagSock(sockdiag.StateFinWait2, "10.0.0.1:40004", "10.0.0.3:443", 17, 0),
		diagSock(sockdiag.StateEstablished, "10.0.0.1:40010", "10.0.0.4:9000", 20, 1020),
		diagSock(sockdiag.StateEstablished, "10.0.0.1:80", "10.0.0.7:5000", 21, 1021),
		diagSock(sockdiag.StateEstablished, "10.0.0.1:40011", "10.0.0.8:7000", 22, 1022),
		diagSock(sockdiag.StateListen, "[::]:8080", "[::]:0", 23, 1023),
		diagSock(sockdiag.StateEstablished, "[::ffff:10.0.0.1]:8080", "[::ffff:10.0.0.6]:6000", 24, 1024),
	}
	socks[2].Info = sockdiag.TCPInfo{Len: 232, LastAckRecvMs: 5000, LastDataRecvMs: 7000}
	socks[7].Info = sockdiag.TCPInfo{Len: 232} // a full socket, not a timewait one
	// A timewait socket in substate FIN_WAIT2 (no tcp_info): not tracked.
	socks = append(socks, diagSock(sockdiag.StateFinWait2, "10.0.0.1:40005", "10.0.0.3:443", 25, 0))
	socks[2].RQueue = 3
	owners := map[uint64]sockdiag.Owner{
		1000: {PID: 200, Comm: "nginx", CgroupID: 9, Procs: 3},
		1001: {PID: 201, Comm: "nginx-worker", CgroupID: 9},
		1002: {PID: 201, Comm: "nginx-worker", CgroupID: 9},
		1003: {PID: 300, Comm: "app", CgroupID: 5},
		1016: {PID: 301, Comm: "app6", CgroupID: 5},
		1020: {PID: 300, Comm: "app", CgroupID: 5},
		1021: {PID: 201, Comm: "nginx-worker", CgroupID: 9},
		1022: {PID: 302, Comm: "late", CgroupID: 5},
		1023: {PID: 400, Comm: "api", CgroupID: 11},
		1024: {PID: 400, Comm: "api", CgroupID: 11},
	}
	now := time.Unix(0, t0)
	res := tb.Seed(socks, owners, now)
	if want := (SeedResult{Added: 9, Merged: 2, Skipped: 3}); res != want {
		t.Fatalf("seed: %+v, want %+v", res, want)
	}
	return tb, now
}

func TestSeed(t *testing.T) {
	tb, now := seedFixture(t)
	nowNs := now.UnixNano()
	nginx := func(e Entry) Entry { e.PID, e.Comm, e.CgroupID, e.OwnerSource = 200, "nginx", 9, ownScan; return e }
	worker := func(e Entry) Entry {
		e.PID, e.Comm, e.CgroupID, e.OwnerSource = 201, "nginx-worker", 9, ownScan
		return e
	}
	app := func(pid uint32, comm string) func(Entry) Entry {
		return func(e Entry) Entry { e.PID, e.Comm, e.CgroupID, e.OwnerSource = pid, comm, 5, ownScan; return e }
	}
	api := func(e Entry) Entry { e.PID, e.Comm, e.CgroupID, e.OwnerSource = 400, "api", 11, ownScan; return e }
	for _, c := range []struct {
		cookie uint64
		want   Entry
	}{
		{10, nginx(Entry{Cookie: 10, Family: v4, State: stListen, StateSince: nowNs, Src: ap("0.0.0.0:80"), Dst: ap("0.0.0.0:0"), Side: sideServer})},
		{11, worker(Entry{Cookie: 11, Family: v4, State: stEst, StateSince: nowNs, Src: ap("10.0.0.1:80"), Dst: ap("10.0.0.9:5555"), Side: sideServer})},
		// CLOSE_WAIT: aged by the last ACK received (the smaller of the two).
		{12, worker(Entry{Cookie: 12, Family: v4, State: stCloseWait, StateSince: nowNs - 5000*ms, Src: ap("10.0.0.1:80"), Dst: ap("10.0.0.9:5556"), Side: sideServer, RecvQueue: 3})},
		{13, app(300, "app")(Entry{Cookie: 13, Family: v4, State: stEst, StateSince: nowNs, Src: ap("10.0.0.1:40001"), Dst: ap("10.0.0.3:443"), Side: sideClient})},
		{16, app(301, "app6")(Entry{Cookie: 16, Family: v6, State: stEst, StateSince: nowNs, Src: ap("[::1]:40003"), Dst: ap("[::1]:8080"), Side: sideClient})},
		// An orphan: no file, no owner.
		{17, Entry{Cookie: 17, Family: v4, State: stFinWait2, StateSince: nowNs, Src: ap("10.0.0.1:40004"), Dst: ap("10.0.0.3:443"), Side: sideClient}},
		// Accepted through a dual-stack listener on [::]:8080.
		{24, api(Entry{Cookie: 24, Family: v6, State: stEst, StateSince: nowNs, Src: ap("[::ffff:10.0.0.1]:8080"), Dst: ap("[::ffff:10.0.0.6]:6000"), Side: sideServer})},
	} {
		got, ok := tb.GetSeeded(c.cookie)
		if !ok {
			t.Errorf("cookie %d not seeded", c.cookie)
			continue
		}
		c.want.AgeEstimated, c.want.Seeded = true, true
		if got != c.want {
			t.Errorf("cookie %d:\n got %+v\nwant %+v", c.cookie, got, c.want)
		}
	}
	for _, skipped := range []uint64{14, 15} {
		if _, ok := tb.GetSeeded(skipped); ok {
			t.Errorf("cookie %d should not be tracked", skipped)
		}
	}

	// Merged into what events had made: event data kept, cookie and owner filled.
	if got := mustGet(t, tb, 500); got.Cookie != 20 || got.OwnerSource != ownTask || got.PID != 300 || got.State != stEst || got.Seeded {
		t.Errorf("socket 500 after merge: %+v", got)
	}
	if got := mustGet(t, tb, 600); got.Cookie != 21 || got.OwnerSource != ownScan || got.PID != 201 || got.State != stCloseWait || got.StateSince != t0-ms {
		t.Errorf("socket 600 after merge: %+v", got)
	}

	wantListeners := []Listener{
		{Family: v6, Addr: ap("[::]:8080"), Cookie: 23, PID: 400, Comm: "api", CgroupID: 11},
		{Family: v4, Addr: ap("0.0.0.0:80"), Cookie: 10, PID: 200, Comm: "nginx", CgroupID: 9},
	}
	if got := tb.Listeners(nil); !reflect.DeepEqual(got, wantListeners) {
		t.Errorf("listeners\n got %+v\nwant %+v", got, wantListeners)
	}
	if st := tb.Stats(); st.Seeded != 9 || st.SeedMerged != 2 || st.SeedSkipped != 3 || st.Sockets != 12 {
		t.Errorf("stats %+v", st)
	}
}

func TestSeededSocketBoundByCookie(t *testing.T) {
	tb, _ := seedFixture(t)
	cw := addrs("10.0.0.1:80", "10.0.0.9:5556")

	// Before Apply, FillOwner finds the seeded socket by cookie.
	e := ev(700, t0+ms, stCloseWait, stLastAck, cw, cookie(12))
	if !tb.FillOwner(e) || e.Pid != 201 || e.Comm != "nginx-worker" || e.OwnerSource != ownScan {
		t.Fatalf("fill: %+v", e)
	}
	e.OwnerSource = ownUnknown // as the kernel sent it
	mustApply(t, tb, e)
	got := mustGet(t, tb, 700)
	if got.Cookie != 12 || got.State != stLastAck || got.StateSince != t0+ms || got.AgeEstimated || !got.Seeded || got.OwnerSource != ownScan {
		t.Fatalf("bound socket: %+v", got)
	}
	if _, ok := tb.GetSeeded(12); ok {
		t.Fatal("still keyed by cookie")
	}
	// After Apply, FillOwner finds it by sock_id.
	e = ev(700, t0+2*ms, 0, stLastAck, cw, typ(eventpb.EventType_EVENT_TYPE_RETRANSMIT))
	if !tb.FillOwner(e) || e.OwnerSource != ownScan {
		t.Fatalf("fill after bind: %+v", e)
	}
	mustApply(t, tb, ev(700, t0+3*ms, stLastAck, stClose, cw))
	if _, ok := tb.Get(700); ok {
		t.Fatal("closed socket still there")
	}

	// A socket whose first event is its close goes at once.
	before := tb.Len()
	mustApply(t, tb, ev(701, t0+4*ms, stEst, stClose, addrs("[::1]:40003", "[::1]:8080"), cookie(16)))
	if _, ok := tb.GetSeeded(16); ok || tb.Len() != before-1 {
		t.Fatalf("seeded socket not removed by its CLOSE (len %d -> %d)", before, tb.Len())
	}
	if st := tb.Stats(); st.Rebound != 2 || st.OwnerFills != 2 {
		t.Errorf("stats %+v", st)
	}
}

func TestSeededSocketBoundByAddresses(t *testing.T) {
	tb, _ := seedFixture(t)
	// No cookie on the event (the kernel read none): addresses and the
	// state the event leaves identify the seeded socket.
	mustApply(t, tb, ev(800, t0+ms, stEst, stFinWait1, addrs("10.0.0.1:40001", "10.0.0.3:443"), owner(ownTask, 300, "app", 5)))
	if got := mustGet(t, tb, 800); got.Cookie != 13 || !got.Seeded || got.State != stFinWait1 {
		t.Fatalf("%+v", got)
	}
	// Listener cookies from sock_diag need not match the socket's: a
	// listener is bound by its addresses even when the event has a cookie.
	mustApply(t, tb, ev(801, t0+2*ms, stListen, stClose, addrs("0.0.0.0:80", "0.0.0.0:0"), cookie(99999)))
	if _, ok := tb.GetSeeded(10); ok {
		t.Fatal("seeded listener not closed")
	}
	// Same addresses, another cookie, not a listener: another socket.
	mustApply(t, tb, ev(802, t0+3*ms, stEst, stCloseWait, addrs("10.0.0.1:80", "10.0.0.9:5555"), cookie(5)))
	if _, ok := tb.GetSeeded(11); !ok {
		t.Fatal("seeded socket taken by an event with another cookie")
	}
	// Same addresses, neither leaving nor entering the state the seeded
	// socket was in: another socket.
	mustApply(t, tb, ev(803, t0+4*ms, stFinWait1, stFinWait2, addrs("10.0.0.1:80", "10.0.0.9:5555")))
	if _, ok := tb.GetSeeded(11); !ok {
		t.Fatal("seeded socket taken by an event from another state")
	}
	if st := tb.Stats(); st.Rebound != 2 {
		t.Errorf("stats %+v", st)
	}
}

func TestSeedDuplicateDroppedByLateEvent(t *testing.T) {
	tb, _ := seedFixture(t)
	// Socket 900 was in SYN_SENT (sport 0) when Seed ran; the dump saw it
	// ESTABLISHED (cookie 22). The event that says so arrives late, without
	// a cookie: the seeded copy goes, its cookie and owner stay.
	n := tb.Len()
	mustApply(t, tb, ev(900, t0-ms, stSynSent, stEst, addrs("10.0.0.1:40011", "10.0.0.8:7000")))
	got := mustGet(t, tb, 900)
	if got.Cookie != 22 || got.PID != 302 || got.OwnerSource != ownScan || got.State != stEst || got.StateSince != t0-ms {
		t.Fatalf("%+v", got)
	}
	if _, ok := tb.GetSeeded(22); ok || tb.Len() != n-1 {
		t.Fatalf("duplicate kept (len %d -> %d)", n, tb.Len())
	}
	if st := tb.Stats(); st.Duplicates != 1 {
		t.Errorf("stats %+v", st)
	}
}

func TestSeedTwice(t *testing.T) {
	tb, now := seedFixture(t)
	n := tb.Len()
	socks := []sockdiag.Socket{
		diagSock(sockdiag.StateCloseWait, "10.0.0.1:40001", "10.0.0.3:443", 13, 1003),   // moved on
		diagSock(sockdiag.StateEstablished, "10.0.0.1:40020", "10.0.0.3:443", 30, 1030), // new
	}
	res := tb.Seed(socks, nil, now.Add(time.Second))
	if want := (SeedResult{Added: 1, Merged: 1}); res != want || tb.Len() != n+1 {
		t.Fatalf("%+v, len %d -> %d", res, n, tb.Len())
	}
	if got, _ := tb.GetSeeded(13); got.State != stCloseWait || got.PID != 300 {
		t.Errorf("re-seeded socket: %+v", got)
	}
}

func TestSeedIndexesReleased(t *testing.T) {
	tb := New(10)
	tb.Seed([]sockdiag.Socket{
		diagSock(sockdiag.StateEstablished, "10.0.0.1:1", "10.0.0.2:2", 1, 0),
		diagSock(sockdiag.StateEstablished, "10.0.0.1:3", "10.0.0.2:4", 2, 0),
	}, nil, time.Unix(0, t0))
	mustApply(t, tb, ev(1, t0+ms, stEst, stFinWait1, addrs("10.0.0.1:1", "10.0.0.2:2"), cookie(1)))
	if len(tb.byCookie) != 1 || len(tb.byTuple) != 1 {
		t.Fatalf("indexes %d %d", len(tb.byCookie), len(tb.byTuple))
	}
	mustApply(t, tb, ev(2, t0+ms, stEst, stClose, addrs("10.0.0.1:3", "10.0.0.2:4")))
	if len(tb.byCookie) != 0 || len(tb.byTuple) != 0 || tb.Len() != 1 {
		t.Fatalf("indexes %d %d, len %d", len(tb.byCookie), len(tb.byTuple), tb.Len())
	}
}

func TestSeedEviction(t *testing.T) {
	tb := New(2)
	tb.Seed([]sockdiag.Socket{
		diagSock(sockdiag.StateEstablished, "10.0.0.1:1", "10.0.0.2:2", 1, 0),
		diagSock(sockdiag.StateEstablished, "10.0.0.1:3", "10.0.0.2:4", 2, 0),
		diagSock(sockdiag.StateEstablished, "10.0.0.1:5", "10.0.0.2:6", 3, 0),
	}, nil, time.Unix(0, t0))
	if _, ok := tb.GetSeeded(1); ok {
		t.Error("oldest seeded socket not evicted")
	}
	// The evicted socket's event makes a fresh entry, not a stale match.
	mustApply(t, tb, ev(9, t0+ms, stEst, stFinWait1, addrs("10.0.0.1:1", "10.0.0.2:2"), cookie(1)))
	if got := mustGet(t, tb, 9); got.Seeded || got.Cookie != 1 {
		t.Errorf("%+v", got)
	}
	if st := tb.Stats(); st.Evictions != 2 || st.Sockets != 2 || len(tb.byCookie) != 1 {
		t.Errorf("stats %+v, %d by cookie", st, len(tb.byCookie))
	}
}

func TestSeedDuplicateOfSocketSeenFirstAfterSeed(t *testing.T) {
	tb, _ := seedFixture(t)
	n := tb.Len()
	// Events from before the dump, still in the ring buffer when Seed ran:
	// a connect whose socket the dump saw ESTABLISHED (cookie 13).
	conn := addrs("10.0.0.1:40001", "10.0.0.3:443")
	mustApply(t, tb, ev(950, t0-5*ms, stClose, stSynSent, sport(0), conn, owner(ownTask, 300, "app", 5)))
	if tb.Len() != n+1 {
		t.Fatalf("len %d, want %d", tb.Len(), n+1)
	}
	mustApply(t, tb, ev(950, t0-4*ms, stSynSent, stEst, conn))
	if _, ok := tb.GetSeeded(13); ok || tb.Len() != n {
		t.Fatalf("seeded copy kept (len %d, want %d)", tb.Len(), n)
	}
	if got := mustGet(t, tb, 950); got.Cookie != 13 || got.OwnerSource != ownTask || got.StateSince != t0-4*ms || got.Seeded {
		t.Fatalf("%+v", got)
	}
	// Well after the dump, a socket entering the state a seeded socket with
	// its addresses was in is another socket, and no duplicate of it.
	mustApply(t, tb, ev(951, t0+2*seedSlack, stSynRecv, stEst, addrs("10.0.0.1:80", "10.0.0.9:5555")))
	mustApply(t, tb, ev(951, t0+2*seedSlack+ms, stEst, stFinWait1, addrs("10.0.0.1:80", "10.0.0.9:5555")))
	if _, ok := tb.GetSeeded(11); !ok {
		t.Error("seeded socket 11 taken by a later socket")
	}
	if st := tb.Stats(); st.Duplicates != 1 || st.Rebound != 0 {
		t.Errorf("stats %+v", st)
	}
}

func TestSeedLeavesOutSocketsClosedMeanwhile(t *testing.T) {
	tb := New(100)
	// Between the dump and Seed: three dumped sockets close, identified by
	// cookie, by addresses (a listener whose sock_diag cookie differs), and
	// by addresses without a cookie.
	mustApply(t, tb,
		ev(10, t0-3*ms, stEst, stClose, addrs("10.0.0.1:40040", "10.0.0.3:443"), cookie(31)),
		ev(11, t0-2*ms, stListen, stClose, addrs("0.0.0.0:81", "0.0.0.0:0"), cookie(999)),
		ev(12, t0-ms, stFinWait2, stClose, addrs("10.0.0.1:40050", "10.0.0.3:443")))
	res := tb.Seed([]sockdiag.Socket{
		diagSock(sockdiag.StateEstablished, "10.0.0.1:40040", "10.0.0.3:443", 31, 1031),
		diagSock(sockdiag.StateListen, "0.0.0.0:81", "0.0.0.0:0", 32, 1032),
		fullSocket(diagSock(sockdiag.StateFinWait2, "10.0.0.1:40050", "10.0.0.3:443", 33, 0)),
		diagSock(sockdiag.StateEstablished, "10.0.0.1:40060", "10.0.0.3:443", 34, 1034),
	}, nil, time.Unix(0, t0))
	if want := (SeedResult{Added: 1, Closed: 3}); res != want {
		t.Fatalf("%+v, want %+v", res, want)
	}
	if _, ok := tb.GetSeeded(34); !ok || tb.Len() != 1 {
		t.Fatalf("len %d", tb.Len())
	}
	// Seed ends the recording; BeginSeed starts it again, AbandonSeed ends it.
	mustApply(t, tb, ev(13, t0+ms, stEst, stClose, cookie(35)))
	if len(tb.closedCookies)+len(tb.closedTuples) != 0 {
		t.Fatal("closes recorded with no seed pending")
	}
	tb.BeginSeed()
	mustApply(t, tb, ev(14, t0+2*ms, stEst, stClose, cookie(36)))
	if len(tb.closedCookies) != 1 {
		t.Fatal("close not recorded after BeginSeed")
	}
	tb.AbandonSeed()
	if len(tb.closedCookies)+len(tb.closedTuples) != 0 {
		t.Fatal("records kept after AbandonSeed")
	}
	if st := tb.Stats(); st.SeedClosed != 3 || st.CloseRecordsLost != 0 {
		t.Errorf("stats %+v", st)
	}
}

func TestCloseRecordsBounded(t *testing.T) {
	tb := New(2)
	for i := range 10 {
		mustApply(t, tb, ev(uint64(i+1), t0, stEst, stClose, cookie(uint64(i+1)), sport(uint32(1000+i))))
	}
	// Each close takes a cookie and an address record: 2*max records hold 2 closes.
	if st := tb.Stats(); st.CloseRecordsLost != 8 || len(tb.closedCookies) != 2 {
		t.Errorf("stats %+v, %d cookies", st, len(tb.closedCookies))
	}
}
