package dropwin

import "testing"

func TestSumSlides(t *testing.T) {
	var w Window
	for i, n := range []uint64{5, 7, 11} {
		w.Add(int64(i+1)*10, n) // ends 10, 20, 30
	}
	for _, tc := range []struct {
		now, span int64
		want      uint64
	}{{30, 25, 23}, {30, 100, 23}, {35, 20, 18}, {40, 10, 0}} {
		if got := w.Sum(tc.now, tc.span); got != tc.want {
			t.Errorf("Sum(%d, %d) = %d, want %d", tc.now, tc.span, got, tc.want)
		}
	}
	if !w.Empty() {
		t.Error("window not empty after its counts slid out")
	}
	w.Add(100, 3)
	if got := w.Sum(50, 10); got != 3 {
		t.Errorf("a count stamped after now: Sum = %d, want 3", got)
	}
}
