package retransmitspike

import (
	"fmt"
	"testing"
	"time"

	"github.com/netpulse/netpulse/lib/eventpb"
	"github.com/netpulse/netpulse/services/detector/detect"
	"github.com/netpulse/netpulse/services/detector/detectors/internal/dtest"
)

// BenchmarkObserve: a lossy busy host (bulk transfers to 20 remotes losing
// 20k segments/s in all, 3000 connections/s finishing, snapshots), batches
// of 100 ms, one evaluation per second.
func BenchmarkObserve(b *testing.B) {
	tr := dtest.Healthy(5, 2*time.Minute)
	tr.ServerConns, tr.ClientConns = 2000, 1000
	for r := range 20 {
		tr.Loss = append(tr.Loss, dtest.Loss{Remote: r, From: dtest.T0, To: dtest.At(2 * time.Minute), Sent: 50000, Retrans: 1000})
	}
	steps := tr.Stream().Steps(dtest.T0, dtest.At(2*time.Minute), time.Second, 100*time.Millisecond, kinds)
	dtest.Bench(b, steps, func() detect.Instance { return newInstance(b, nil) })
}

// BenchmarkHotPath: only retransmits (50k segments/s to 10k remotes),
// every event through the host and a remote window.
func BenchmarkHotPath(b *testing.B) {
	var s dtest.Stream
	for i := range 50000 * 60 {
		sk := dtest.Sock{ID: uint64(i%5000 + 1), Pid: 200, Comm: "worker", Local: "10.0.0.10:40000",
			Peer: fmt.Sprintf("10.2.%d.%d:443", i%10000/250, i%250+1), Side: eventpb.Side_SIDE_CLIENT}
		e := sk.Event(dtest.At(time.Duration(i)*20*time.Microsecond), eventpb.EventType_EVENT_TYPE_RETRANSMIT)
		e.NewState, e.Segments = dtest.Established, 1
		s.Event(e)
	}
	steps := s.Steps(dtest.T0, dtest.At(time.Minute), time.Second, 100*time.Millisecond, kinds)
	dtest.Bench(b, steps, func() detect.Instance { return newInstance(b, nil) })
}
