package socktable

import (
	"testing"
	"time"

	"github.com/netpulse/netpulse/services/probe/internal/sockdiag"
)

// dumpOf is a Dump of the given sockets, as DumpFunc would hand them over.
func dumpOf(tb *Table, states sockdiag.StateSet, socks ...sockdiag.Socket) *Dump {
	d := tb.NewDump()
	d.Reset(states)
	for i := range socks {
		d.Add(&socks[i])
	}
	return d
}

// TestResync runs the three repairs on a table whose events were partly
// lost, and checks what must be left alone.
func TestResync(t *testing.T) {
	tb := New(100)
	tb.AbandonSeed()
	mustApply(t, tb,
		// 1: CLOSE_WAIT, confirmed by a first resync, its CLOSE lost later.
		ev(1, t0, stEst, stCloseWait, addrs("10.0.0.1:80", "10.0.0.2:5001"), owner(ownTask, 10, "srv", 1), cookie(101)),
		// 2: ESTABLISHED in the table, CLOSE_WAIT in the kernel (event lost).
		ev(2, t0, stSynSent, stEst, addrs("10.0.0.1:40002", "10.0.0.3:443"), owner(ownTask, 10, "srv", 1)),
		// 3: CLOSE_WAIT, never in a dump, absent, on an address of the
		// probe's namespace (the dumps show it): gone.
		ev(3, t0, stEst, stCloseWait, addrs("10.0.0.1:80", "10.0.0.2:5003"), owner(ownTask, 11, "other", 2)),
		// 8: the same on loopback: maybe another namespace's, kept.
		ev(8, t0, stEst, stCloseWait, addrs("127.0.0.1:80", "127.0.0.1:5008"), owner(ownTask, 12, "elsewhere", 2)),
		// 4: CLOSE_WAIT, confirmed, then closes during the next dump.
		ev(4, t0, stEst, stCloseWait, addrs("10.0.0.1:80", "10.0.0.2:5004"), cookie(104)),
		// 5: confirmed, then has an event during the next dump.
		ev(5, t0, stEst, stCloseWait, addrs("10.0.0.1:80", "10.0.0.2:5005"), cookie(105)),
		// The listener: the table's listeners tell an added socket's side.
		ev(7, t0, stClose, stListen, addrs("0.0.0.0:80", "0.0.0.0:0"), owner(ownTask, 10, "srv", 1)))
	cw := func(src, dst string, c uint64) sockdiag.Socket {
		s := diagSock(sockdiag.StateCloseWait, src, dst, c, c+1000)
		s.Info.Len = 232
		return s
	}
	first := []sockdiag.Socket{
		cw("10.0.0.1:80", "10.0.0.2:5001", 101),
		cw("10.0.0.1:80", "10.0.0.2:5004", 104),
		cw("10.0.0.1:80", "10.0.0.2:5005", 105),
	}
	tb.BeginResync()
	res := tb.Resync(dumpOf(tb, CloseWaitStates, first...), time.Unix(0, t0+ms))
	if res.Removed != 0 || len(res.Added) != 0 || res.Fixed != 0 || res.Pending != 2 || res.Unverified != 0 {
		t.Fatalf("consistent table but for sockets 3 and 8: %+v", res)
	}

	// The second dump: 1 gone, 2 in CLOSE_WAIT, 4 closing while it ran,
	// 5 still there, 6 new and missed by the events. Each is seen once:
	// only pending (events may lag), except 3, gone, and 8, kept.
	tb.BeginResync()
	mustApply(t, tb,
		ev(4, t0+2*ms, stCloseWait, stClose, addrs("10.0.0.1:80", "10.0.0.2:5004"), cookie(104)),
		ev(5, t0+2*ms, stCloseWait, stLastAck, addrs("10.0.0.1:80", "10.0.0.2:5005"), cookie(105)))
	second := []sockdiag.Socket{
		cw("10.0.0.1:40002", "10.0.0.3:443", 102),
		cw("10.0.0.1:80", "10.0.0.2:5004", 104), // listed before it closed
		cw("10.0.0.1:80", "10.0.0.2:5005", 105), // listed before its event
		cw("10.0.0.1:80", "10.0.0.2:5006", 106),
	}
	second[3].Info = sockdiag.TCPInfo{Len: 232, LastAckRecvMs: 4000, LastDataRecvMs: 9000}
	// A timewait socket in substate FIN_WAIT2: never added.
	tw := diagSock(sockdiag.StateFinWait2, "10.0.0.1:40009", "10.0.0.3:443", 109, 0)
	res = tb.Resync(dumpOf(tb, CloseWaitStates|1<<sockdiag.StateFinWait2, append(second, tw)...), time.Unix(0, t0+5*ms))
	if res.Removed != 1 || res.Fixed != 0 || len(res.Added) != 0 || res.Deferred != 1 || res.Pending != 3 || res.Unverified != 1 {
		t.Fatalf("second resync: %+v", res)
	}

	// The third finds the same: 1 goes, 2 is corrected, 6 is added.
	tb.BeginResync()
	third := []sockdiag.Socket{second[0], second[2], second[3], tw}
	third[1].State = sockdiag.StateLastAck
	now := time.Unix(0, t0+10*ms)
	res = tb.Resync(dumpOf(tb, CloseWaitStates|1<<sockdiag.StateFinWait2, third...), now)
	if res.Removed != 1 || res.Fixed != 1 || len(res.Added) != 1 || res.Added[0] != (AddedSocket{Cookie: 106, Inode: 1106}) ||
		res.Pending != 0 || res.Unverified != 1 {
		t.Fatalf("third resync: %+v", res)
	}
	if _, ok := tb.Get(8); !ok {
		t.Error("socket 8, maybe of another namespace, was removed")
	}
	if _, ok := tb.Get(1); ok {
		t.Error("socket 1, gone from the kernel, is still in the table")
	}
	if _, ok := tb.Get(3); ok {
		t.Error("socket 3 still in the table")
	}
	if e := mustGet(t, tb, 2); e.State != stCloseWait || !e.AgeEstimated || e.Cookie != 102 {
		t.Errorf("socket 2 not corrected: %+v", e)
	}
	if e := mustGet(t, tb, 5); e.State != stLastAck {
		t.Errorf("socket 5: %+v", e)
	}
	added, ok := tb.GetSeeded(106)
	if !ok || added.State != stCloseWait || added.Side != sideServer || added.StateSince != now.UnixNano()-4000*ms {
		t.Fatalf("socket 6 not added as it should be: %+v %v", added, ok)
	}
	if n := tb.SetScanOwners(map[uint64]sockdiag.Owner{1106: {PID: 77, Comm: "leaky", CgroupID: 3}}); n != 1 {
		t.Errorf("SetScanOwners set %d owners", n)
	}
	if e, _ := tb.GetSeeded(106); e.PID != 77 || e.Comm != "leaky" || e.OwnerSource != ownScan {
		t.Errorf("owner of socket 6: %+v", e)
	}
	st := tb.Stats()
	if st.ResyncRemoved != 2 || st.ResyncAdded != 1 || st.ResyncFixed != 1 || tb.Len() != 5 {
		t.Errorf("stats %+v, %d sockets", st, tb.Len())
	}

	// The added socket's next event binds it.
	mustApply(t, tb, ev(6, t0+20*ms, stCloseWait, stLastAck, addrs("10.0.0.1:80", "10.0.0.2:5006"), cookie(106)))
	if e := mustGet(t, tb, 6); e.PID != 77 || tb.Len() != 5 {
		t.Errorf("socket 6 after its event: %+v (%d sockets)", e, tb.Len())
	}
}

