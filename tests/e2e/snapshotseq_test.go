package e2e

import (
	"context"
	"fmt"
	"net"
	"os"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/netpulse/netpulse/lib/eventpb"
	"github.com/netpulse/netpulse/lib/testutil/natstest"
	"github.com/netpulse/netpulse/lib/testutil/priv"
	"github.com/netpulse/netpulse/lib/wire"
)

// A snapshot's events_seq says exactly which events its socket table held:
// a CLOSE_WAIT socket whose event has a seq at most events_seq is listed,
// one whose event has a higher seq is not, whatever the times. Consumers
// (conn_leak) order events against snapshots by it. Background churn keeps
// the probe's ring buffer busy so that events and snapshots interleave.
func TestSnapshotEventsSeq(t *testing.T) {
	priv.RequireRoot(t)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	ns := natstest.Start(t)
	nc, _ := natstest.Connect(t, ns)
	host := fmt.Sprintf("e2e-snapseq-%d", os.Getpid())

	ln, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	port := uint32(ln.Addr().(*net.TCPAddr).Port)

	type seen struct {
		enterSeq map[uint64]uint64 // sock id -> seq of its change to CLOSE_WAIT
		enterAt  map[uint64]uint64 // and its kernel time
		snaps    []*eventpb.Snapshot
	}
	got := make(chan func(*seen), 4096)
	for _, kind := range []string{wire.KindState, wire.KindSnapshot} {
		if _, err := nc.Subscribe(wire.EventSubject(host, kind), func(m *nats.Msg) {
			var b eventpb.Batch
			if rej := wire.DecodeBatch(&b, m.Data, host, "test"); rej != nil {
				t.Errorf("%s: %v", kind, rej.Err)
				return
			}
			got <- func(s *seen) {
				for _, ev := range b.Events {
					if ev.Sport == port && ev.NewState == eventpb.TcpState_TCP_STATE_CLOSE_WAIT {
						s.enterSeq[ev.SockId], s.enterAt[ev.SockId] = ev.Seq, ev.TimeUnixNano
					}
				}
				if b.Snapshot != nil {
					s.snaps = append(s.snaps, b.Snapshot)
				}
			}
		}); err != nil {
			t.Fatal(err)
		}
	}
	pr := start(t, "probe", "--nats.url="+ns.ClientURL(), "--host="+host, "--snapshot.interval=1s")
	pr.waitLog(ctx, "probe running")
	startChurn(t, 4)

	// Leak one server socket every 100 ms for 4 s: snapshots fall
	// between the changes to CLOSE_WAIT.
	const leaks = 40
	var held []net.Conn
	defer func() {
		for _, c := range held {
			c.Close()
		}
	}()
	for range leaks {
		c, err := net.Dial("tcp4", ln.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		s, err := ln.Accept()
		if err != nil {
			t.Fatal(err)
		}
		held = append(held, s)
		c.Close()
		time.Sleep(100 * time.Millisecond) // pacing the traffic, not synchronisation
	}

	s := &seen{enterSeq: map[uint64]uint64{}, enterAt: map[uint64]uint64{}}
	maxSeq := func() (m uint64) {
		for _, q := range s.enterSeq {
			m = max(m, q)
		}
		return m
	}
	// Until every change is seen and a snapshot holds them all.
	for len(s.enterSeq) < leaks || len(s.snaps) == 0 || s.snaps[len(s.snaps)-1].EventsSeq < maxSeq() {
		select {
		case f := <-got:
			f(s)
		case <-ctx.Done():
			t.Fatalf("saw %d of %d changes to CLOSE_WAIT and %d snapshots", len(s.enterSeq), leaks, len(s.snaps))
		}
	}
	split := 0  // snapshots that held some of the changes, not all
	byTime := 0 // changes stamped before a snapshot that did not hold them
	var last uint64
	for _, sn := range s.snaps {
		if sn.EventsSeq < last {
			t.Errorf("snapshot %d: events_seq %d after %d", sn.Seq, sn.EventsSeq, last)
		}
		last = sn.EventsSeq
		listed := map[uint64]bool{}
		for _, cw := range sn.CloseWait {
			if cw.Sport == port {
				listed[cw.SockId] = true
			}
		}
		held := 0
		for id, q := range s.enterSeq {
			in := q <= sn.EventsSeq
			if in && !listed[id] && sn.CloseWaitCut > 0 {
				// The list keeps the oldest max_close_wait: the churn's
				// own CLOSE_WAIT sockets (clients closing before the
				// accept) can push the youngest leaks out.
				held++
				continue
			}
			if in != listed[id] {
				t.Errorf("snapshot %d (events_seq %d, at %d, close_wait %d listed %d cut %d): socket %x (seq %d, at %d) listed %v",
					sn.Seq, sn.EventsSeq, sn.TimeUnixNano, sn.CloseWaitTotal, len(sn.CloseWait), sn.CloseWaitCut, id, q, s.enterAt[id], listed[id])
			} else if in {
				held++
			} else if s.enterAt[id] < sn.TimeUnixNano {
				byTime++
			}
		}
		if held > 0 && held < leaks {
			split++
		}
	}
	if split == 0 {
		t.Errorf("no snapshot fell between the changes (%d snapshots): the test did not exercise the order", len(s.snaps))
	}
	t.Logf("%d snapshots, %d between the %d changes to CLOSE_WAIT; %d changes stamped before a snapshot not yet in it (ordering by time would lose them)",
		len(s.snaps), split, leaks, byTime)
}
