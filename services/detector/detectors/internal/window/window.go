// Package window is a sliding time window of fixed slots, aligned to the Unix
// epoch, keyed by event time: constant memory per key and O(1) work per
// event, whatever the event rate.
package window

import (
	"math"
	"time"
)

// slack slots let events run a little ahead of the evaluation clock (probe
// and detector clocks differ) without overwriting slots still in the window.
const slack = 2

// Ring holds the last Span slots of Width each, plus slack. Slot a covers
// event times [a*Width, (a+1)*Width).
type Ring[T any] struct {
	width  int64
	span   int64
	abs    []int64
	vals   []T
	newest int64
	reset  func(*T)
}

// New makes a ring of span slots of width; reset clears a slot that is
// reused (nil: set it to T's zero value).
func New[T any](width time.Duration, span int, reset func(*T)) Ring[T] {
	if width <= 0 || span <= 0 {
		panic("window: width and span must be positive")
	}
	r := Ring[T]{
		width:  int64(width),
		span:   int64(span),
		abs:    make([]int64, span+slack),
		vals:   make([]T, span+slack),
		newest: math.MinInt64,
		reset:  reset,
	}
	for i := range r.abs {
		r.abs[i] = math.MinInt64
	}
	return r
}

// Width is the slot width in nanoseconds.
func (r *Ring[T]) Width() int64 { return r.width }

// Abs is the slot number holding time t (nanoseconds since the epoch).
func (r *Ring[T]) Abs(t int64) int64 {
	a := t / r.width
	if t < 0 && t%r.width != 0 {
		a--
	}
	return a
}

// Slot is the slot for event time t, cleared when its place held an older
// slot; nil when t is too old for the ring (a late event).
func (r *Ring[T]) Slot(t int64) *T {
	a := r.Abs(t)
	n := int64(len(r.abs))
	if r.newest != math.MinInt64 && a <= r.newest-n {
		return nil
	}
	i := a % n
	if i < 0 {
		i += n
	}
	switch {
	case r.abs[i] == a:
	case r.abs[i] > a:
		return nil
	default:
		if r.reset != nil {
			r.reset(&r.vals[i])
		} else {
			var zero T
			r.vals[i] = zero
		}
		r.abs[i] = a
	}
	if a > r.newest {
		r.newest = a
	}
	return &r.vals[i]
}

// Each calls fn for every held slot among the Span slots ending with slot
// last (inclusive), oldest first is not guaranteed.
func (r *Ring[T]) Each(last int64, fn func(abs int64, v *T)) {
	for i, a := range r.abs {
		if a != math.MinInt64 && a <= last && a > last-r.span {
			fn(a, &r.vals[i])
		}
	}
}

// Newest is the newest slot number written, and false when none was.
func (r *Ring[T]) Newest() (int64, bool) { return r.newest, r.newest != math.MinInt64 }

// Clear resets every held slot: the ring is as new.
func (r *Ring[T]) Clear() {
	for i, a := range r.abs {
		if a == math.MinInt64 {
			continue
		}
		if r.reset != nil {
			r.reset(&r.vals[i])
		} else {
			var zero T
			r.vals[i] = zero
		}
		r.abs[i] = math.MinInt64
	}
	r.newest = math.MinInt64
}
