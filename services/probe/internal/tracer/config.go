package tracer

import (
	"fmt"
	"math"
	"os"
)

// Defaults for the zero values of Config.
const (
	DefaultRingBufferBytes  = 16 << 20
	DefaultSocketMapEntries = 65536
)

// Config sizes the kernel-side maps. The zero value means the defaults.
type Config struct {
	// RingBufferBytes is the size of the ring buffer shared with the kernel:
	// a power of two and a multiple of the page size. At ~150k events/s
	// (96 bytes each with the header) 16 MiB holds about a second.
	RingBufferBytes int
	// SocketMapEntries bounds the number of sockets whose state entry time
	// is remembered (LRU); beyond it, state durations of the oldest sockets
	// become unknown (0).
	SocketMapEntries int
}

func (c Config) withDefaults() Config {
	if c.RingBufferBytes == 0 {
		c.RingBufferBytes = DefaultRingBufferBytes
	}
	if c.SocketMapEntries == 0 {
		c.SocketMapEntries = DefaultSocketMapEntries
	}
	return c
}

// Validate reports the first invalid field of c after defaults are applied.
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
	if c.SocketMapEntries < 0 || c.SocketMapEntries > math.MaxUint32 {
		return fmt.Errorf("tracer.socket_map_entries: %d is out of range 1..%d", c.SocketMapEntries, uint32(math.MaxUint32))
	}
	return nil
}
