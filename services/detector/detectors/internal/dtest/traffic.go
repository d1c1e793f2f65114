package dtest

import (
	"math"
	"math/rand/v2"
	"sort"
	"time"

	"github.com/netpulse/netpulse/lib/eventpb"
)

// Traffic describes a host's normal traffic: an "api" server (pid 100) on
// port 8080 that clients connect to, a "worker" (pid 200) that connects to
// database remotes on port 5432, a little noise (resets, a refused connect
// now and then, rare SYN losses, a few CLOSE_WAIT sockets an old process
// keeps), periodic snapshots with the host's segment counters.
type Traffic struct {
	Seed     uint64
	Start    time.Time
	Duration time.Duration
	// Connections per second accepted on 8080 and opened to the remotes.
	ServerConns, ClientConns float64
	// Remotes is the number of distinct database endpoints (10.1.x.y:5432).
	Remotes int
	// SegmentsPerConn is the mean number of segments a connection sends;
	// RetransProb the chance that one is retransmitted.
	SegmentsPerConn int
	RetransProb     float64
	// SynDropProb is the chance that a handshake lost its first SYN (1 s).
	SynDropProb float64
	// ResetsPerSec are resets received on accepted connections.
	ResetsPerSec float64
	// RefusedEvery is the period of a refused connect to 10.4.0.1:9999.
	RefusedEvery time.Duration
	// StuckCloseWait sockets of "legacy" (pid 300, port 9090) sit in
	// CLOSE_WAIT for the whole stream, entered 10 minutes before it.
	StuckCloseWait int
	// SnapshotEvery is the probe's snapshot interval (0: none).
	SnapshotEvery time.Duration
	// DropEvery is the probe's drops.interval (0: no drop counts): every
	// closed connection's socket purges a queued segment (QUEUE_PURGE, as
	// on a real loopback load), counted per service and remote.
	DropEvery time.Duration
	// Down are periods when connects to a database remote fail.
	Down []Outage
	// Storms are periods of extra resets.
	Storms []Storm
	// Loss are periods of bulk transfers that lose segments.
	Loss []Loss
	// Slow are periods of slow handshakes.
	Slow []Slowdown
	// Held are extra sockets in CLOSE_WAIT: a leak to detect in the middle
	// of the healthy traffic, in events and snapshots alike.
	Held []Held
}

// Outage makes the worker's connects to database remote number Remote begun
// in [From, To) fail after Wait with Errno (0: the worker gave up).
type Outage struct {
	Remote   int
	From, To time.Time
	Errno    int32
	Wait     time.Duration
}

// Storm adds PerSec resets from From to To: sent on connections into the
// api listener (Server), or received from database remote number Remote.
type Storm struct {
	Server   bool
	Remote   int
	From, To time.Time
	PerSec   float64
}

// Loss is a bulk transfer by the worker to database remote number Remote
// from From to To, sending Sent segments per second of which Retrans per
// second are retransmitted: RETRANSMIT events, a finished connection every
// 5 s (with its totals), and the host's counters in snapshots.
type Loss struct {
	Remote        int
	From, To      time.Time
	Sent, Retrans float64
}

// Slowdown adds Add to every handshake begun in [From, To) with the api
// listener (Server) or with database remote number Remote, which reports
// Retransmits SYNs (client) or SYN-ACKs (server; with SYNACK_RETRANSMIT
// events, one per second as the kernel's timer does).
type Slowdown struct {
	Server      bool
	Remote      int
	From, To    time.Time
	Add         time.Duration
	Retransmits uint32
}

// Held is a socket in CLOSE_WAIT from From to To (zero: to the end). The
// generator's own socket ids stay below 1<<32: use ids above.
type Held struct {
	Sock     Sock
	From, To time.Time
}

// Healthy is a busy but healthy host for d.
func Healthy(seed uint64, d time.Duration) Traffic {
	return Traffic{
		Seed: seed, Start: T0, Duration: d,
		ServerConns: 40, ClientConns: 30, Remotes: 20,
		SegmentsPerConn: 60, RetransProb: 0.001, SynDropProb: 0.0005,
		ResetsPerSec: 0.5, RefusedEvery: 40 * time.Second,
		StuckCloseWait: 3, SnapshotEvery: 15 * time.Second, DropEvery: 10 * time.Second,
	}
}

