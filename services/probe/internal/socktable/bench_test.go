package socktable

import (
	"encoding/binary"
	"fmt"
	"runtime"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/netpulse/netpulse/lib/eventpb"
	"github.com/netpulse/netpulse/services/probe/internal/sockdiag"
)

const benchSockets = 100_000

// benchGen makes the events of many client and server sockets on one
// reused Event, as the tracer's decoder does.
type benchGen struct {
	ev    eventpb.Event
	comms []string
}

func newBenchGen() *benchGen {
	g := &benchGen{ev: eventpb.Event{Family: v4, Saddr: make([]byte, 4), Daddr: make([]byte, 4)}}
	for i := range 50 {
		g.comms = append(g.comms, fmt.Sprintf("proc-%d", i))
	}
	return g
}

// event fills g.ev for socket slot i (generation gen) going from -> to.
func (g *benchGen) event(i, gen int, at int64, from, to eventpb.TcpState) *eventpb.Event {
	e := &g.ev
	e.Type = eventpb.EventType_EVENT_TYPE_STATE_CHANGE
	e.TimeUnixNano = uint64(at)
	e.SockId = uint64(gen)<<32 | uint64(i) + 1
	e.OldState, e.NewState = from, to
	proc := i % len(g.comms)
	e.Pid, e.Comm, e.CgroupId = uint32(1000+proc), g.comms[proc], uint64(proc%5)
	e.OwnerSource = ownTask
	if to == stEst || to == stCloseWait {
		e.OwnerSource = ownUnknown // softirq
	}
	binary.BigEndian.PutUint32(e.Saddr, 0x0a000001)
	binary.BigEndian.PutUint32(e.Daddr, 0x0a000000|uint32(i>>8))
	if i%2 == 0 { // server side
		e.Side, e.Sport, e.Dport = sideServer, uint32(8000+proc%10), uint32(10000+i%50000)
	} else {
		e.Side, e.Sport, e.Dport = sideClient, uint32(10000+i%50000), 443
	}
	if from == stClose {
		e.Sport = 0
	}
	return e
}

// open applies the two events that make slot i an established socket.
func (g *benchGen) open(tb *Table, i, gen int, at int64) {
	_ = tb.Apply(g.event(i, gen, at, stClose, stSynSent))
	_ = tb.Apply(g.event(i, gen, at, stSynSent, stEst))
}

func liveTable(n int) (*Table, *benchGen) {
	tb := New(3 * n) // room for the seeded sockets of BenchmarkApply too
	g := newBenchGen()
	for i := range n {
		g.open(tb, i, 0, t0)
	}
	tb.AbandonSeed() // steady state: no seed pending
	return tb, g
}

// BenchmarkApply applies events to a table of 100k live sockets: each slot
// in turn goes ESTABLISHED -> FIN_WAIT1 -> FIN_WAIT2 -> CLOSE and is opened
// again (CLOSE -> SYN_SENT -> ESTABLISHED), so the table keeps its size and
// a fifth of the events create or delete an entry. ns/op is per event.
func BenchmarkApply(b *testing.B) {
	b.Run("live=100k", func(b *testing.B) {
		tb, g := liveTable(benchSockets)
		benchApply(b, tb, g)
	})
	// The same with another 100k seeded sockets no event names: idle
	// connections that predate the probe.
	b.Run("live=100k+idle-seeded=100k", func(b *testing.B) {
		tb, g := liveTable(benchSockets)
		socks, owners := diagHost(benchSockets)
		for i := range socks { // other addresses than the live sockets
			socks[i].Src = ap(fmt.Sprintf("10.9.0.1:%d", socks[i].Src.Port()))
			socks[i].Cookie += 1 << 40
		}
		// Seeded long before the events measured: the probe's steady state.
		tb.Seed(socks, owners, time.Unix(0, t0-time.Hour.Nanoseconds()))
		benchApply(b, tb, g)
	})
}

func benchApply(b *testing.B, tb *Table, g *benchGen) {
	steps := [...][2]eventpb.TcpState{
		{stEst, stFinWait1}, {stFinWait1, stFinWait2}, {stFinWait2, stClose}, {stClose, stSynSent}, {stSynSent, stEst},
	}
	b.ReportAllocs()
	b.ResetTimer()
	op := 0
	for b.Loop() {
		slot := op % benchSockets
		round := op / benchSockets
		step := steps[round%len(steps)]
		gen := (round + 2) / len(steps) // a new socket from each CLOSE -> SYN_SENT on
		if err := tb.Apply(g.event(slot, gen, t0+int64(op), step[0], step[1])); err != nil {
			b.Fatal(err)
		}
		op++
	}
	if st := tb.Stats(); st.Evictions != 0 || st.BadEvents != 0 {
		b.Fatalf("stats %+v", st)
	}
}

// BenchmarkFillOwner fills the owner of softirq events from the table.
func BenchmarkFillOwner(b *testing.B) {
	tb, g := liveTable(benchSockets)
	b.ReportAllocs()
	b.ResetTimer()
	op := 0
	for b.Loop() {
		e := g.event(op%benchSockets, 0, t0, stEst, stCloseWait)
		if !tb.FillOwner(e) {
			b.Fatal("no owner")
		}
		op++
	}
}

