package chwriter

import (
	"encoding/binary"
	"net/netip"
)

// addrCache formats addresses once: a host talks to few peers, and
// formatting every row's address was a tenth of the sink's CPU. It is
// direct-mapped and small enough for the CPU cache: a map of every peer
// seen cost more per hit (cache misses) than formatting does, once peers
// number tens of thousands. A slot holds the last address that hashed to
// it; a collision only means formatting again.
type addrCache struct {
	slots *[addrSlots]addrSlot
}

type addrSlot struct {
	n int8 // address length, 0: empty
	b [16]byte
	s string
}

const addrSlots = 1 << 12 // 4096 slots, 160 KiB

func (c *addrCache) string(b []byte) string {
	var h uint64
	switch len(b) {
	case 4:
		h = uint64(binary.LittleEndian.Uint32(b)) * 0x9e3779b97f4a7c15
	case 16:
		h = (binary.LittleEndian.Uint64(b) ^ binary.LittleEndian.Uint64(b[8:])*0xff51afd7ed558ccd) * 0x9e3779b97f4a7c15
	default:
		return ""
	}
	if c.slots == nil {
		c.slots = new([addrSlots]addrSlot)
	}
	slot := &c.slots[h>>(64-12)]
	if int(slot.n) == len(b) && string(slot.b[:slot.n]) == string(b) {
		return slot.s
	}
	a, _ := netip.AddrFromSlice(b)
	slot.n = int8(copy(slot.b[:], b))
	slot.s = a.String()
	return slot.s
}
