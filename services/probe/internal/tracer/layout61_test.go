package tracer

import (
	"context"
	"errors"
	"io"
	"net"
	"net/netip"
	"os"
	"slices"
	"strconv"
	"testing"
	"time"
	"unsafe"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/btf"
	"github.com/cilium/ebpf/link"
	"github.com/cilium/ebpf/ringbuf"
	"github.com/cilium/ebpf/rlimit"
	"golang.org/x/sys/unix"

	"github.com/netpulse/netpulse/lib/testutil/priv"
)

// TestRetransmitResetLayout6_1 runs the 6.1 branches of handle_retransmit and
// handle_send_reset (the tcp_event_sk_skb class, see tcpstate.bpf.c) for
// real on this kernel, which has no such class. It can, because this
// kernel's tcp_retransmit_skb record is that class plus a trailing err: the
// two programs are loaded against this kernel's BTF with that struct
// renamed to the class and tcp_send_reset's own struct hidden, so CO-RE
// takes their 6.1 branches with this kernel's offsets. Both are attached to
// tcp:tcp_retransmit_skb, next to the ordinary handle_retransmit; real
// retransmits of a flow of the test's own must then give records carrying
// the flow's real socket, addresses and ports from all of them.
func TestRetransmitResetLayout6_1(t *testing.T) {
	priv.RequireRoot(t)
	if err := rlimit.RemoveMemlock(); err != nil {
		t.Fatal(err)
	}
	spec, err := loadTcpstate()
	if err != nil {
		t.Fatal(err)
	}
	kt := btfAs6_1(t)
	p := newNetnsPair(t)
	for _, c := range []struct {
		name, network, addr string
		clientNS            string
		dropPct             int
	}{
		{"ipv4", "tcp4", p.addrA, p.b, 3},
		// Loopback inside namespace a: few, large segments, so more loss.
		{"ipv6", "tcp6", "::1", p.a, 10},
	} {
		t.Run(c.name, func(t *testing.T) {
			native := newTestRing(t, spec)
			native.attach(t, spec, tcpstateProgHandleRetransmit, nil)
			old := newTestRing(t, spec)
			old.attach(t, spec, tcpstateProgHandleRetransmit, kt)
			old.attach(t, spec, tcpstateProgHandleSendReset, kt)
			checkLayout6_1(t, native, old, lossyFlow(t, p.a, c.clientNS, c.network, c.addr, c.dropPct))
		})
	}
}

// btfAs6_1 is this kernel's BTF with tcp_retransmit_skb's record renamed
// to 6.1's tcp_event_sk_skb and tcp_send_reset's record renamed away.
func btfAs6_1(t *testing.T) *btf.Spec {
	t.Helper()
	kernel, err := btf.LoadSpec("/sys/kernel/btf/vmlinux") // a private copy: renamed below
	if err != nil {
		t.Fatal(err)
	}
	renames := map[string]string{
		"trace_event_raw_tcp_retransmit_skb": "trace_event_raw_tcp_event_sk_skb",
		"trace_event_raw_tcp_send_reset":     "netpulse_test_hidden_tcp_send_reset",
	}
	var types []btf.Type
	for typ, err := range kernel.All() {
		if err != nil {
			t.Fatal(err)
		}
		if s, ok := typ.(*btf.Struct); ok {
			if to, ok := renames[s.Name]; ok {
				delete(renames, s.Name)
				s.Name = to
			}
		}
		types = append(types, typ)
	}
	for from := range renames {
		t.Fatalf("this kernel's BTF has no struct %s", from)
	}
	b, err := btf.NewBuilder(types, nil)
	if err != nil {
		t.Fatal(err)
	}
	spec, err := b.Spec()
	if err != nil {
		t.Fatal(err)
	}
	return spec
}

// testRing is a set of the program's maps with a reader of its ring
// buffer, and the programs attached to them.
type testRing struct {
	maps   *ebpf.Collection
	reader *ringbuf.Reader
	events []tcpstateEvent
}

func newTestRing(t *testing.T, spec *ebpf.CollectionSpec) *testRing {
	t.Helper()
	mapsOnly := spec.Copy()
	mapsOnly.Programs = nil
	maps, err := ebpf.NewCollection(mapsOnly)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(maps.Close)
	rd, err := ringbuf.NewReader(maps.Maps[tcpstateMapEvents])
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { rd.Close() })
	return &testRing{maps: maps, reader: rd}
}

