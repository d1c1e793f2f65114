package tracer

import (
	"errors"
	"fmt"
	"io"
	"net"
	"strconv"
	"syscall"
	"testing"
	"time"

	"github.com/netpulse/netpulse/lib/eventpb"
)

const (
	tRetransmit = eventpb.EventType_EVENT_TYPE_RETRANSMIT
	tSynack     = eventpb.EventType_EVENT_TYPE_SYNACK_RETRANSMIT
	tRstSent    = eventpb.EventType_EVENT_TYPE_RESET_SENT
	tRstRecv    = eventpb.EventType_EVENT_TYPE_RESET_RECEIVED
	tSockErr    = eventpb.EventType_EVENT_TYPE_SOCKET_ERROR
	tConnFail   = eventpb.EventType_EVENT_TYPE_CONNECT_FAILED
	tState      = eventpb.EventType_EVENT_TYPE_STATE_CHANGE
	srcUnknown  = eventpb.OwnerSource_OWNER_SOURCE_UNKNOWN
)

// TestRetransmitsMatchNstat: a bulk transfer from namespace b to a, with
// a's input dropping 3% of the flow's packets at random. The segments of
// the sender's RETRANSMIT events must add up exactly to the growth of
// TcpRetransSegs in b, where nothing else runs.
func TestRetransmitsMatchNstat(t *testing.T) {
	tr, col := startTracer(t, Config{})
	p := newNetnsPair(t)
	var ln net.Listener
	inNetns(t, p.a, func() (err error) {
		ln, err = net.Listen("tcp4", p.addrA+":0")
		return err
	})
	defer ln.Close()
	port := ln.Addr().(*net.TCPAddr).Port
	nft(t, p.a, fmt.Sprintf("in tcp dport %d numgen random mod 100 < 3 drop", port))

	before := nstat(t, p.b, "TcpRetransSegs")
	var c net.Conn
	inNetns(t, p.b, func() (err error) {
		c, err = net.DialTimeout("tcp4", ln.Addr().String(), 10*time.Second)
		return err
	})
	defer c.Close()
	received := make(chan int64, 1)
	go func() {
		sc, err := ln.Accept()
		if err != nil {
			received <- -1
			return
		}
		n, _ := io.Copy(io.Discard, sc)
		sc.Close()
		received <- n
	}()
	_ = c.SetDeadline(time.Now().Add(60 * time.Second))
	buf := make([]byte, 256<<10)
	var sent int64
	for start := time.Now(); time.Since(start) < 2*time.Second; {
		n, err := c.Write(buf)
		sent += int64(n)
		if err != nil {
			t.Fatalf("write: %v", err)
		}
	}
	if err := c.(*net.TCPConn).CloseWrite(); err != nil {
		t.Fatal(err)
	}
	if n := <-received; n != sent {
		t.Fatalf("receiver got %d bytes, sent %d", n, sent)
	}
	// EOF: the receiver's FIN acknowledged all we sent, retransmits included.
	if n, err := c.Read(make([]byte, 1)); n != 0 || err != io.EOF {
		t.Fatalf("read: %d, %v; want EOF", n, err)
	}
	delta := nstat(t, p.b, "TcpRetransSegs") - before
	sport := uint32(c.LocalAddr().(*net.TCPAddr).Port)

	var sum, events uint64
	var firstOut, lastOut, firstSegs uint32
	outBackwards := false
	sumRetrans := func(recs []rec) bool {
		sum, events, firstOut, lastOut, outBackwards = 0, 0, 0, 0, false
		for _, r := range recs {
			if ev := r.ev; ev != nil && ev.Type == tRetransmit && ev.Sport == sport && ev.Dport == uint32(port) {
				sum += uint64(ev.Segments)
				events++
				if events == 1 {
					firstOut, firstSegs = ev.SegsOut, ev.Segments
				}
				outBackwards = outBackwards || ev.SegsOut < lastOut
				lastOut = ev.SegsOut
			}
		}
		return sum >= delta
	}
	recs := waitUntil(deadline(t, 10*time.Second), col, sumRetrans)
	sumRetrans(recs)
	cnt, _ := tr.Counters()
	t.Logf("sent %d MiB, TcpRetransSegs +%d, %d RETRANSMIT events with %d segments, failed attempts %d, ring drops %d",
		sent>>20, delta, events, sum, cnt.RetransmitsFailed, cnt.Dropped)
	c.Close()
	conn := waitUntil(deadline(t, 5*time.Second), col, func(recs []rec) bool {
		for _, r := range recs {
			if r.conn != nil && r.conn.Sport == sport && r.conn.Dport == uint32(port) {
				return true
			}
		}
		return false
	})
	for _, r := range conn {
		if r.conn != nil && r.conn.Sport == sport && r.conn.Dport == uint32(port) {
			t.Logf("sender's connection: total_retrans %d, bytes sent %d, segments out %d", r.conn.Retransmits, r.conn.BytesSent, r.conn.SegmentsOut)
			if r.conn.BytesSent != uint64(sent) {
				t.Errorf("connection bytes_sent %d, sent %d", r.conn.BytesSent, sent)
			}
			if lastOut == 0 || lastOut > r.conn.SegmentsOut {
				t.Errorf("last RETRANSMIT segs_out %d: want > 0 and at most the connection's segments_out %d", lastOut, r.conn.SegmentsOut)
			}
		}
	}
	// segs_out of one connection's retransmits only grows; between the
	// first and the last it gives the ratio the detectors use: about the 3%
	// dropped.
	if outBackwards {
		t.Error("RETRANSMIT segs_out went backwards")
	}
	if lastOut > firstOut {
		ratio := float64(sum-uint64(firstSegs)) / float64(lastOut-firstOut)
		t.Logf("retransmitted / sent between the first and the last retransmit: %.2f%%", ratio*100)
		if ratio < 0.005 || ratio > 0.2 {
			t.Errorf("ratio from segs_out %.2f%%, want about the 3%% dropped", ratio*100)
		}
	}
	if delta < 10 {
		t.Fatalf("only %d retransmitted segments: the drop rule did not bite", delta)
	}
	if sum != delta {
		t.Errorf("RETRANSMIT segments sum to %d, TcpRetransSegs grew by %d", sum, delta)
	}
	if events >= sum {
		t.Logf("no GSO retransmit seen (%d events, %d segments)", events, sum)
	}
	if *record {
		var keep []rec
		for _, r := range recs {
			if r.ev != nil && r.ev.Type == tRetransmit && r.ev.Sport == sport && len(keep) < 4 {
				keep = append(keep, r)
			}
		}
		recordSamples(t, "retransmit", keep)
	}
}

