package slowhandshake

import (
	"math"
	"testing"
)

func TestHistBins(t *testing.T) {
	prev := -1
	for us := uint64(0); us < 1<<20; us += 1 + us/97 {
		b := bin(us)
		if b < prev || b >= bins {
			t.Fatalf("bin(%d) = %d after %d", us, b, prev)
		}
		if lo, hi := bounds(b); float64(us) < lo || float64(us) >= hi {
			t.Fatalf("bin(%d) = %d with bounds [%g, %g)", us, b, lo, hi)
		}
		prev = b
	}
	if b := bin(math.MaxUint64); b != bins-1 {
		t.Errorf("bin(max) = %d, want %d", b, bins-1)
	}
}

func TestHistQuantile(t *testing.T) {
	var h hist
	for i := 1; i <= 1000; i++ { // 1 ms .. 1 s
		h[bin(uint64(i)*1000)]++
	}
	for _, c := range []struct{ q, want float64 }{{0.5, 500e3}, {0.99, 990e3}, {0.01, 10e3}} {
		got := h.quantile(c.q, 1000)
		if math.Abs(got-c.want)/c.want > 0.05 {
			t.Errorf("quantile(%g) = %g, want %g ± 5%%", c.q, got, c.want)
		}
	}
	if got := h.above(900e3); math.Abs(got-100) > 5 {
		t.Errorf("above(900ms) = %g, want about 100", got)
	}
}
