package agent

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"regexp"
	"runtime"
	"strconv"
	"sync"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/netpulse/netpulse/lib/eventpb"
	"github.com/netpulse/netpulse/lib/testutil/natstest"
	"github.com/netpulse/netpulse/lib/testutil/priv"
	"github.com/netpulse/netpulse/lib/wire"
	"github.com/netpulse/netpulse/services/probe/internal/sockdiag"
	"github.com/netpulse/netpulse/services/probe/internal/socktable"
)

// nsAddr is the test namespace's own address (test addresses only ever
// exist inside it).
const nsAddr = "10.213.77.1"

// testNetns makes a network namespace of the test's own, with loopback up,
// so that what the resync dumps is only the test's sockets, whatever else
// runs on this host.
func testNetns(t *testing.T) string {
	t.Helper()
	priv.RequireRoot(t)
	name := fmt.Sprintf("np-resync-%d-%s", os.Getpid(), t.Name())
	if out, err := exec.Command("ip", "netns", "add", name).CombinedOutput(); err != nil {
		t.Fatalf("ip netns add: %v: %s", err, out)
	}
	t.Cleanup(func() { _ = exec.Command("ip", "netns", "del", name).Run() })
	if out, err := exec.Command("ip", "-n", name, "link", "set", "lo", "up").CombinedOutput(); err != nil {
		t.Fatalf("lo up: %v: %s", err, out)
	}
	// An address of the namespace's own besides loopback, which every
	// namespace has.
	if out, err := exec.Command("ip", "-n", name, "addr", "add", nsAddr+"/32", "dev", "lo").CombinedOutput(); err != nil {
		t.Fatalf("ip addr add: %v: %s", err, out)
	}
	return name
}

// inNetns runs fn on an OS thread moved into namespace name: the sockets
// fn opens (and a sock_diag Dumper) belong to it. The thread moves back
// after; if it cannot, it stays locked and exits with the goroutine.
func inNetns(t *testing.T, name string, fn func()) {
	t.Helper()
	done := make(chan error)
	go func() {
		runtime.LockOSThread()
		orig, err := os.Open("/proc/thread-self/ns/net")
		if err != nil {
			done <- err
			return
		}
		defer orig.Close()
		f, err := os.Open("/var/run/netns/" + name)
		if err == nil {
			err = unix.Setns(int(f.Fd()), unix.CLONE_NEWNET)
			f.Close()
		}
		if err == nil {
			fn()
			if unix.Setns(int(orig.Fd()), unix.CLONE_NEWNET) == nil {
				runtime.UnlockOSThread()
			}
		}
		done <- err
	}()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
}

// closeWaitConns makes n connections to a new listener on ip whose client
// closes, leaving the server sides in CLOSE_WAIT, all in namespace ns, and
// returns them with d, or a new Dumper of ns when d is nil.
func closeWaitConns(t *testing.T, ns, ip string, n int, d *sockdiag.Dumper) (ln net.Listener, servers []*net.TCPConn, _ *sockdiag.Dumper) {
	t.Helper()
	var err error
	inNetns(t, ns, func() {
		if ln, err = net.Listen("tcp4", ip+":0"); err != nil {
			return
		}
		for range n {
			var c, s net.Conn
			if c, err = net.Dial("tcp4", ln.Addr().String()); err != nil {
				return
			}
			if s, err = ln.Accept(); err != nil {
				return
			}
			c.Close()
			servers = append(servers, s.(*net.TCPConn))
		}
		if d == nil {
			if d, err = sockdiag.NewDumper(); err == nil {
				t.Cleanup(func() { d.Close() })
			}
		}
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ln.Close()
		for _, s := range servers {
			s.Close()
		}
	})
	port := uint16(ln.Addr().(*net.TCPAddr).Port)
	waitDump(t, d, func(socks []sockdiag.Socket) bool { return countCloseWait(socks, port) == n })
	return ln, servers, d
}

