package slowhandshake

import (
	"testing"
	"time"

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
	dtest.Bench(b, steps, func() detect.Detector { return newDetector(b, nil) })
}
