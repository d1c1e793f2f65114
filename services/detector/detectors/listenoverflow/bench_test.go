package listenoverflow

import (
	"testing"
	"time"

	"github.com/netpulse/netpulse/services/detector/detect"
	"github.com/netpulse/netpulse/services/detector/detectors/internal/dtest"
)

// BenchmarkObserve: a drop storm's counts every 10 s: 2000 kernel drop
// keys (ignored) and 200 overflowing listeners, one evaluation per second.
func BenchmarkObserve(b *testing.B) {
	var s dtest.Stream
	for d := 10 * time.Second; d <= 2*time.Minute; d += 10 * time.Second {
		for k := range 2000 {
			s.Drop(kernelDrop(d, uint32(20000+k), 3))
		}
		for p := range 200 {
			s.Drop(refused(d, uint32(8000+p), 40))
		}
	}
	steps := s.Steps(dtest.T0, dtest.At(2*time.Minute), time.Second, 100*time.Millisecond, kinds)
	dtest.Bench(b, steps, func() detect.Instance { return newInstance(b, nil) })
}