// attach loads prog against r's maps (with kernel types kt, nil: this
// kernel's) and attaches it to tcp:tcp_retransmit_skb.
func (r *testRing) attach(t *testing.T, spec *ebpf.CollectionSpec, prog string, kt *btf.Spec) {
	t.Helper()
	one := spec.Copy()
	one.Programs = map[string]*ebpf.ProgramSpec{prog: spec.Programs[prog]}
	coll, err := ebpf.NewCollectionWithOptions(one, ebpf.CollectionOptions{
		MapReplacements: r.maps.Maps,
		Programs:        ebpf.ProgramOptions{KernelTypes: kt},
	})
	if err != nil {
		t.Fatalf("load %s: %v", prog, err)
	}
	p := coll.DetachProgram(prog)
	coll.Close()
	t.Cleanup(func() { p.Close() })
	l, err := link.Tracepoint("tcp", "tcp_retransmit_skb", p, nil)
	if err != nil {
		t.Fatalf("attach %s: %v", prog, err)
	}
	t.Cleanup(func() { l.Close() })
}

// drain appends the event records waiting in the ring, waiting at most
// wait for the first.
func (r *testRing) drain(t *testing.T, wait time.Duration) {
	t.Helper()
	r.reader.SetDeadline(time.Now().Add(wait))
	for {
		rec, err := r.reader.Read()
		if errors.Is(err, os.ErrDeadlineExceeded) {
			return
		}
		if err != nil {
			t.Fatal(err)
		}
		if len(rec.RawSample) != eventSize {
			t.Fatalf("record of %d bytes, want an event (%d)", len(rec.RawSample), eventSize)
		}
		var ev tcpstateEvent
		copyRecord(unsafe.Pointer(&ev), rec.RawSample)
		r.events = append(r.events, ev)
		r.reader.SetDeadline(time.Now()) // the rest only if already there
	}
}

// flow is a bulk transfer from client to server through a drop rule, until
// stop resets it.
type flow struct {
	family         uint16
	client, server netip.AddrPort
	stop           func()
}

// lossyFlow sends from namespace clientNS to a listener on addr in
// serverNS, whose input drops pct% of the flow's packets.
func lossyFlow(t *testing.T, serverNS, clientNS, network, addr string, pct int) flow {
	t.Helper()
	var ln net.Listener
	inNetns(t, serverNS, func() (err error) {
		ln, err = net.Listen(network, net.JoinHostPort(addr, "0"))
		return err
	})
	t.Cleanup(func() { ln.Close() })
	port := ln.Addr().(*net.TCPAddr).Port
	nft(t, serverNS, "in tcp dport "+strconv.Itoa(port)+" numgen random mod 100 < "+strconv.Itoa(pct)+" drop")
	var c net.Conn
	inNetns(t, clientNS, func() (err error) {
		c, err = net.DialTimeout(network, ln.Addr().String(), 10*time.Second)
		return err
	})
	t.Cleanup(func() { c.Close() })
	go func() {
		sc, err := ln.Accept()
		if err == nil {
			_, _ = io.Copy(io.Discard, sc)
			sc.Close()
		}
	}()
	stopped := make(chan struct{})
	done := make(chan struct{})
	go func() {
		defer close(done)
		buf := make([]byte, 256<<10)
		for {
			select {
			case <-stopped:
				return
			default:
			}
			_ = c.SetWriteDeadline(time.Now().Add(5 * time.Second))
			if _, err := c.Write(buf); err != nil {
				return
			}
		}
	}()
	f := flow{
		family: unix.AF_INET,
		client: c.LocalAddr().(*net.TCPAddr).AddrPort(),
		server: c.RemoteAddr().(*net.TCPAddr).AddrPort(),
		// Reset, not close: the socket goes at once, and with it its
		// retransmits.
		stop: func() {
			close(stopped)
			_ = c.(*net.TCPConn).SetLinger(0)
			c.Close()
			<-done
		},
	}
	if network == "tcp6" {
		f.family = unix.AF_INET6
	}
	return f
}

// matches reports whether ev carries f's family, addresses and ports, seen
// from the sender.
func (f flow) matches(ev *tcpstateEvent) bool {
	n := 4
	if f.family == unix.AF_INET6 {
		n = 16
	}
	s, d := f.client.Addr().AsSlice(), f.server.Addr().AsSlice()
	return ev.Family == f.family && ev.Sport == f.client.Port() && ev.Dport == f.server.Port() &&
		string(ev.Saddr[:n]) == string(s) && string(ev.Daddr[:n]) == string(d) &&
		allZero(ev.Saddr[n:]) && allZero(ev.Daddr[n:])
}

func allZero(b []byte) bool {
	for _, c := range b {
		if c != 0 {
			return false
		}
	}
	return true
}