// Listen, Local and the owners of the synthetic host.
const (
	APIPort    = 8080
	DBPort     = 5432
	LegacyPort = 9090
)

// LocalIP is the synthetic host's address.
var LocalIP = IP("10.0.0.10")

// RemoteIP is the i-th database remote.
func RemoteIP(i int) []byte { return []byte{10, 1, byte(i / 250), byte(i%250 + 1)} }

func clientIP(i int) []byte { return []byte{10, 9, byte(i / 250), byte(i%250 + 1)} }

type conn struct {
	server                bool
	sock                  uint64
	peer                  []byte
	sport, dport          uint32
	pid                   uint32
	comm                  string
	est, end              int64 // established, closed
	cwFrom, cwTo          int64 // in CLOSE_WAIT, 0 when never
	segsOut, retransmits  uint32
	handshake, synRetrans uint32
}

// Stream generates the traffic.
func (tr Traffic) Stream() *Stream {
	rng := rand.New(rand.NewPCG(tr.Seed, 0x6e70))
	s := &Stream{}
	start, end := tr.Start.UnixNano(), tr.Start.Add(tr.Duration).UnixNano()
	var sock uint64 = 1000
	var conns []*conn
	exp := func(mean float64) int64 { return int64(rng.ExpFloat64() * mean) }
	ev := func(t int64, typ eventpb.EventType, c *conn) *eventpb.Event {
		e := &eventpb.Event{
			Type: typ, TimeUnixNano: uint64(t), Pid: c.pid, Tid: c.pid, Comm: c.comm,
			Family: eventpb.Family_FAMILY_IPV4, Saddr: LocalIP, Daddr: c.peer, Sport: c.sport, Dport: c.dport,
			SockId: c.sock, OwnerSource: eventpb.OwnerSource_OWNER_SOURCE_SOCKET, Side: eventpb.Side_SIDE_CLIENT,
		}
		if c.server {
			e.Side = eventpb.Side_SIDE_SERVER
		}
		return e
	}
	state := func(t int64, c *conn, from, to eventpb.TcpState, since int64) {
		if t > end {
			return
		}
		e := ev(t, eventpb.EventType_EVENT_TYPE_STATE_CHANGE, c)
		e.OldState, e.NewState = from, to
		if since > 0 {
			e.StateDurationUs = uint64((t - since) / 1e3)
		}
		if to == eventpb.TcpState_TCP_STATE_ESTABLISHED {
			e.HandshakeUs, e.HandshakeRetransmits = uint64(c.handshake), c.synRetrans
		}
		s.Event(e)
	}
	const (
		closeS   = eventpb.TcpState_TCP_STATE_CLOSE
		synSent  = eventpb.TcpState_TCP_STATE_SYN_SENT
		synRecv  = eventpb.TcpState_TCP_STATE_SYN_RECV
		estab    = eventpb.TcpState_TCP_STATE_ESTABLISHED
		closeW   = eventpb.TcpState_TCP_STATE_CLOSE_WAIT
		lastAck  = eventpb.TcpState_TCP_STATE_LAST_ACK
		finWait1 = eventpb.TcpState_TCP_STATE_FIN_WAIT1
		finWait2 = eventpb.TcpState_TCP_STATE_FIN_WAIT2
	)
	open := func(t int64, server bool) {
		sock++
		c := &conn{server: server, sock: sock}
		var base float64
		remote := -1
		if server {
			i := rng.IntN(500)
			c.peer, c.sport, c.dport, c.pid, c.comm = clientIP(i), APIPort, uint32(32768+rng.IntN(28000)), 100, "api"
			base = 250
		} else {
			r := rng.IntN(max(tr.Remotes, 1))
			remote = r
			c.peer, c.sport, c.dport, c.pid, c.comm = RemoteIP(r), uint32(32768+rng.IntN(28000)), DBPort, 200, "worker"
			base = 300 + float64(r%7)*150
		}
		hs := base * math.Exp(rng.NormFloat64()*0.3)
		if rng.Float64() < tr.SynDropProb {
			hs += 1e6
			c.synRetrans = 1
		}
		for _, sd := range tr.Slow {
			if sd.Server != server || !server && sd.Remote != remote || t < sd.From.UnixNano() || t >= sd.To.UnixNano() {
				continue
			}
			hs += float64(sd.Add.Microseconds())
			c.synRetrans += sd.Retransmits
			for i := range sd.Retransmits {
				if at := t + int64(i+1)*1e9; server && at <= end {
					e := ev(at, eventpb.EventType_EVENT_TYPE_SYNACK_RETRANSMIT, c)
					e.NewState, e.Segments = eventpb.TcpState_TCP_STATE_NEW_SYN_RECV, 1
					s.Event(e)
				}
			}
		}
		c.handshake = uint32(hs)
		if !server {
			state(t, c, closeS, synSent, 0)
			for _, o := range tr.Down {
				if o.Remote == remote && t >= o.From.UnixNano() && t < o.To.UnixNano() {
					if at := t + int64(o.Wait); at <= end {
						e := ev(at, eventpb.EventType_EVENT_TYPE_CONNECT_FAILED, c)
						e.OldState, e.NewState, e.Error = synSent, closeS, o.Errno
						e.StateDurationUs = uint64(o.Wait / time.Microsecond)
						s.Event(e)
					}
					return
				}
			}
		}
		c.est = t + int64(hs*1e3)
		if server {
			state(c.est, c, synRecv, estab, t)
		} else {
			state(c.est, c, synSent, estab, t)
		}
		c.end = c.est + exp(2e9)
		peerCloses := rng.Float64() < 0.8
		if !server {
			peerCloses = rng.Float64() < 0.1
		}
		if peerCloses {
			c.cwFrom = c.end
			c.cwTo = c.end + exp(2e6) + 10e3
			state(c.cwFrom, c, estab, closeW, c.est)
			state(c.cwTo, c, closeW, lastAck, c.cwFrom)
			c.end = c.cwTo + 200e3
			state(c.end, c, lastAck, closeS, c.cwTo)
		} else {
			state(c.end, c, estab, finWait1, c.est)
			state(c.end+100e3, c, finWait1, finWait2, c.end)
			state(c.end+300e3, c, finWait2, closeS, c.end+100e3)
			c.end += 300e3
		}
		c.segsOut = uint32(1 + rng.IntN(2*max(tr.SegmentsPerConn, 1)))
		if tr.RetransProb > 0 {
			for range c.segsOut {
				if rng.Float64() < tr.RetransProb {
					c.retransmits++
					rt := c.est + rng.Int64N(max(c.end-c.est, 1))
					if rt <= end {
						e := ev(rt, eventpb.EventType_EVENT_TYPE_RETRANSMIT, c)
						e.NewState, e.Segments = estab, 1
						// Sent so far, at an even pace over its life.
						e.SegsOut = 1 + uint32(float64(c.segsOut)*float64(rt-c.est)/float64(max(c.end-c.est, 1)))
						s.Event(e)
					}
				}
			}
		}
		if c.end <= end {
			s.Conn(&eventpb.Connection{
				TimeUnixNano: uint64(c.end), SockId: c.sock, Pid: c.pid, Comm: c.comm,
				OwnerSource: eventpb.OwnerSource_OWNER_SOURCE_SOCKET, Family: eventpb.Family_FAMILY_IPV4,
				Saddr: LocalIP, Daddr: c.peer, Sport: c.sport, Dport: c.dport, Side: sideOf(server),
				StartUnixNano: uint64(t), DurationUs: uint64((c.end - t) / 1e3),
				SegmentsOut: c.segsOut, SegmentsIn: c.segsOut, Retransmits: c.retransmits,
				SrttUs: 200, HandshakeUs: uint64(c.handshake), HandshakeRetransmits: c.synRetrans,
				LastState: lastAck,
			})
		}
		conns = append(conns, c)
	}
	arrivals := func(rate float64, server bool) {
		if rate <= 0 {
			return
		}
		for t := start + exp(1e9/rate); t < end; t += exp(1e9 / rate) {
			open(t, server)
		}
	}
	arrivals(tr.ServerConns, true)
	arrivals(tr.ClientConns, false)

	if tr.ResetsPerSec > 0 {
		for t := start + exp(1e9/tr.ResetsPerSec); t < end; t += exp(1e9 / tr.ResetsPerSec) {
			sock++
			c := &conn{server: true, sock: sock, peer: clientIP(rng.IntN(500)), sport: APIPort,
				dport: uint32(32768 + rng.IntN(28000)), pid: 100, comm: "api"}
			e := ev(t, eventpb.EventType_EVENT_TYPE_RESET_RECEIVED, c)
			e.NewState = estab
			s.Event(e)
		}
	}
	for _, st := range tr.Storms {
		for t := st.From.UnixNano() + exp(1e9/st.PerSec); t < min(st.To.UnixNano(), end); t += exp(1e9 / st.PerSec) {
			sock++
			c := &conn{server: true, sock: sock, peer: clientIP(rng.IntN(500)), sport: APIPort,
				dport: uint32(32768 + rng.IntN(28000)), pid: 100, comm: "api"}
			typ := eventpb.EventType_EVENT_TYPE_RESET_SENT
			if !st.Server {
				c = &conn{sock: sock, peer: RemoteIP(st.Remote), sport: uint32(32768 + rng.IntN(28000)), dport: DBPort, pid: 200, comm: "worker"}
				typ = eventpb.EventType_EVENT_TYPE_RESET_RECEIVED
			}
			e := ev(t, typ, c)
			e.NewState = estab
			s.Event(e)
		}
	}
	if tr.RefusedEvery > 0 {
		for t := start + int64(tr.RefusedEvery)/2; t < end; t += int64(tr.RefusedEvery) {
			sock++
			c := &conn{sock: sock, peer: IP("10.4.0.1"), sport: uint32(40000 + rng.IntN(20000)), dport: 9999, pid: 200, comm: "worker"}
			e := ev(t, eventpb.EventType_EVENT_TYPE_CONNECT_FAILED, c)
			e.OldState, e.NewState, e.Error, e.StateDurationUs = synSent, closeS, 111, 150
			s.Event(e)
		}
	}
	var stuck []*conn
	for i := range tr.StuckCloseWait {
		sock++
		stuck = append(stuck, &conn{sock: sock, server: true, peer: clientIP(400 + i), sport: LegacyPort,
			dport: uint32(40000 + i), pid: 300, comm: "legacy", cwFrom: start - int64(10*time.Minute)})
	}
	for li, l := range tr.Loss {
		from, to := l.From.UnixNano(), min(l.To.UnixNano(), end)
		for cs := from; cs < to; cs += 5e9 {
			ce := min(cs+5e9, to)
			sock++
			c := &conn{sock: sock, peer: RemoteIP(l.Remote), sport: uint32(33000 + li), dport: DBPort, pid: 200, comm: "worker"}
			var rt uint32
			if l.Retrans > 0 {
				for t := cs + exp(1e9/l.Retrans); t < ce; t += exp(1e9 / l.Retrans) {
					e := ev(t, eventpb.EventType_EVENT_TYPE_RETRANSMIT, c)
					e.NewState, e.Segments = estab, 1
					rt++
					e.SegsOut = uint32(l.Sent*float64(t-cs)/1e9) + rt // the retransmits are sent too
					s.Event(e)
				}
			}
			s.Conn(&eventpb.Connection{
				TimeUnixNano: uint64(ce), SockId: c.sock, Pid: c.pid, Comm: c.comm,
				OwnerSource: eventpb.OwnerSource_OWNER_SOURCE_SOCKET, Family: eventpb.Family_FAMILY_IPV4,
				Saddr: LocalIP, Daddr: c.peer, Sport: c.sport, Dport: c.dport, Side: eventpb.Side_SIDE_CLIENT,
				StartUnixNano: uint64(cs), DurationUs: uint64((ce - cs) / 1e3),
				SegmentsOut: uint32(l.Sent * float64(ce-cs) / 1e9), Retransmits: rt, LastState: finWait2,
			})
		}
	}
	var held []*conn
	for _, h := range tr.Held {
		s.Event(h.Sock.State(h.From, estab, closeW))
		c := &conn{server: h.Sock.Side == eventpb.Side_SIDE_SERVER, sock: h.Sock.ID, pid: h.Sock.Pid, comm: h.Sock.Comm,
			cwFrom: h.From.UnixNano(), cwTo: math.MaxInt64}
		c.peer, c.dport, _ = split(h.Sock.Peer)
		_, c.sport, _ = split(h.Sock.Local)
		if !h.To.IsZero() {
			c.cwTo = h.To.UnixNano()
			if c.cwTo <= end {
				e := h.Sock.State(h.To, closeW, lastAck)
				e.StateDurationUs = uint64(h.To.Sub(h.From) / time.Microsecond)
				s.Event(e)
			}
		}
		held = append(held, c)
	}
	if tr.SnapshotEvery > 0 {
		tr.snapshots(s, conns, stuck, held, start, end)
	}
	if tr.DropEvery > 0 {
		tr.drops(s, conns, start, end)
	}
	return s
}

