package keys

import "testing"

func TestMapEvictsLeastRecentlyUsedOfSample(t *testing.T) {
	m := New[int, int](100, nil)
	for i := range 100 {
		v, added := m.GetOrAdd(i, int64(i))
		if !added {
			t.Fatal("not added")
		}
		*v = i
	}
	for i := 100; i < 1100; i++ {
		m.GetOrAdd(i, int64(i+1000))
	}
	if m.Len() != 100 || m.Evicted != 1000 {
		t.Fatalf("len %d evicted %d, want 100 and 1000", m.Len(), m.Evicted)
	}
	if m.Peek(1099) == nil {
		t.Error("the newest key was evicted")
	}
	if v := m.Get(-1, 0); v != nil {
		t.Error("Get of a missing key")
	}
	m.Delete(1099)
	if m.Peek(1099) != nil || m.Len() != 99 {
		t.Error("Delete")
	}
}

func TestMapRange(t *testing.T) {
	m := New[string, int](10, nil)
	for _, k := range []string{"a", "b", "c"} {
		m.GetOrAdd(k, 1)
	}
	n := 0
	m.Range(func(k string, v *int, used int64) bool {
		if k == "b" {
			m.Delete(k)
		}
		n++
		return true
	})
	if n != 3 || m.Len() != 2 {
		t.Errorf("visited %d, len %d", n, m.Len())
	}
}

func TestMapRecyclesEvicted(t *testing.T) {
	type val struct{ buf []int }
	cleared := 0
	m := New[int, val](1, func(v *val) { v.buf = v.buf[:0]; cleared++ })
	v, _ := m.GetOrAdd(1, 1)
	v.buf = append(make([]int, 0, 64), 1, 2, 3)
	w, added := m.GetOrAdd(2, 2)
	if !added || cleared != 1 || len(w.buf) != 0 || cap(w.buf) != 64 {
		t.Errorf("recycled value: added %v cleared %d len %d cap %d", added, cleared, len(w.buf), cap(w.buf))
	}
	if m.Peek(1) != nil || m.Evicted != 1 {
		t.Error("key 1 not evicted")
	}
}