// checkLayout6_1 waits until the flow was retransmitted and both 6.1
// branches reported it, then checks every record of the flow's socket.
func checkLayout6_1(t *testing.T, native, old *testRing, f flow) {
	count := func(r *testRing, typ RecordType, skaddr uint64) (n int) {
		for i := range r.events {
			if ev := &r.events[i]; RecordType(ev.Type) == typ && ev.Skaddr == skaddr {
				n++
			}
		}
		return n
	}
	var skaddr uint64
	findSocket := func() {
		for i := range native.events {
			if ev := &native.events[i]; f.matches(ev) {
				skaddr = ev.Skaddr
			}
		}
	}
	for end := time.Now().Add(20 * time.Second); time.Now().Before(end); {
		native.drain(t, 100*time.Millisecond)
		old.drain(t, 0)
		findSocket()
		if skaddr != 0 && count(native, RecordRetransmit, skaddr) >= 20 && count(old, RecordResetSent, skaddr) > 0 {
			break
		}
	}
	// The programs saw the flow's whole life: its socket is gone now.
	f.stop()
	native.drain(t, 100*time.Millisecond)
	old.drain(t, 100*time.Millisecond)
	findSocket()
	if skaddr == 0 {
		t.Fatalf("no retransmit of %v -> %v seen by handle_retransmit: the drop rule did not bite", f.client, f.server)
	}

	for _, r := range []*testRing{native, old} {
		cnt, err := (&Tracer{maps: r.maps}).Counters()
		if err != nil {
			t.Fatal(err)
		}
		if cnt.Dropped > 0 {
			t.Fatalf("%d records dropped: ring full", cnt.Dropped)
		}
	}
	nNative := count(native, RecordRetransmit, skaddr)
	nRetrans, nReset := count(old, RecordRetransmit, skaddr), count(old, RecordResetSent, skaddr)
	t.Logf("%v -> %v: %d RETRANSMIT records from this kernel's layout; from 6.1's: %d RETRANSMIT, %d RESET_SENT",
		f.client, f.server, nNative, nRetrans, nReset)
	// Both 6.1 programs ran on every retransmit; the 6.1 branch also
	// reports attempts that this kernel's err says were not counted.
	if nRetrans < nNative || nReset != nRetrans {
		t.Errorf("6.1 branches: %d RETRANSMIT and %d RESET_SENT records, want %d (>= this layout's %d) of each",
			nRetrans, nReset, nRetrans, nNative)
	}
	bad := 0
	for _, r := range []*testRing{native, old} {
		for i := range r.events {
			ev := &r.events[i]
			if ev.Skaddr != skaddr {
				continue // another socket of the host
			}
			if bad > 5 {
				t.Fatalf("and more")
			}
			if !f.matches(ev) {
				bad++
				t.Errorf("type %d record of the flow's socket: family %d, %v:%d -> %v:%d; want %v -> %v",
					ev.Type, ev.Family, ev.Saddr, ev.Sport, ev.Daddr, ev.Dport, f.client, f.server)
			}
			switch ev.Newstate {
			case 1, 2, 4, 8, 9, 11: // ESTABLISHED, SYN_SENT, FIN_WAIT1, CLOSE_WAIT, LAST_ACK, CLOSING
			default:
				bad++
				t.Errorf("type %d record of the flow's socket: state %d, not one that retransmits", ev.Type, ev.Newstate)
			}
			if RecordType(ev.Type) == RecordRetransmit && ev.Segments == 0 {
				bad++
				t.Errorf("RETRANSMIT record with 0 segments")
			}
		}
	}
}

// TestConnectionWithout6_3Hooks opens the tracer as on 6.1, where
// sock:sock_send_length and sock_recv_length do not exist (their hooks
// point at a group no kernel has): Open must skip exactly those, and every
// check of TestTracerLoopback must still hold, owners included.
func TestConnectionWithout6_3Hooks(t *testing.T) {
	priv.RequireRoot(t)
	saved := hooks
	t.Cleanup(func() { hooks = saved })
	hooks = slices.Clone(saved)
	var want []string
	for i, h := range hooks {
		if h.name == "sock_send_length" || h.name == "sock_recv_length" {
			hooks[i].group = "netpulse_absent"
			want = append(want, hooks[i].group+":"+h.name)
		}
	}
	if len(want) != 2 {
		t.Fatalf("hooks has %d of sock_send_length/sock_recv_length, want 2", len(want))
	}

	tr, err := Open(Config{})
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	t.Cleanup(func() { tr.Close() })
	var got []string
	for _, s := range tr.Skipped() {
		got = append(got, s.Tracepoint)
		if !errors.Is(s.Err, os.ErrNotExist) {
			t.Errorf("%s: %v, want a missing tracepoint", s.Tracepoint, s.Err)
		}
	}
	if !slices.Equal(got, want) {
		t.Fatalf("skipped %v, want %v", got, want)
	}

	col := &collector{dec: NewDecoder(), notify: make(chan struct{}, 1)}
	ctx, stop := context.WithCancel(context.Background())
	readDone := make(chan error, 1)
	go func() { readDone <- tr.Read(ctx, col.add) }()
	t.Cleanup(func() {
		stop()
		if err := <-readDone; err != nil {
			t.Errorf("Read: %v", err)
		}
	})
	self := currentProc(t)
	for _, tc := range []struct {
		network string
		addr    netip.Addr
	}{{"tcp4", loopbackIPv4}, {"tcp6", loopbackIPv6}} {
		conn := runConnection(t, tc.network, tc.addr, true)
		wctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		conn.check(t, col, wctx, self)
		cancel()
	}
}
