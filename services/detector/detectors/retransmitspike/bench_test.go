package retransmitspike

import (
	"testing"
	"time"

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
	dtest.Bench(b, steps, func() detect.Detector { return newDetector(b, nil) })
}
