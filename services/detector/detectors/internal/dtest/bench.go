package dtest

import (
	"testing"

	"github.com/netpulse/netpulse/services/detector/detect"
)

// Bench feeds the steps round and round (a fresh detector per round), one
// step per benchmark iteration with its evaluation, and reports events per
// second: what one core of a replica sustains for this detector.
func Bench(b *testing.B, steps []Step, fresh func() detect.Instance) {
	counts := make([]int, len(steps))
	for i, st := range steps {
		counts[i] = Count([]Step{st})
	}
	b.ReportAllocs()
	b.ResetTimer()
	events := 0
	var d detect.Instance
	for i := range b.N {
		j := i % len(steps)
		if j == 0 {
			d = fresh()
		}
		for _, in := range steps[j].Inputs {
			d.Observe(in)
		}
		d.Evaluate(steps[j].Now)
		events += counts[j]
	}
	b.ReportMetric(float64(events)/b.Elapsed().Seconds(), "events/s")
	b.ReportMetric(0, "ns/op") // per step: not a useful figure
}
