package peernotclosing

import (
	"fmt"
	"time"
)

// Config of peer_not_closing; keys are relative to the detector's section.
type Config struct {
	// MinSockets: sockets this host closed that wait in FIN_WAIT2 towards
	// one remote at which it fires, when the oldest has waited MinAge. A
	// healthy peer closes within a round trip of our FIN. Defaults 10 and
	// 10s (orphaned FIN_WAIT2 sockets live net.ipv4.tcp_fin_timeout, 60 s
	// by default: the age must stay below it to be seen at all).
	MinSockets int           `koanf:"min_sockets"`
	MinAge     time.Duration `koanf:"min_age"`
	// CriticalSockets: from this many the alert is critical, else
	// warning; 0 never. Default 500.
	CriticalSockets int `koanf:"critical_sockets"`
	// ResolveSockets: a firing remote resolves when fewer than this many
	// of its sockets are in FIN_WAIT2. Default 1: when they are all gone
	// (the peer closed, or the timeout reaped them).
	ResolveSockets int `koanf:"resolve_sockets"`
}

// DefaultConfig is peer_not_closing's documented defaults.
func DefaultConfig() *Config {
	return &Config{MinSockets: 10, MinAge: 10 * time.Second, CriticalSockets: 500, ResolveSockets: 1}
}

// Validate names the key at fault.
func (c *Config) Validate() error {
	switch {
	case c.MinSockets < 1:
		return fmt.Errorf("min_sockets: must be ≥ 1, got %d", c.MinSockets)
	case c.MinAge < 0:
		return fmt.Errorf("min_age: must be ≥ 0, got %s", c.MinAge)
	case c.CriticalSockets < 0:
		return fmt.Errorf("critical_sockets: must be ≥ 0 (0: never critical), got %d", c.CriticalSockets)
	case c.ResolveSockets < 1 || c.ResolveSockets > c.MinSockets:
		return fmt.Errorf("resolve_sockets: must be between 1 and min_sockets (%d), got %d", c.MinSockets, c.ResolveSockets)
	}
	return nil
}
