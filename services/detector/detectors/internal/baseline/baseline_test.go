package baseline

import "testing"

func TestEWMAWarmupMedianThenAverage(t *testing.T) {
	var e EWMA
	for _, x := range []float64{10, 500, 12, 11, 900} { // two odd windows while learning
		e.Add(x, 0.5, 5)
	}
	if !e.Ready(5) || e.Value != 12 {
		t.Fatalf("after warm-up: %g (ready %v), want the median 12", e.Value, e.Ready(5))
	}
	e.Add(20, 0.5, 5)
	if e.Value != 16 {
		t.Errorf("EWMA step: %g, want 16", e.Value)
	}
	if e.Ready(7) {
		t.Error("ready too early")
	}
}

func TestCadence(t *testing.T) {
	c := NewCadence(10)
	var due []int64
	for _, now := range []int64{3, 9, 10, 15, 19, 20, 45} {
		if c.Due(now) {
			due = append(due, now)
		}
	}
	if len(due) != 3 || due[0] != 10 || due[1] != 20 || due[2] != 45 {
		t.Errorf("due at %v, want [10 20 45]", due)
	}
}