// handshake dials 127.0.0.1:port of ln with nft rules in place and returns
// the client and server ESTABLISHED events and all records of the flow.
func handshake(t *testing.T, col *collector, rules ...string) (client, server *eventpb.Event, flow []rec) {
	t.Helper()
	ln, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	port := ln.Addr().(*net.TCPAddr).Port
	for i := range rules {
		rules[i] = fmt.Sprintf(rules[i], port)
	}
	nft(t, "", rules...)
	start := time.Now()
	c, err := net.DialTimeout("tcp4", ln.Addr().String(), 10*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	sc, err := ln.Accept()
	if err != nil {
		t.Fatal(err)
	}
	defer sc.Close()
	t.Logf("connect took %v", time.Since(start))
	cport := uint32(c.LocalAddr().(*net.TCPAddr).Port)
	est := func(ev *eventpb.Event, sport, dport uint32) bool {
		return ev.Type == tState && ev.NewState == sEst && ev.Sport == sport && ev.Dport == dport
	}
	recs := waitUntil(deadline(t, 10*time.Second), col, func(recs []rec) bool {
		client, server = nil, nil
		for _, r := range recs {
			switch {
			case r.ev == nil:
			case est(r.ev, cport, uint32(port)):
				client = r.ev
			case est(r.ev, uint32(port), cport):
				server = r.ev
			}
		}
		return client != nil && server != nil
	})
	if client == nil || server == nil {
		t.Fatalf("ESTABLISHED events: client %v, server %v", client, server)
	}
	for _, r := range recs {
		if r.ev != nil && (r.ev.Dport == uint32(port) || r.ev.Sport == uint32(port)) {
			flow = append(flow, r)
		}
	}
	return client, server, flow
}

func checkHandshake(t *testing.T, ev *eventpb.Event, side eventpb.Side, retrans uint32) {
	t.Helper()
	if ev.Side != side || ev.HandshakeRetransmits != retrans || ev.HandshakeUs < 900_000 || ev.HandshakeUs > 3_000_000 {
		t.Errorf("%v ESTABLISHED: side %v, handshake %d us with %d retransmits; want 0.9..3 s with %d",
			side, ev.Side, ev.HandshakeUs, ev.HandshakeRetransmits, retrans)
	}
}

// TestHandshakeClientSlow: the first SYN is dropped, the client sends it
// again after its 1 s initial RTO.
func TestHandshakeClientSlow(t *testing.T) {
	_, col := startTracer(t, Config{})
	client, server, _ := handshake(t, col, "out tcp dport %d tcp flags & (syn|ack) == syn quota until 100 bytes drop")
	checkHandshake(t, client, eventpb.Side_SIDE_CLIENT, 1)
	// The server saw only the second SYN: a fast handshake for it.
	if server.Side != eventpb.Side_SIDE_SERVER || server.HandshakeRetransmits != 0 || server.HandshakeUs == 0 || server.HandshakeUs > 100_000 {
		t.Errorf("server ESTABLISHED: side %v handshake %d us, %d retransmits; want SERVER, 0 < us < 100 ms, 0",
			server.Side, server.HandshakeUs, server.HandshakeRetransmits)
	}
}

// TestHandshakeServerSlow: the first SYN-ACK is dropped; the server sends
// it again (on its timer or on the client's repeated SYN), so its
// handshake, from the first SYN-ACK, takes about a second.
func TestHandshakeServerSlow(t *testing.T) {
	tr, col := startTracer(t, Config{})
	_, server, flow := handshake(t, col, "out tcp sport %d tcp flags & (syn|ack) == syn|ack quota until 100 bytes drop")
	cnt, err := tr.Counters()
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("server handshake %d us, %d retransmits; SYN-ACK map %+v", server.HandshakeUs, server.HandshakeRetransmits, cnt.Synacks)
	// The first SYN-ACK's time came from the SYN-ACK map (not the ms
	// total_rto_time fallback): one entry made and used.
	if cnt.Synacks.Inserts != 1 || cnt.Synacks.Deletes != 1 {
		t.Errorf("SYN-ACK map counters %+v, want one insert and one delete", cnt.Synacks)
	}
	checkHandshake(t, server, eventpb.Side_SIDE_SERVER, server.HandshakeRetransmits)
	if server.HandshakeRetransmits < 1 {
		t.Errorf("server handshake_retransmits %d, want >= 1", server.HandshakeRetransmits)
	}
	self := currentProc(t)
	var synacks []rec
	for _, r := range flow {
		if ev := r.ev; ev.Type == tSynack {
			synacks = append(synacks, r)
			if ev.Pid != self.pid || ev.OwnerSource != eventpb.OwnerSource_OWNER_SOURCE_LISTENER ||
				ev.NewState != eventpb.TcpState_TCP_STATE_NEW_SYN_RECV || ev.Segments != 1 || ev.Side != eventpb.Side_SIDE_SERVER {
				t.Errorf("SYNACK_RETRANSMIT %v", ev)
			}
		}
	}
	if len(synacks) != int(server.HandshakeRetransmits) {
		t.Errorf("%d SYNACK_RETRANSMIT events, handshake_retransmits %d", len(synacks), server.HandshakeRetransmits)
	}
	if *record && len(synacks) > 0 {
		recordSamples(t, "synack", synacks[:1])
	}
}

// TestConnectRefused: a connect to a closed port fails with ECONNREFUSED;
// the listener that had the port closing is no failed connect.
func TestConnectRefused(t *testing.T) {
	_, col := startTracer(t, Config{})
	ln, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := uint32(ln.Addr().(*net.TCPAddr).Port)
	ln.Close()
	_, err = net.DialTimeout("tcp4", "127.0.0.1:"+strconv.Itoa(int(port)), 10*time.Second)
	if !errors.Is(err, syscall.ECONNREFUSED) {
		t.Fatalf("dial: %v, want ECONNREFUSED", err)
	}
	self := currentProc(t)

	var failed, rstSent, rstRecv, sockErr, toClose *eventpb.Event
	var listenerClose *eventpb.Event
	var keep []rec
	recs := waitUntil(deadline(t, 10*time.Second), col, func(recs []rec) bool {
		failed, rstSent, rstRecv, sockErr, toClose, listenerClose = nil, nil, nil, nil, nil, nil
		keep = keep[:0]
		for _, r := range recs {
			ev := r.ev
			if ev == nil || (ev.Dport != port && ev.Sport != port) {
				continue
			}
			keep = append(keep, r)
			switch {
			case ev.Type == tConnFail:
				failed = ev
			case ev.Type == tRstSent:
				rstSent = ev
			case ev.Type == tRstRecv:
				rstRecv = ev
			case ev.Type == tSockErr:
				sockErr = ev
			case ev.Type == tState && ev.OldState == sSynSent && ev.NewState == sClose:
				toClose = ev
			case ev.Type == tState && ev.OldState == sListen && ev.NewState == sClose:
				listenerClose = ev
			}
		}
		return failed != nil && rstSent != nil && rstRecv != nil && sockErr != nil && toClose != nil && listenerClose != nil
	})
	if failed == nil || toClose == nil || rstSent == nil || rstRecv == nil || sockErr == nil || listenerClose == nil {
		t.Fatalf("missing events: connect failed %v, SYN_SENT->CLOSE %v, reset sent %v, reset received %v, socket error %v, listener close %v",
			failed, toClose, rstSent, rstRecv, sockErr, listenerClose)
	}
	for _, ev := range []*eventpb.Event{failed, toClose, sockErr} {
		if ev.Error != int32(syscall.ECONNREFUSED) {
			t.Errorf("%v: error %d, want %d", ev.Type, ev.Error, syscall.ECONNREFUSED)
		}
	}
	for _, ev := range []*eventpb.Event{failed, toClose, sockErr, rstRecv} {
		if ev.SockId != toClose.SockId || ev.Pid != self.pid || ev.OwnerSource == srcUnknown || ev.Side != eventpb.Side_SIDE_CLIENT || ev.Dport != port {
			t.Errorf("%v of the client socket: %v", ev.Type, ev)
		}
	}
	// Nothing listened: the reset came from no socket, with the segment's
	// addresses turned round.
	if rstSent.SockId != 0 || rstSent.NewState != 0 || rstSent.Sport != port || rstSent.Dport != toClose.Sport {
		t.Errorf("RESET_SENT: %v", rstSent)
	}
	if listenerClose.Error != 0 {
		t.Errorf("listener close: error %d", listenerClose.Error)
	}
	for _, r := range recs {
		if ev := r.ev; ev != nil && ev.Type == tConnFail && ev.Sport == port {
			t.Errorf("CONNECT_FAILED for the listener: %v", ev)
		}
	}
	if *record {
		recordSamples(t, "refused", keep)
	}
}

// TestProcessAttribution: a server and a client process (this binary run
// again) talk over loopback; the client's first data segment is dropped so
// that it retransmits from a timer. Every event and connection of their
// sockets must carry the right process, as ss -tnp shows it.
func TestProcessAttribution(t *testing.T) {
	const toServer, toClient = 4 << 20, 256 << 10
	_, col := startTracer(t, Config{})
	sizes := []string{fmt.Sprintf("NETPULSE_TRACER_TO_SERVER=%d", toServer), fmt.Sprintf("NETPULSE_TRACER_TO_CLIENT=%d", toClient)}
	srv := startHelper(t, "server", sizes...)
	port := srv.expect(t, "port ")
	nft(t, "", "in tcp dport "+port+" meta length > 1000 numgen random mod 3 == 0 drop")
	cli := startHelper(t, "client", append(sizes, "NETPULSE_TRACER_PORT="+port)...)
	cport := cli.expect(t, "local ")
	srv.expect(t, "ready")

	serverProc, clientProc := srv.proc(t), cli.proc(t)
	if got := ssOwner(t, "127.0.0.1:"+cport, "127.0.0.1:"+port); got != clientProc {
		t.Fatalf("ss: client socket owned by %v, helper is %v", got, clientProc)
	}
	if got := ssOwner(t, "127.0.0.1:"+port, "127.0.0.1:"+cport); got != serverProc {
		t.Fatalf("ss: server socket owned by %v, helper is %v", got, serverProc)
	}
	cli.finish(t) // client closes first: the server's ESTABLISHED->CLOSE_WAIT runs in softirq
	srv.finish(t)

	p, _ := strconv.Atoi(port)
	cp, _ := strconv.Atoi(cport)
	lport, rport := uint32(p), uint32(cp)
	var clientEvs, serverEvs, listenerEvs []rec
	var clientID, serverID uint64
	var conns []rec
	waitUntil(deadline(t, 10*time.Second), col, func(recs []rec) bool {
		clientEvs, clientID = bySockID(recs, func(ev *eventpb.Event) bool { return ev.Sport == rport && ev.Dport == lport })
		serverEvs, serverID = bySockID(recs, func(ev *eventpb.Event) bool { return ev.Sport == lport && ev.Dport == rport })
		listenerEvs, _ = bySockID(recs, func(ev *eventpb.Event) bool { return ev.Sport == lport && ev.Dport == 0 })
		conns = conns[:0]
		for _, r := range recs {
			if r.conn != nil && (r.conn.SockId == clientID || r.conn.SockId == serverID) {
				conns = append(conns, r)
			}
		}
		return hasState(recs, clientID, sClose) && hasState(recs, serverID, sClose) && len(listenerEvs) >= 2 && len(conns) >= 2
	})
	if len(conns) != 2 {
		t.Fatalf("%d connection records, want 2", len(conns))
	}

	unknown := 0
	check := func(name string, evs []rec, want proc) {
		if len(evs) == 0 {
			t.Errorf("%s: no events", name)
		}
		for _, r := range evs {
			ev := r.ev
			if ev.OwnerSource == srcUnknown {
				unknown++
			}
			if ev.Pid != want.pid || ev.Comm != want.comm {
				t.Errorf("%s %v %s (tid %d, source %v): owner %d %q, want %d %q", name, ev.Type, st{ev.OldState, ev.NewState},
					ev.Tid, ev.OwnerSource, ev.Pid, ev.Comm, want.pid, want.comm)
			}
		}
	}
	check("client", clientEvs, clientProc)
	check("server", serverEvs, serverProc)
	check("listener", listenerEvs, serverProc)
	if unknown != 0 {
		t.Errorf("%d events with owner_source UNKNOWN", unknown)
	}
	retrans := 0
	for _, r := range clientEvs {
		if r.ev.Type == tRetransmit {
			retrans++
		}
	}
	if retrans == 0 {
		t.Errorf("no RETRANSMIT event for the client socket (the drop rule should force one)")
	}
	for _, r := range conns {
		if r.conn.SockId == clientID {
			checkConn(t, r.conn, stateEvents(clientEvs), clientProc, toServer, toClient)
		} else {
			checkConn(t, r.conn, stateEvents(serverEvs), serverProc, toClient, toServer)
		}
	}
	for _, evs := range [][]rec{clientEvs, serverEvs} {
		for _, r := range evs {
			t.Logf("%v %s pid %d tid %d source %v", r.ev.Type, st{r.ev.OldState, r.ev.NewState}, r.ev.Pid, r.ev.Tid, r.ev.OwnerSource)
		}
	}
}

func stateEvents(evs []rec) []rec {
	var out []rec
	for _, r := range evs {
		if r.ev.Type == tState {
			out = append(out, r)
		}
	}
	return out
}

// TestMapPressure: more live sockets than the socket map holds; the LRU
// evicts, and MapUsage says so.
func TestMapPressure(t *testing.T) {
	tr, _ := startTracer(t, Config{SocketMapEntries: 16})
	ln, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	var conns []net.Conn
	defer func() {
		for _, c := range conns {
			c.Close()
		}
	}()
	for range 64 {
		c, err := net.Dial("tcp4", ln.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		sc, err := ln.Accept()
		if err != nil {
			t.Fatal(err)
		}
		conns = append(conns, c, sc)
	}
	u, err := tr.MapUsage()
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("%+v", u)
	s := u[0]
	if s.Name != "socket" || s.Capacity != 16 || s.Live > 16 || s.Evictions == 0 || s.Inserts < 128 {
		t.Errorf("socket map %+v: want capacity 16, live <= 16, >= 128 inserts, evictions > 0", s)
	}
}
