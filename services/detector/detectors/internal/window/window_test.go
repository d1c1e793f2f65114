package window

import (
	"testing"
	"time"
)

func sum(r *Ring[int], last int64) int {
	n := 0
	r.Each(last, func(_ int64, v *int) { n += *v })
	return n
}

func TestRingSlidesAndRejectsLate(t *testing.T) {
	r := New[int](time.Second, 3, nil)
	sec := func(s float64) int64 { return int64(s * 1e9) }
	for s := range 10 {
		*r.Slot(sec(float64(s) + 0.5)) += s
	}
	// Slots 7, 8, 9 are the window ending with 9.
	if got := sum(&r, 9); got != 7+8+9 {
		t.Errorf("window ending 9 = %d, want 24", got)
	}
	if got := sum(&r, 8); got != 6+7+8 {
		t.Errorf("window ending 8 = %d, want 21 (the slack keeps slot 6)", got)
	}
	if r.Slot(sec(4.5)) != nil {
		t.Error("a slot older than the ring was accepted")
	}
	// A little ahead of the clock is kept apart from the window.
	*r.Slot(sec(10.5)) += 100
	if got := sum(&r, 9); got != 24 {
		t.Errorf("an event ahead of the clock changed the window: %d", got)
	}
	if got := sum(&r, 10); got != 8+9+100 {
		t.Errorf("window ending 10 = %d, want 117", got)
	}
	r.Clear()
	if got := sum(&r, 10); got != 0 {
		t.Errorf("after Clear: %d", got)
	}
	if _, ok := r.Newest(); ok {
		t.Error("Newest after Clear")
	}
}

func TestRingNegativeTimes(t *testing.T) {
	r := New[int](time.Second, 2, nil)
	if a := r.Abs(-1); a != -1 {
		t.Errorf("Abs(-1ns) = %d, want -1", a)
	}
	*r.Slot(-1) = 5
	if got := sum(&r, -1); got != 5 {
		t.Errorf("got %d", got)
	}
}

func TestRingResetHook(t *testing.T) {
	freed := 0
	r := New[*int](time.Second, 1, func(p **int) {
		if *p != nil {
			freed++
		}
		*p = nil
	})
	for s := range 5 {
		v := s
		*r.Slot(int64(s) * 1e9) = &v
	}
	if freed != 5-3 { // 1 slot + 2 slack held, the rest reused
		t.Errorf("reset %d slots, want 2", freed)
	}
}