// drops adds the probe's kernel drop counts every DropEvery: one per
// closed connection, keyed as the probe keys them (the client's port 0).
func (tr Traffic) drops(s *Stream, conns []*conn, start, end int64) {
	type key struct {
		lport, rport uint32
		remote       string
	}
	every := int64(tr.DropEvery)
	for t := start + every; t <= end; t += every {
		counts := map[key]uint64{}
		var order []key
		for _, c := range conns {
			if c.end <= t-every || c.end > t {
				continue
			}
			k := key{lport: c.sport, rport: c.dport, remote: string(c.peer)}
			if c.server {
				k.rport = 0
			} else {
				k.lport = 0
			}
			if counts[k] == 0 {
				order = append(order, k)
			}
			counts[k]++
		}
		for _, k := range order {
			s.Drop(&eventpb.DropCount{
				Source: eventpb.DropSource_DROP_SOURCE_KFREE_SKB, Reason: "QUEUE_PURGE", Family: eventpb.Family_FAMILY_IPV4,
				Saddr: LocalIP, Sport: k.lport, Daddr: []byte(k.remote), Dport: k.rport, Count: counts[k],
				StartUnixNano: uint64(t - every), EndUnixNano: uint64(t),
			})
		}
	}
}

func sideOf(server bool) eventpb.Side {
	if server {
		return eventpb.Side_SIDE_SERVER
	}
	return eventpb.Side_SIDE_CLIENT
}

