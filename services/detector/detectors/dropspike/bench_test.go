package dropspike

import (
	"testing"
	"time"

	"github.com/netpulse/netpulse/lib/eventpb"
	"github.com/netpulse/netpulse/services/detector/detect"
	"github.com/netpulse/netpulse/services/detector/detectors/internal/dtest"
)

// BenchmarkObserve: a drop storm's counts every 10 s, 2000 keys of four
// reasons, firing after the warm-up, one evaluation per second.
func BenchmarkObserve(b *testing.B) {
	var s dtest.Stream
	reasons := []string{"NETFILTER_DROP", "NO_SOCKET", "TCP_CSUM", "SOCKET_BACKLOG"}
	every(&s, 0, 10*time.Minute, func(d time.Duration) []*eventpb.DropCount {
		out := make([]*eventpb.DropCount, 0, 2000)
		n := uint64(1)
		if d > 6*time.Minute {
			n = 100
		}
		for k := range 2000 {
			out = append(out, dropped(d, reasons[k%4], uint32(k), k, n))
		}
		return out
	})
	steps := s.Steps(dtest.T0, dtest.At(10*time.Minute), time.Second, 100*time.Millisecond, kinds)
	dtest.Bench(b, steps, func() detect.Instance { return newInstance(b, nil) })
}
