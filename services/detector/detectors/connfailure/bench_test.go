package connfailure

import (
	"testing"
	"time"

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
	dtest.Bench(b, steps, func() detect.Detector { return newDetector(b, nil) })
}
