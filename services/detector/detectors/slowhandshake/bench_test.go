package slowhandshake

import (
	"fmt"
	"testing"
	"time"

	"github.com/netpulse/netpulse/lib/eventpb"
	"github.com/netpulse/netpulse/services/detector/detect"
	"github.com/netpulse/netpulse/services/detector/detectors/internal/dtest"
)

// BenchmarkObserve: a busy host's state changes and retransmits (3000
// connections/s, 200 remotes, about 15k events/s), batches of 100 ms, one
// evaluation per second.
func BenchmarkObserve(b *testing.B) {
	tr := dtest.Healthy(4, 2*time.Minute)
	tr.ServerConns, tr.ClientConns, tr.Remotes, tr.SnapshotEvery = 2000, 1000, 200, 0
	steps := tr.Stream().Steps(dtest.T0, dtest.At(2*time.Minute), time.Second, 100*time.Millisecond, kinds)
	dtest.Bench(b, steps, func() detect.Instance { return newInstance(b, nil) })
}

// BenchmarkHotPath: only handshakes (20k/s to 1000 remotes and into 10
// listeners), every event through the histogram path.
func BenchmarkHotPath(b *testing.B) {
	var s dtest.Stream
	for i := range 20000 * 60 {
		sk := dtest.Sock{ID: uint64(i + 1), Pid: 200, Comm: "worker", Local: "10.0.0.10:40000",
			Peer: fmt.Sprintf("10.1.%d.%d:5432", i%1000/250, i%250+1), Side: eventpb.Side_SIDE_CLIENT}
		from := dtest.SynSent
		if i%5 == 0 {
			sk.Side, sk.Local, sk.Peer = eventpb.Side_SIDE_SERVER, fmt.Sprintf("10.0.0.10:%d", 8000+i%10), "10.9.0.1:50000"
			from = dtest.SynRecv
		}
		e := sk.State(dtest.At(time.Duration(i)*50*time.Microsecond), from, dtest.Established)
		e.HandshakeUs = uint64(300 + i%700)
		s.Event(e)
	}
	steps := s.Steps(dtest.T0, dtest.At(time.Minute), time.Second, 100*time.Millisecond, kinds)
	dtest.Bench(b, steps, func() detect.Instance { return newInstance(b, nil) })
}
