package socktable

import (
	"net"
	"os"
	"testing"
	"time"

	"github.com/netpulse/netpulse/lib/eventpb"
	"github.com/netpulse/netpulse/lib/testutil/priv"
	"github.com/netpulse/netpulse/services/probe/internal/sockdiag"
)

// TestSeedFromThisHost seeds a table from the real sock_diag dump and /proc
// scan of this host, with a listener, two connections and one CLOSE_WAIT
// socket of the test's own, and checks what the probe would publish.
func TestSeedFromThisHost(t *testing.T) {
	priv.RequireRoot(t)
	ln, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	port := uint16(ln.Addr().(*net.TCPAddr).Port)
	var conns []net.Conn
	defer func() {
		for _, c := range conns {
			c.Close()
		}
	}()
	for i := range 3 {
		c, err := net.Dial("tcp4", ln.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		s, err := ln.Accept()
		if err != nil {
			t.Fatal(err)
		}
		conns = append(conns, s)
		if i == 2 {
			c.Close() // s goes to CLOSE_WAIT
		} else {
			conns = append(conns, c)
		}
	}

	d, err := sockdiag.NewDumper()
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	var socks []sockdiag.Socket
	for deadline := time.Now().Add(10 * time.Second); ; {
		if socks, err = d.Dump(socks[:0]); err != nil {
			t.Fatal(err)
		}
		if hasCloseWait(socks, port) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("no CLOSE_WAIT socket on the test port")
		}
		time.Sleep(10 * time.Millisecond)
	}
	owners, _, err := sockdiag.Owners()
	if err != nil {
		t.Fatal(err)
	}
	tb := New(len(socks) + 10)
	now := time.Now()
	tb.Seed(socks, owners, now)

	pid := uint32(os.Getpid())
	var me sockdiag.Owner
	for _, o := range owners {
		if o.PID == pid {
			me = o
		}
	}
	found := false
	for _, l := range tb.Listeners(nil) {
		if l.Addr.Port() == port {
			found = true
			if l.PID != pid || l.Comm != me.Comm || l.CgroupID != me.CgroupID || l.Family != v4 {
				t.Errorf("listener %+v, want pid %d comm %q", l, pid, me.Comm)
			}
		}
	}
	if !found {
		t.Error("test listener not among Listeners")
	}

	snap := tb.Snapshot(nil, now.Add(time.Second), 1<<20, 1<<20)
	want := map[[3]uint32]uint32{ // (state, local port, side) -> sockets of this process
		{uint32(stListen), uint32(port), uint32(sideServer)}:    1,
		{uint32(stEst), uint32(port), uint32(sideServer)}:       2,
		{uint32(stCloseWait), uint32(port), uint32(sideServer)}: 1,
		{uint32(stEst), 0, uint32(sideClient)}:                  2,
	}
	got := map[[3]uint32]uint32{}
	for _, g := range snap.Groups {
		if g.Pid == pid {
			got[[3]uint32{uint32(g.State), g.LocalPort, uint32(g.Side)}] = g.Count
		}
	}
	for k, n := range want {
		if got[k] != n {
			t.Errorf("group (state %v, port %d, side %v): %d sockets, want %d (all of this process: %v)",
				eventpb.TcpState(k[0]), k[1], eventpb.Side(k[2]), got[k], n, got)
		}
	}
	var cw *eventpb.SnapshotSocket
	for _, s := range snap.CloseWait {
		if s.Sport == uint32(port) && s.Pid == pid {
			cw = s
		}
	}
	if cw == nil {
		t.Fatal("CLOSE_WAIT socket not in the snapshot")
	}
	if !cw.AgeEstimated || cw.OwnerSource != ownScan || cw.Cookie == 0 || cw.SockId != 0 ||
		cw.AgeUs < 1_000_000 || cw.AgeUs > 60_000_000 {
		t.Errorf("CLOSE_WAIT socket %v", cw)
	}
}

func hasCloseWait(socks []sockdiag.Socket, port uint16) bool {
	for _, s := range socks {
		if s.State == sockdiag.StateCloseWait && s.Src.Port() == port {
			return true
		}
	}
	return false
}
