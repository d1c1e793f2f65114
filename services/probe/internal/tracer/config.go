package tracer

import (
	"fmt"
	"math"
	"os"
)

// Defaults for the zero values of Config.
const (
	DefaultRingBufferBytes    = 16 << 20
	DefaultSocketMapEntries   = 65536
	DefaultListenerMapEntries = 4096
	DefaultSynackMapEntries   = 4096
	DefaultDropMapEntries     = 8192
)

// Config sizes the kernel-side maps. The zero value means the defaults.
// Every map that grows with sockets is an LRU hash: when full, the least
// recently used entry is evicted (see MapUsage) instead of failing.
type Config struct {
	// RingBufferBytes is the size of the ring buffer shared with the kernel:
	// a power of two and a multiple of the page size. At ~150k events/s
	// (160 bytes each with the header) 16 MiB holds about half a second.
	RingBufferBytes int
	// SocketMapEntries bounds the number of sockets the probe remembers
	// (state entry time, owner, side, handshake: 88 bytes each). Beyond it
	// the oldest are evicted: their durations become 0, owners unknown, and
	// their connection record is lost.
	SocketMapEntries int
	// ListenerMapEntries bounds the listening (netns, family, port)s whose
	// owner is remembered for not-yet-accepted connections.
	ListenerMapEntries int
	// SynackMapEntries bounds the connection requests whose SYN-ACK was
	// retransmitted and that are not yet established (server handshake time).
	SynackMapEntries int
	// DropMapEntries bounds the distinct (reason, direction, endpoints)
	// keys of dropped TCP packets counted in one interval (two maps of
	// this size, 88 bytes an entry); drops beyond it are still counted per
	// reason, without their endpoints.
	DropMapEntries int
}

func (c Config) withDefaults() Config {
	if c.RingBufferBytes == 0 {
		c.RingBufferBytes = DefaultRingBufferBytes
	}
	if c.SocketMapEntries == 0 {
		c.SocketMapEntries = DefaultSocketMapEntries
	}
	if c.ListenerMapEntries == 0 {
		c.ListenerMapEntries = DefaultListenerMapEntries
	}
	if c.SynackMapEntries == 0 {
		c.SynackMapEntries = DefaultSynackMapEntries
	}
	if c.DropMapEntries == 0 {
		c.DropMapEntries = DefaultDropMapEntries
	}
	return c
}

// Validate reports the first invalid field of c after defaults are applied.
// Errors name the configuration key (tracer.<key>).
func (c Config) Validate() error {
	c = c.withDefaults()
	page := os.Getpagesize()
	rb := c.RingBufferBytes
	switch {
	case rb < 0:
		return fmt.Errorf("tracer.ring_buffer_bytes: %d is negative", rb)
	case rb&(rb-1) != 0:
		return fmt.Errorf("tracer.ring_buffer_bytes: %d is not a power of two", rb)
	case rb%page != 0:
		return fmt.Errorf("tracer.ring_buffer_bytes: %d is not a multiple of the page size %d", rb, page)
	case rb > math.MaxUint32/2+1:
		return fmt.Errorf("tracer.ring_buffer_bytes: %d is larger than 2 GiB", rb)
	}
	for _, m := range []struct {
		key string
		n   int
	}{
		{"socket_map_entries", c.SocketMapEntries},
		{"listener_map_entries", c.ListenerMapEntries},
		{"synack_map_entries", c.SynackMapEntries},
		{"drop_map_entries", c.DropMapEntries},
	} {
		if m.n < 0 || m.n > math.MaxUint32 {
			return fmt.Errorf("tracer.%s: %d is out of range 1..%d", m.key, m.n, uint32(math.MaxUint32))
		}
	}
	return nil
}
