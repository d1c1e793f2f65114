// Package dropwin sums the probe's drop counts (kind drop: one count per
// key and interval) over a sliding window of their intervals' ends.
package dropwin

// Window holds one key's recent counts. The zero value is empty.
type Window struct {
	ends   []int64 // interval ends, nanoseconds
	counts []uint64
}

// Add records n drops in an interval that ended at end.
func (w *Window) Add(end int64, n uint64) {
	w.ends = append(w.ends, end)
	w.counts = append(w.counts, n)
}

// Sum forgets the counts that ended at or before now-span and returns the
// drops of the rest: those of the intervals ending in (now-span, now], and
// any a clock ahead of now stamped later.
func (w *Window) Sum(now, span int64) uint64 {
	cut := now - span
	var total uint64
	kept := 0
	for i, end := range w.ends {
		if end <= cut {
			continue
		}
		w.ends[kept], w.counts[kept] = end, w.counts[i]
		total += w.counts[i]
		kept++
	}
	w.ends, w.counts = w.ends[:kept], w.counts[:kept]
	return total
}

// Empty reports whether the window holds no counts (after Sum forgot the
// old ones).
func (w *Window) Empty() bool { return len(w.ends) == 0 }