// waitDump dumps until ok holds, for at most 10 s.
func waitDump(t *testing.T, d *sockdiag.Dumper, ok func([]sockdiag.Socket) bool) {
	t.Helper()
	var socks []sockdiag.Socket
	for deadline := time.Now().Add(10 * time.Second); ; {
		var err error
		if socks, err = d.Dump(socks[:0]); err != nil {
			t.Fatal(err)
		}
		if ok(socks) {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("the kernel's sockets never got there: %+v", socks)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// countCloseWait counts the CLOSE_WAIT sockets on local port port (any
// when 0).
func countCloseWait(socks []sockdiag.Socket, port uint16) int {
	n := 0
	for _, s := range socks {
		if s.State == sockdiag.StateCloseWait && (port == 0 || s.Src.Port() == port) {
			n++
		}
	}
	return n
}

// resyncProbe is a Probe with only what resync uses: a table, a Dumper of
// the test's namespace, and no kernel counters (so it never waits for the
// reader).
func resyncProbe(d *sockdiag.Dumper) *Probe {
	p := &Probe{log: slog.New(slog.NewTextHandler(io.Discard, nil)), table: socktable.New(4096), resyncReady: true,
		kernelSubmitted: func() (uint64, bool) { return 0, false }}
	p.table.AbandonSeed()
	p.rs.dumper = d
	return p
}

// closeWaitEvent is the event that put server side s in CLOSE_WAIT, as the
// tracer decodes it, owned by this process.
func closeWaitEvent(t *testing.T, id uint64, s *net.TCPConn) *eventpb.Event {
	t.Helper()
	rc, err := s.SyscallConn()
	if err != nil {
		t.Fatal(err)
	}
	var cookie uint64
	if err := rc.Control(func(fd uintptr) { cookie, err = unix.GetsockoptUint64(int(fd), unix.SOL_SOCKET, unix.SO_COOKIE) }); err != nil {
		t.Fatal(err)
	}
	l, r := s.LocalAddr().(*net.TCPAddr).AddrPort(), s.RemoteAddr().(*net.TCPAddr).AddrPort()
	return &eventpb.Event{
		Type: eventpb.EventType_EVENT_TYPE_STATE_CHANGE, TimeUnixNano: uint64(time.Now().UnixNano()), SockId: id,
		Family: eventpb.Family_FAMILY_IPV4, Saddr: l.Addr().AsSlice(), Daddr: r.Addr().AsSlice(),
		Sport: uint32(l.Port()), Dport: uint32(r.Port()), Cookie: cookie,
		OldState: eventpb.TcpState_TCP_STATE_ESTABLISHED, NewState: eventpb.TcpState_TCP_STATE_CLOSE_WAIT,
		Side: eventpb.Side_SIDE_SERVER, Pid: uint32(os.Getpid()), Comm: "probe.test", OwnerSource: eventpb.OwnerSource_OWNER_SOURCE_TASK,
	}
}

// TestResyncRemovesSocketsWhoseCloseWasLost: two CLOSE_WAIT sockets are in
// the table from their events; the test closes them and never feeds the
// CLOSE events, as when the ring buffer overflowed. The first was seen by
// a resync while alive, the second never was (its address is the
// namespace's own). Two resyncs later (15 s apart in the probe) both are
// gone.
func TestResyncRemovesSocketsWhoseCloseWasLost(t *testing.T) {
	ns := testNetns(t)
	_, first, d := closeWaitConns(t, ns, nsAddr, 1, nil)
	p := resyncProbe(d)
	if err := p.table.Apply(closeWaitEvent(t, 1, first[0])); err != nil {
		t.Fatal(err)
	}
	p.resync(socktable.CloseWaitStates, false)
	if st := p.table.Stats(); st.ResyncRemoved != 0 || st.ResyncAdded != 0 || st.ResyncFixed != 0 || p.table.Len() != 1 {
		t.Fatalf("after a resync of a table that missed nothing: %+v", st)
	}
	_, second, _ := closeWaitConns(t, ns, nsAddr, 1, d)
	// A third on loopback, never seen by a dump either: it may be another
	// namespace's socket, so it stays.
	_, third, _ := closeWaitConns(t, ns, "127.0.0.1", 1, d)
	if err := p.table.Apply(closeWaitEvent(t, 3, third[0])); err != nil {
		t.Fatal(err)
	}
	if err := p.table.Apply(closeWaitEvent(t, 2, second[0])); err != nil {
		t.Fatal(err)
	}

	first[0].Close()
	second[0].Close()
	third[0].Close()
	waitDump(t, d, func(socks []sockdiag.Socket) bool { return countCloseWait(socks, 0) == 0 })
	// One resync only notes them (an event may lag); the second acts.
	p.resync(socktable.CloseWaitStates, false)
	if _, ok := p.table.Get(1); !ok || p.table.Stats().ResyncRemoved != 0 {
		t.Fatal("removed on one resync's word")
	}
	p.resync(socktable.CloseWaitStates, false)
	for _, id := range []uint64{1, 2} {
		if e, ok := p.table.Get(id); ok {
			t.Errorf("socket %d, closed, still in the table: %+v", id, e)
		}
	}
	if _, ok := p.table.Get(3); !ok {
		t.Error("the loopback socket no dump listed was removed")
	}
	if st := p.table.Stats(); st.ResyncRemoved != 2 || st.ResyncAdded != 0 || p.table.Len() != 1 || p.c.resync.errs != 0 {
		t.Errorf("after the closes: %+v, %d sockets left, %d errors", st, p.table.Len(), p.c.resync.errs)
	}
}

// TestResyncAddsMissedCloseWait: CLOSE_WAIT sockets whose events never
// reached the table appear after two resyncs, owned by the process
// ss -tanp names.
func TestResyncAddsMissedCloseWait(t *testing.T) {
	ns := testNetns(t)
	ln, _, d := closeWaitConns(t, ns, "127.0.0.1", 5, nil)
	p := resyncProbe(d)
	p.resync(socktable.CloseWaitStates, false)
	if p.table.Len() != 0 {
		t.Fatal("added on one resync's word")
	}
	p.resync(socktable.CloseWaitStates, false)
	if st := p.table.Stats(); st.ResyncAdded != 5 || p.table.Len() != 5 || p.c.resync.errs != 0 {
		t.Fatalf("after a resync: %+v, %d sockets, %d errors", st, p.table.Len(), p.c.resync.errs)
	}

	out, err := exec.Command("ip", "netns", "exec", ns, "ss", "-tanpH", "state", "close-wait").CombinedOutput()
	if err != nil {
		t.Fatalf("ss: %v: %s", err, out)
	}
	// "0  0  127.0.0.1:41234  127.0.0.1:39918  users:(("probe.test",pid=123,fd=7))"
	line := regexp.MustCompile(`\S+:(\d+)\s+\S+:(\d+)\s+users:\(\("([^"]*)",pid=(\d+),`)
	ssPID := map[[2]uint32]uint32{}
	for _, m := range line.FindAllStringSubmatch(string(out), -1) {
		sport, _ := strconv.Atoi(m[1])
		dport, _ := strconv.Atoi(m[2])
		pid, _ := strconv.Atoi(m[4])
		ssPID[[2]uint32{uint32(sport), uint32(dport)}] = uint32(pid)
	}
	if len(ssPID) != 5 {
		t.Fatalf("ss shows %d CLOSE_WAIT sockets with an owner, want 5:\n%s", len(ssPID), out)
	}
	snap := p.table.Snapshot(nil, time.Now(), 100, 100)
	if snap.CloseWaitTotal != 5 {
		t.Fatalf("snapshot lists %d CLOSE_WAIT sockets, want 5", snap.CloseWaitTotal)
	}
	port := uint32(ln.Addr().(*net.TCPAddr).Port)
	for _, s := range snap.CloseWait {
		want, ok := ssPID[[2]uint32{s.Sport, s.Dport}]
		if !ok || s.Pid != want || s.Pid != uint32(os.Getpid()) || s.OwnerSource != eventpb.OwnerSource_OWNER_SOURCE_SCAN ||
			s.Sport != port || s.Side != eventpb.Side_SIDE_CLIENT && s.Side != eventpb.Side_SIDE_SERVER || s.Cookie == 0 {
			t.Errorf("CLOSE_WAIT socket %v, ss says pid %d", s, want)
		}
	}
}

// TestResyncConsistentUnderChurn runs the whole probe with a full resync
// every second and a CLOSE_WAIT one before each snapshot, while
// connections open, sit in CLOSE_WAIT and close on loopback: a table that
// lost no event must come out of every resync unchanged.
func TestResyncConsistentUnderChurn(t *testing.T) {
	priv.RequireRoot(t)
	srv := natstest.Start(t)
	nc, _ := natstest.Connect(t, srv)
	host := fmt.Sprintf("resync-%d", os.Getpid())
	cfg := DefaultConfig()
	cfg.Host = host
	cfg.NATS = cfg.NATS.WithURL(nc.ConnectedUrl())
	cfg.Stats.Interval = 500 * time.Millisecond
	cfg.Snapshot.Interval = time.Second
	cfg.Sockets.ResyncInterval = time.Second
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}
	sub, err := nc.SubscribeSync(wire.EventSubject(host, wire.KindStats))
	if err != nil {
		t.Fatal(err)
	}
	p, err := New(cfg, slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn})))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- p.Run(ctx) }()
	defer func() {
		cancel()
		if err := <-done; err != nil {
			t.Error(err)
		}
	}()

	// The churn starts once the start-up seed is over: this is about the
	// resync, not about seeding under churn.
	var s Stats
	for deadline := time.Now().Add(30 * time.Second); !s.Seed.Done; {
		m, err := sub.NextMsg(time.Until(deadline))
		if err != nil {
			t.Fatalf("stats: %v (last: %+v)", err, s)
		}
		if err := json.Unmarshal(m.Data, &s); err != nil {
			t.Fatal(err)
		}
	}
	base := s

	ln, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	stop := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(2)
	go func() { // the server side: close each accepted socket a little later
		defer wg.Done()
		var held []net.Conn
		for {
			s, err := ln.Accept()
			if err != nil {
				for _, s := range held {
					s.Close()
				}
				return
			}
			held = append(held, s)
			if len(held) > 50 { // about 50 in CLOSE_WAIT at any time
				held[0].Close()
				held = held[1:]
			}
		}
	}()
	go func() { // the clients: connect and close at once
		defer wg.Done()
		for {
			select {
			case <-stop:
				return
			default:
			}
			if c, err := net.Dial("tcp4", ln.Addr().String()); err == nil {
				c.Close()
			}
			time.Sleep(2 * time.Millisecond) // pacing the load, not synchronisation
		}
	}()
	defer func() {
		close(stop)
		ln.Close()
		wg.Wait()
	}()

	for deadline := time.Now().Add(30 * time.Second); s.ResyncFullRuns < base.ResyncFullRuns+5 || s.ResyncRuns < base.ResyncRuns+10; {
		m, err := sub.NextMsg(time.Until(deadline))
		if err != nil {
			t.Fatalf("stats: %v (last: %+v)", err, s)
		}
		if err := json.Unmarshal(m.Data, &s); err != nil {
			t.Fatal(err)
		}
	}
	var evictions uint64
	for _, m := range s.Maps {
		evictions += m.Evictions
	}
	if s.RingbufDrops != 0 || evictions != 0 || s.Table.Evictions != 0 {
		t.Fatalf("events were lost (%d ring-buffer drops, %d map evictions, %d table evictions): the table cannot stay consistent",
			s.RingbufDrops, evictions, s.Table.Evictions)
	}
	removed, added, fixed := s.ResyncRemoved-base.ResyncRemoved, s.ResyncAdded-base.ResyncAdded, s.ResyncFixed-base.ResyncFixed
	if s.ResyncErrors != 0 || removed != 0 || added != 0 || fixed != 0 || s.EventsSeen-base.EventsSeen < 1000 {
		t.Errorf("a table that missed nothing was changed: %d events, resyncs %d (%d full, last %.3fs): removed %d, added %d, fixed %d, errors %d",
			s.EventsSeen-base.EventsSeen, s.ResyncRuns, s.ResyncFullRuns, s.ResyncLastFullSeconds, removed, added, fixed, s.ResyncErrors)
	}
	t.Logf("table %+v errors %d", s.Table, s.TableErrors)
	t.Logf("%d events, %d resyncs (%d full, last full %.1f ms), unverified %d, deferred %d",
		s.EventsSeen, s.ResyncRuns, s.ResyncFullRuns, s.ResyncLastFullSeconds*1000, s.ResyncUnverified, s.ResyncDeferred)
}