// TestResyncLeavesOtherStates checks that a CLOSE_WAIT-only dump does not
// judge entries in other states, and that a connect whose local port is
// unknown defers the socket the dump shows for it.
func TestResyncLeavesOtherStates(t *testing.T) {
	tb := New(100)
	tb.AbandonSeed()
	mustApply(t, tb, ev(1, t0, stSynSent, stEst, addrs("10.0.0.1:40001", "10.0.0.3:443"), owner(ownTask, 10, "c", 1), cookie(9)))
	tb.BeginResync()
	res := tb.Resync(dumpOf(tb, CloseWaitStates), time.Unix(0, t0))
	if res.Removed != 0 || res.Unverified != 0 || res.Pending != 0 || tb.Len() != 1 {
		t.Errorf("ESTABLISHED entry judged by a CLOSE_WAIT dump: %+v", res)
	}

	tb.BeginResync()
	mustApply(t, tb, ev(2, t0+ms, stClose, stSynSent, addrs("10.0.0.1:0", "10.0.0.4:8080"), owner(ownTask, 10, "c", 1)))
	est := []sockdiag.Socket{
		diagSock(sockdiag.StateEstablished, "10.0.0.1:40001", "10.0.0.3:443", 9, 1),
		diagSock(sockdiag.StateEstablished, "10.0.0.1:40002", "10.0.0.4:8080", 10, 2),
	}
	est[0].Info.Len, est[1].Info.Len = 232, 232
	res = tb.Resync(dumpOf(tb, SeedStates, est...), time.Unix(0, t0+2*ms))
	if res.Removed != 0 || len(res.Added) != 0 || res.Deferred != 1 || tb.Len() != 2 {
		t.Errorf("connect in flight: %+v, %d sockets", res, tb.Len())
	}
}
