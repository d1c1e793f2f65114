package socktable

// chunkBits sizes the slab's chunks: 1024 entries (96 KiB).
const chunkBits = 10

const chunkLen = 1 << chunkBits

// slab stores entries in fixed-size chunks addressed by an int32 index.
// Unlike one growing slice, growing never copies the entries already held
// and leaves no discarded array behind for the GC, and at most one chunk
// is partly unused: with 100k sockets an append-grown slice would hold up
// to 25% spare capacity and, while growing, the old and new arrays both.
// Freed slots are chained through their next field and reused first.
type slab struct {
	chunks   [][]entry
	n        int32 // slots ever handed out
	freeHead int32 // first free slot, nilIdx when none
}

func newSlab() slab { return slab{freeHead: nilIdx} }

// at returns the entry in slot i.
func (s *slab) at(i int32) *entry {
	return &s.chunks[i>>chunkBits][i&(chunkLen-1)]
}

// alloc returns a zeroed slot, reusing a freed one when there is one.
func (s *slab) alloc() int32 {
	if i := s.freeHead; i != nilIdx {
		e := s.at(i)
		s.freeHead = e.next
		*e = entry{}
		return i
	}
	if int(s.n)>>chunkBits == len(s.chunks) {
		s.chunks = append(s.chunks, make([]entry, chunkLen))
	}
	i := s.n
	s.n++
	return i
}

// release zeroes slot i and puts it on the free list.
func (s *slab) release(i int32) {
	e := s.at(i)
	*e = entry{next: s.freeHead}
	s.freeHead = i
}

// slots is the number of slots allocated, in use or free.
func (s *slab) slots() int { return int(s.n) }
