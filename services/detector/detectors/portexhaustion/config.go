package portexhaustion

import (
	"fmt"
	"time"
)

// Config of port_exhaustion; keys are relative to the detector's section.
type Config struct {
	// MinShare: the local ports in use towards one remote endpoint (its
	// TIME_WAIT, FIN_WAIT2 and live sockets from one local address) as a
	// share of the ephemeral port range at which it fires, now or, at the
	// current rate of new connections, once TIME_WAIT has filled up (60 s
	// later). Default 0.7.
	MinShare float64 `koanf:"min_share"`
	// CriticalShare: from this share in use now the alert is critical
	// (connects are about to fail), else warning. Default 0.9.
	CriticalShare float64 `koanf:"critical_share"`
	// ResolveShare: a firing endpoint resolves once both shares are below
	// this and no connect failed for want of a port within Window.
	// Default 0.5.
	ResolveShare float64 `koanf:"resolve_share"`
	// MinPorts: fewer ports in use than this never fire, whatever the
	// share (a tiny range in a test namespace is not a fleet problem).
	// Default 50.
	MinPorts int `koanf:"min_ports"`
	// Connects that failed with EADDRNOTAVAIL (no local port left) towards
	// one endpoint: MinFailures within Window fire, critical. Defaults 1
	// and 60s.
	MinFailures int           `koanf:"min_failures"`
	Window      time.Duration `koanf:"window"`
	// MaxRemotes bounds the endpoints with failures tracked per host (the
	// least recently failing are evicted, and counted). Default 4096.
	MaxRemotes int `koanf:"max_remotes"`
}

// DefaultConfig is port_exhaustion's documented defaults.
func DefaultConfig() *Config {
	return &Config{
		MinShare: 0.7, CriticalShare: 0.9, ResolveShare: 0.5, MinPorts: 50,
		MinFailures: 1, Window: time.Minute, MaxRemotes: 4096,
	}
}

// Validate names the key at fault.
func (c *Config) Validate() error {
	switch {
	case !(c.MinShare > 0 && c.MinShare <= 1):
		return fmt.Errorf("min_share: must be in (0, 1], got %v", c.MinShare)
	case !(c.CriticalShare >= c.MinShare && c.CriticalShare <= 1):
		return fmt.Errorf("critical_share: must be between min_share (%v) and 1, got %v", c.MinShare, c.CriticalShare)
	case !(c.ResolveShare > 0 && c.ResolveShare <= c.MinShare):
		return fmt.Errorf("resolve_share: must be in (0, min_share (%v)], got %v", c.MinShare, c.ResolveShare)
	case c.MinPorts < 1:
		return fmt.Errorf("min_ports: must be ≥ 1, got %d", c.MinPorts)
	case c.MinFailures < 1:
		return fmt.Errorf("min_failures: must be ≥ 1, got %d", c.MinFailures)
	case c.Window < time.Second:
		return fmt.Errorf("window: must be ≥ 1s, got %s", c.Window)
	case c.MaxRemotes < 1:
		return fmt.Errorf("max_remotes: must be ≥ 1, got %d", c.MaxRemotes)
	}
	return nil
}
