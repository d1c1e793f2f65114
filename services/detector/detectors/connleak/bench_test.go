package connleak

import (
	"testing"
	"time"

	"github.com/netpulse/netpulse/services/detector/detect"
	"github.com/netpulse/netpulse/services/detector/detectors/internal/dtest"
)

// BenchmarkObserve: a busy healthy host's state changes and snapshots (3000
// connections/s, about 15k state changes/s like loopback at full speed, a
// few hundred sockets in CLOSE_WAIT at any time), batches of 100 ms, one
// evaluation per second.
func BenchmarkObserve(b *testing.B) {
	tr := dtest.Healthy(3, 2*time.Minute)
	tr.ServerConns, tr.ClientConns = 2000, 1000
	steps := tr.Stream().Steps(dtest.T0, dtest.At(2*time.Minute), time.Second, 100*time.Millisecond, kinds)
	dtest.Bench(b, steps, func() detect.Instance { return newInstance(b, nil) })
}

// BenchmarkHotPath: only CLOSE_WAIT transitions (5000 sockets/s enter, each
// leaves after up to a minute, so ~150k are held), the detector's worst
// case per event and per evaluation.
func BenchmarkHotPath(b *testing.B) {
	var s dtest.Stream
	for i := range 5000 * 60 {
		sk := api(i)
		sk.Pid = uint32(100 + i%50)
		at := dtest.At(time.Duration(i) * 200 * time.Microsecond)
		s.Event(sk.State(at, dtest.Established, dtest.CloseWait))
		s.Event(sk.State(at.Add(time.Duration(i%60)*time.Second), dtest.CloseWait, dtest.LastAck))
	}
	steps := s.Steps(dtest.T0, dtest.At(2*time.Minute), time.Second, 100*time.Millisecond, kinds)
	dtest.Bench(b, steps, func() detect.Instance { return newInstance(b, nil) })
}