// BenchmarkMemory measures the heap a table of 100k live sockets holds,
// made by events or seeded from sock_diag (seeded entries also sit in the
// cookie and address indexes until an event names them).
func BenchmarkMemory(b *testing.B) {
	b.Run("events", func(b *testing.B) {
		benchMemory(b, func() *Table {
			tb, _ := liveTable(benchSockets)
			return tb
		})
	})
	b.Run("seeded", func(b *testing.B) {
		socks, owners := diagHost(benchSockets)
		benchMemory(b, func() *Table {
			tb := New(2 * benchSockets)
			tb.Seed(socks, owners, time.Unix(0, t0))
			return tb
		})
	})
}

func benchMemory(b *testing.B, build func() *Table) {
	var tb *Table
	var perSocket float64
	for b.Loop() {
		tb = nil
		var before, after runtime.MemStats
		runtime.GC()
		runtime.ReadMemStats(&before)
		tb = build()
		runtime.GC()
		runtime.ReadMemStats(&after)
		if tb.Len() != benchSockets {
			b.Fatalf("%d sockets", tb.Len())
		}
		perSocket = float64(after.HeapAlloc-before.HeapAlloc) / benchSockets
	}
	runtime.KeepAlive(tb)
	b.ReportMetric(perSocket, "bytes/socket")
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N)/benchSockets, "ns/socket")
}

// diagHost is a host of n sockets as sock_diag reports them: 50
// processes, half server, half client sockets.
func diagHost(n int) ([]sockdiag.Socket, map[uint64]sockdiag.Owner) {
	g := newBenchGen()
	socks := make([]sockdiag.Socket, 0, n)
	owners := make(map[uint64]sockdiag.Owner, n)
	for i := range n {
		e := g.event(i, 0, t0, stSynSent, stEst)
		s := sockdiag.Socket{Family: unix.AF_INET, State: sockdiag.StateEstablished,
			Src: ap(fmt.Sprintf("10.0.0.1:%d", e.Sport)), Dst: ap(fmt.Sprintf("10.0.%d.%d:%d", e.Daddr[2], e.Daddr[3], e.Dport)),
			Cookie: uint64(i) + 1, Inode: uint64(i) + 1, Info: sockdiag.TCPInfo{Len: 232}}
		if i%5 == 0 {
			s.State = sockdiag.StateCloseWait
			s.Info = sockdiag.TCPInfo{Len: 232, LastAckRecvMs: uint32(i), LastDataRecvMs: uint32(i)}
		}
		socks = append(socks, s)
		owners[s.Inode] = sockdiag.Owner{PID: e.Pid, Comm: e.Comm, CgroupID: e.CgroupId, Procs: 1}
	}
	return socks, owners
}

// BenchmarkSnapshot summarises 100k sockets, a fifth in CLOSE_WAIT, into
// a reused message: 1000 groups and 1000 CLOSE_WAIT sockets at most.
func BenchmarkSnapshot(b *testing.B) {
	tb, g := liveTable(benchSockets)
	for i := 0; i < benchSockets; i += 5 {
		_ = tb.Apply(g.event(i, 0, t0+int64(i), stEst, stCloseWait))
	}
	var dst eventpb.Snapshot
	now := time.Unix(0, t0+time.Hour.Nanoseconds())
	tb.Snapshot(&dst, now, 1000, 1000)
	b.ReportAllocs()
	b.ResetTimer()
	for b.Loop() {
		tb.Snapshot(&dst, now, 1000, 1000)
	}
	if dst.CloseWaitTotal != benchSockets/5 || len(dst.CloseWait) != 1000 {
		b.Fatalf("close_wait %d listed of %d", len(dst.CloseWait), dst.CloseWaitTotal)
	}
	b.ReportMetric(float64(len(dst.Groups)), "groups")
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N)/benchSockets, "ns/socket")
}

// BenchmarkResync reconciles a table of 100k live sockets with a dump of
// the same sockets, a fifth in CLOSE_WAIT: the table-side cost of the
// probe's periodic resync (the dump itself is sockdiag's BenchmarkDumpFunc).
// "full" hands over every socket; "close-wait" the CLOSE_WAIT ones, as the
// resync before each snapshot does. One op is BeginResync, Add of each
// dumped socket and Resync.
func BenchmarkResync(b *testing.B) {
	for _, bc := range []struct {
		name   string
		states sockdiag.StateSet
	}{
		{"full", SeedStates},
		{"close-wait", CloseWaitStates},
	} {
		b.Run("sockets=100k/"+bc.name, func(b *testing.B) {
			tb, _ := liveTable(benchSockets)
			socks, _ := diagHost(benchSockets)
			d := tb.NewDump()
			run := func() ResyncResult {
				tb.BeginResync()
				d.Reset(bc.states)
				for i := range socks {
					d.Add(&socks[i])
				}
				return tb.Resync(d, time.Unix(0, t0+time.Hour.Nanoseconds()))
			}
			run() // learns the cookies, finds the CLOSE_WAIT states
			run() // corrects them
			if res := run(); res.Removed != 0 || len(res.Added) != 0 || res.Fixed != 0 || res.Unverified != 0 {
				b.Fatalf("consistent table: %+v", res)
			}
			b.ReportAllocs()
			b.ResetTimer()
			var res ResyncResult
			for b.Loop() {
				res = run()
			}
			if res.Removed != 0 || len(res.Added) != 0 || res.Fixed != 0 || tb.Len() != benchSockets {
				b.Fatalf("consistent table: %+v", res)
			}
			b.ReportMetric(float64(res.Dumped), "dumped")
			b.ReportMetric(float64(b.Elapsed().Milliseconds())/float64(b.N), "ms/resync")
		})
	}
}
