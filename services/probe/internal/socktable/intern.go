package socktable

import "strings"

// interner stores each distinct comm once and hands out a 4-byte id in its
// place: 100k sockets of a few dozen processes share a few dozen strings.
// Ids are reference counted so that the set of comms stays bounded by the
// live sockets, however many processes come and go. Id 0 is "".
type interner struct {
	ids  map[string]uint32
	strs []string
	refs []uint32
	free []uint32
}

func newInterner() *interner {
	return &interner{ids: make(map[string]uint32), strs: []string{""}, refs: []uint32{0}}
}

// ref returns the id of s, counting one more user.
func (in *interner) ref(s string) uint32 {
	if s == "" {
		return 0
	}
	if id, ok := in.ids[s]; ok {
		in.refs[id]++
		return id
	}
	s = strings.Clone(s) // do not pin whatever buffer s came from
	var id uint32
	if n := len(in.free); n > 0 {
		id = in.free[n-1]
		in.free = in.free[:n-1]
		in.strs[id], in.refs[id] = s, 1
	} else {
		id = uint32(len(in.strs))
		in.strs = append(in.strs, s)
		in.refs = append(in.refs, 1)
	}
	in.ids[s] = id
	return id
}

// unref drops one user of id, forgetting the string with its last user.
func (in *interner) unref(id uint32) {
	if id == 0 {
		return
	}
	in.refs[id]--
	if in.refs[id] == 0 {
		delete(in.ids, in.strs[id])
		in.strs[id] = ""
		in.free = append(in.free, id)
	}
}

func (in *interner) str(id uint32) string { return in.strs[id] }

// len is the number of distinct strings held.
func (in *interner) len() int { return len(in.ids) }
