package connfailure

import (
	"fmt"
	"testing"
	"time"

	"github.com/netpulse/netpulse/lib/eventpb"
	"github.com/netpulse/netpulse/services/detector/detect"
	"github.com/netpulse/netpulse/services/detector/detectors/internal/dtest"
)

// BenchmarkObserve: a busy host's state changes, errors and resets (3000
// connections/s to 200 remotes, 20 of them refusing, 200 resets/s),
// batches of 100 ms, one evaluation per second.
func BenchmarkObserve(b *testing.B) {
	tr := dtest.Healthy(6, 2*time.Minute)
	tr.ServerConns, tr.ClientConns, tr.Remotes, tr.ResetsPerSec, tr.SnapshotEvery = 2000, 1000, 200, 200, 0
	for r := range 20 {
		tr.Down = append(tr.Down, dtest.Outage{Remote: r, From: dtest.T0, To: dtest.At(2 * time.Minute), Errno: 111})
	}
	steps := tr.Stream().Steps(dtest.T0, dtest.At(2*time.Minute), time.Second, 100*time.Millisecond, kinds)
	dtest.Bench(b, steps, func() detect.Instance { return newInstance(b, nil) })
}

// BenchmarkHotPath: only connects (20k/s to 1000 remotes, one in four
// refused) and resets (5k/s), every event through an endpoint window.
func BenchmarkHotPath(b *testing.B) {
	var s dtest.Stream
	for i := range 25000 * 60 {
		sk := dtest.Sock{ID: uint64(i + 1), Pid: 200, Comm: "worker", Local: "10.0.0.10:40000",
			Peer: fmt.Sprintf("10.1.%d.%d:5432", i%1000/250, i%250+1), Side: eventpb.Side_SIDE_CLIENT}
		at := dtest.At(time.Duration(i) * 40 * time.Microsecond)
		switch i % 5 {
		case 0:
			s.Event(sk.Event(at, eventpb.EventType_EVENT_TYPE_RESET_RECEIVED))
		case 1:
			e := sk.State(at, dtest.SynSent, dtest.Close)
			e.Type, e.Error = eventpb.EventType_EVENT_TYPE_CONNECT_FAILED, 111
			s.Event(e)
		default:
			s.Event(sk.State(at, dtest.SynSent, dtest.Established))
		}
	}
	steps := s.Steps(dtest.T0, dtest.At(time.Minute), time.Second, 100*time.Millisecond, kinds)
	dtest.Bench(b, steps, func() detect.Instance { return newInstance(b, nil) })
}