// snapshots adds what the probe would publish every SnapshotEvery: groups,
// the CLOSE_WAIT sockets with their ages, and the host's segment counters
// (segments counted when a connection closes, retransmits when they happen).
func (tr Traffic) snapshots(s *Stream, conns, stuck, held []*conn, start, end int64) {
	type key struct {
		state eventpb.TcpState
		pid   uint32
		port  uint32
	}
	var seq uint64
	for t := start; t <= end; t += int64(tr.SnapshotEvery) {
		seq++
		groups := map[key]*eventpb.SocketGroup{}
		group := func(st eventpb.TcpState, c *conn) {
			port := c.sport
			if !c.server {
				port = 0
			}
			k := key{st, c.pid, port}
			g := groups[k]
			if g == nil {
				g = &eventpb.SocketGroup{State: st, Pid: c.pid, Comm: c.comm, LocalPort: port, Side: sideOf(c.server)}
				groups[k] = g
			}
			g.Count++
		}
		var cw []*eventpb.SnapshotSocket
		closeWait := func(c *conn) {
			group(eventpb.TcpState_TCP_STATE_CLOSE_WAIT, c)
			cw = append(cw, &eventpb.SnapshotSocket{
				SockId: c.sock, Pid: c.pid, Comm: c.comm, OwnerSource: eventpb.OwnerSource_OWNER_SOURCE_SOCKET,
				Family: eventpb.Family_FAMILY_IPV4, Saddr: LocalIP, Daddr: c.peer, Sport: c.sport, Dport: c.dport,
				Side: sideOf(c.server), AgeUs: uint64((t - c.cwFrom) / 1e3),
			})
		}
		var outSegs, retrans uint64 = 1e6, 1e3
		for _, l := range tr.Loss {
			if from, to := l.From.UnixNano(), min(l.To.UnixNano(), t); to > from {
				outSegs += uint64(l.Sent * float64(to-from) / 1e9)
				retrans += uint64(l.Retrans * float64(to-from) / 1e9)
			}
		}
		// The worker closes first: its connections leave TIME_WAIT sockets
		// towards their remote for a minute.
		type remote struct {
			addr [4]byte
			port uint32
		}
		ends := map[remote]*eventpb.EndpointGroup{}
		endpointOf := func(c *conn) *eventpb.EndpointGroup {
			k := remote{[4]byte(c.peer), c.dport}
			g := ends[k]
			if g == nil {
				g = &eventpb.EndpointGroup{Family: eventpb.Family_FAMILY_IPV4, Saddr: LocalIP, Daddr: c.peer, Dport: c.dport,
					Pid: c.pid, Comm: c.comm}
				ends[k] = g
			}
			return g
		}
		prev := t - int64(tr.SnapshotEvery)
		for _, c := range conns {
			if !c.server && c.cwFrom == 0 {
				switch {
				case c.est <= t && t < c.end:
					endpointOf(c).Live++
				case c.end <= t && t-c.end < int64(time.Minute):
					g := endpointOf(c)
					g.TimeWait++
					if c.end > prev {
						g.TimeWaitEntered++
					}
				}
			}
			switch {
			case c.cwFrom != 0 && c.cwFrom <= t && t < c.cwTo:
				closeWait(c)
			case c.est <= t && t < c.end:
				group(eventpb.TcpState_TCP_STATE_ESTABLISHED, c)
			}
			if c.end <= t {
				outSegs += uint64(c.segsOut)
				retrans += uint64(c.retransmits)
			}
		}
		for _, c := range stuck {
			closeWait(c)
		}
		for _, c := range held {
			if c.cwFrom <= t && t < c.cwTo {
				closeWait(c)
			}
		}
		groups[key{eventpb.TcpState_TCP_STATE_LISTEN, 100, APIPort}] = &eventpb.SocketGroup{
			State: eventpb.TcpState_TCP_STATE_LISTEN, Pid: 100, Comm: "api", LocalPort: APIPort, Count: 1}
		sn := &eventpb.Snapshot{
			TimeUnixNano: uint64(t), Seq: seq, CloseWait: cw, CloseWaitTotal: uint32(len(cw)),
			Seeded: true, TcpOutSegs: outSegs, TcpRetransSegs: retrans,
			IntervalMs:    uint32(tr.SnapshotEvery / time.Millisecond),
			EndpointsRead: true, PortRangeLow: 32768, PortRangeHigh: 60999, FinTimeoutS: 60, MaxTwBuckets: 262144, TwReuse: 2,
		}
		for _, g := range ends {
			sn.Endpoints = append(sn.Endpoints, g)
			sn.TimeWaitTotal += g.TimeWait
			sn.TimeWaitEntered += uint64(g.TimeWaitEntered)
		}
		sort.Slice(sn.Endpoints, func(i, j int) bool {
			a, b := sn.Endpoints[i], sn.Endpoints[j]
			if x, y := a.TimeWait+a.Live, b.TimeWait+b.Live; x != y {
				return x > y
			}
			return string(a.Daddr) < string(b.Daddr)
		})
		for _, g := range groups {
			sn.Groups = append(sn.Groups, g)
			sn.SocketsTotal += g.Count
		}
		sort.Slice(sn.Groups, func(i, j int) bool {
			a, b := sn.Groups[i], sn.Groups[j]
			if a.State != b.State {
				return a.State < b.State
			}
			if a.Pid != b.Pid {
				return a.Pid < b.Pid
			}
			return a.LocalPort < b.LocalPort
		})
		sort.SliceStable(sn.CloseWait, func(i, j int) bool { return sn.CloseWait[i].AgeUs > sn.CloseWait[j].AgeUs })
		s.Snapshot(sn)
	}
}
