package slowhandshake

import "math/bits"

// hist is a log-linear histogram of handshake times in microseconds: four
// bins per power of two (bins at most 25% wide, read with linear
// interpolation), 1 µs to 35 minutes, 480 bytes.
type hist [bins]uint32

const (
	sub     = 4 // bins per power of two
	maxUs   = 1<<31 - 1
	bins    = sub + (31-2)*sub
	subBits = 2 // log2(sub)
)

func bin(us uint64) int {
	if us < sub {
		return int(us)
	}
	if us > maxUs {
		us = maxUs
	}
	e := bits.Len64(us) - 1
	return sub + (e-subBits)*sub + int(us>>(e-subBits)&(sub-1))
}

// bounds is [lo, hi) of bin b.
func bounds(b int) (lo, hi float64) {
	if b < sub {
		return float64(b), float64(b + 1)
	}
	e := (b-sub)/sub + subBits
	s := (b - sub) % sub
	w := float64(uint64(1) << (e - subBits))
	lo = float64(sub+s) * w
	return lo, lo + w
}

func (h *hist) add(o *hist) {
	for i, c := range o {
		h[i] += c
	}
}

// quantile q of the n values in h, in microseconds.
func (h *hist) quantile(q float64, n uint32) float64 {
	if n == 0 {
		return 0
	}
	rank := q * float64(n)
	if rank < 1 {
		rank = 1
	}
	cum := 0.0
	for b, c := range h {
		if c == 0 {
			continue
		}
		if cum+float64(c) >= rank {
			lo, hi := bounds(b)
			return lo + (hi-lo)*(rank-cum)/float64(c)
		}
		cum += float64(c)
	}
	_, hi := bounds(bins - 1)
	return hi
}

// above is how many values exceed x microseconds (interpolated inside x's
// bin).
func (h *hist) above(x float64) float64 {
	n := 0.0
	for b := bin(uint64(x)); b < bins; b++ {
		c := h[b]
		if c == 0 {
			continue
		}
		lo, hi := bounds(b)
		if x > lo {
			n += float64(c) * (hi - x) / (hi - lo)
		} else {
			n += float64(c)
		}
	}
	return n
}
