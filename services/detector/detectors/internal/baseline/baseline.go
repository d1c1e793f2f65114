// Package baseline learns what is normal for one key: one sample per window,
// fed only with windows the detector judged healthy, so that an incident
// never teaches it that the incident is normal.
package baseline

import "slices"

// EWMA is a learned baseline: the median of the first warm-up samples (a
// minority of odd windows while learning does not move it), then an
// exponentially weighted moving average.
type EWMA struct {
	Value float64
	// N is the number of windows learned.
	N    int
	warm []float64
}

// Add learns one healthy window's sample x: the first warmup samples by
// their median, later ones with weight alpha in (0, 1].
func (e *EWMA) Add(x, alpha float64, warmup int) {
	e.N++
	if e.N <= warmup {
		e.warm = append(e.warm, x)
		s := slices.Clone(e.warm)
		slices.Sort(s)
		e.Value = s[len(s)/2]
		if e.N == warmup {
			e.warm = nil
		}
		return
	}
	e.Value += alpha * (x - e.Value)
}

// Assume makes the baseline x, learned over warmup windows: for a key known
// to have been at x while its surroundings were watched (a remote address
// that showed nothing while its host was learned has a baseline of 0).
func (e *EWMA) Assume(x float64, warmup int) {
	e.Value, e.N, e.warm = x, warmup, nil
}

// Ready reports whether at least min windows were learned.
func (e EWMA) Ready(min int) bool { return e.N >= min }

// Cadence says once per period (on the evaluation clock) that a new window
// ended: the moment a detector learns.
type Cadence struct {
	period int64
	last   int64
	primed bool
}

// NewCadence makes a cadence of period nanoseconds.
func NewCadence(period int64) Cadence { return Cadence{period: period} }

// Due reports whether now (nanoseconds) is in a later period than the last
// call that returned true. The first call only primes it: the window before
// the detector started is not a full one.
func (c *Cadence) Due(now int64) bool {
	p := now / c.period
	if !c.primed {
		c.primed, c.last = true, p
		return false
	}
	if p <= c.last {
		return false
	}
	c.last = p
	return true
}
