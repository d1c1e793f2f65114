// Package keys is a map with a hard size limit for per-host detector state:
// when it is full, adding a key evicts the least recently used of a few
// randomly sampled keys (approximate LRU in O(1)), and the evictions are
// counted so an alert can say that its view was cut.
package keys

// sample is how many keys an eviction compares: enough that the evicted key
// is almost always among the oldest few percent.
const sample = 8

type entry[V any] struct {
	v    V
	used int64
}

// Map holds at most Max keys.
type Map[K comparable, V any] struct {
	m     map[K]*entry[V]
	max   int
	reuse func(*V)
	// Evicted counts keys dropped to make room.
	Evicted uint64
}

// New makes a map of at most max (≥ 1) keys. An evicted key's value is
// handed to the key that replaces it, after reuse cleared it (keeping its
// buffers): a host flooding the map with new keys costs no allocation per
// key. With a nil reuse the new key gets a zero value.
func New[K comparable, V any](max int, reuse func(*V)) *Map[K, V] {
	if max < 1 {
		max = 1
	}
	return &Map[K, V]{m: make(map[K]*entry[V], min(max, 1024)), max: max, reuse: reuse}
}

// Len is the number of keys.
func (m *Map[K, V]) Len() int { return len(m.m) }

// Get returns k's value and marks it used at t; nil when absent.
func (m *Map[K, V]) Get(k K, t int64) *V {
	e := m.m[k]
	if e == nil {
		return nil
	}
	if t > e.used {
		e.used = t
	}
	return &e.v
}

// Peek returns k's value without marking it used.
func (m *Map[K, V]) Peek(k K) *V {
	if e := m.m[k]; e != nil {
		return &e.v
	}
	return nil
}

// GetOrAdd returns k's value, adding one (and evicting another key when the
// map is full); added is true for a new key, whose value is zero or a
// recycled one (see New). The pointer stays valid until the key is deleted
// or evicted.
func (m *Map[K, V]) GetOrAdd(k K, t int64) (v *V, added bool) {
	if v := m.Get(k, t); v != nil {
		return v, false
	}
	var e *entry[V]
	if len(m.m) >= m.max {
		e = m.evict()
	}
	if e == nil {
		e = &entry[V]{}
	} else if m.reuse != nil {
		m.reuse(&e.v)
	} else {
		var zero V
		e.v = zero
	}
	e.used = t
	m.m[k] = e
	return &e.v, true
}

// evict drops the least recently used of up to sample keys and returns its
// entry. Go starts each map iteration at a random place, which makes the
// first keys a sample.
func (m *Map[K, V]) evict() *entry[V] {
	var victim K
	var ve *entry[V]
	n := 0
	for k, e := range m.m {
		if n == 0 || e.used < ve.used {
			victim, ve = k, e
		}
		if n++; n == sample {
			break
		}
	}
	if ve != nil {
		delete(m.m, victim)
		m.Evicted++
	}
	return ve
}

// Delete removes k.
func (m *Map[K, V]) Delete(k K) { delete(m.m, k) }

// Range calls fn for each key with its value and last use until fn returns
// false. fn may delete the key it is given.
func (m *Map[K, V]) Range(fn func(k K, v *V, used int64) bool) {
	for k, e := range m.m {
		if !fn(k, &e.v, e.used) {
			return
		}
	}
}
