package socktable

import "testing"

func TestSlabReusesFreedSlotsAcrossChunks(t *testing.T) {
	s := newSlab()
	n := 2*chunkLen + 3 // into a third chunk
	for i := range n {
		idx := s.alloc()
		if int(idx) != i {
			t.Fatalf("alloc %d returned slot %d", i, idx)
		}
		s.at(idx).sockID = uint64(i) + 1
	}
	if len(s.chunks) != 3 {
		t.Fatalf("%d chunks for %d slots, want 3", len(s.chunks), n)
	}
	freed := []int32{5, chunkLen + 7, int32(n - 1)}
	for _, i := range freed {
		s.release(i)
	}
	// Last freed, first reused; every reused slot comes back zeroed.
	for k := len(freed) - 1; k >= 0; k-- {
		idx := s.alloc()
		if idx != freed[k] {
			t.Fatalf("alloc returned slot %d, want freed slot %d", idx, freed[k])
		}
		if *s.at(idx) != (entry{}) {
			t.Fatalf("reused slot %d not zeroed: %+v", idx, *s.at(idx))
		}
	}
	if s.slots() != n || len(s.chunks) != 3 {
		t.Fatalf("%d slots in %d chunks after reuse, want %d in 3", s.slots(), len(s.chunks), n)
	}
	if got := s.at(chunkLen + 8).sockID; got != chunkLen+9 {
		t.Fatalf("untouched slot holds sock %d", got)
	}
}
