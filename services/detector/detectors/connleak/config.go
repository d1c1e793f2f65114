package connleak

import (
	"fmt"
	"time"
)

// Config of conn_leak; keys are relative to the detector's config section.
type Config struct {
	// MinSockets: a process (pid, comm, local port) holding at least this
	// many CLOSE_WAIT sockets older than MinAge is leaking. Default 10.
	MinSockets int `koanf:"min_sockets"`
	// MinAge a CLOSE_WAIT socket must have to count: a healthy process
	// closes within milliseconds of the peer's FIN. Default 30s.
	MinAge time.Duration `koanf:"min_age"`
	// CriticalSockets: from this many CLOSE_WAIT sockets (any age) the alert
	// is critical, else warning; 0 never. Default 100.
	CriticalSockets int `koanf:"critical_sockets"`
	// ResolveSockets: a leak stays reported until fewer than this many of
	// its sockets are older than MinAge (and it no longer grows). Default 1:
	// until the old sockets are gone.
	ResolveSockets int `koanf:"resolve_sockets"`
	// Growth rule: the CLOSE_WAIT count (any age) is sampled every
	// GrowthInterval; the process is leaking when the last GrowthIntervals+1
	// samples rise strictly each time and by at least GrowthMin in total.
	// Defaults 30s, 4 (two minutes of growth), 10; GrowthMin 0 turns the
	// rule off.
	GrowthInterval  time.Duration `koanf:"growth_interval"`
	GrowthIntervals int           `koanf:"growth_intervals"`
	GrowthMin       int           `koanf:"growth_min"`
	// MaxSockets bounds the CLOSE_WAIT sockets tracked per host one by one;
	// beyond it sockets are only counted (no age, no sample). Default 100000.
	MaxSockets int `koanf:"max_sockets"`
	// Samples is how many of the oldest sockets an alert shows. Default 5.
	Samples int `koanf:"samples"`
}

// DefaultConfig is conn_leak's documented defaults.
func DefaultConfig() *Config {
	return &Config{
		MinSockets: 10, MinAge: 30 * time.Second, CriticalSockets: 100, ResolveSockets: 1,
		GrowthInterval: 30 * time.Second, GrowthIntervals: 4, GrowthMin: 10,
		MaxSockets: 100000, Samples: 5,
	}
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
	case c.GrowthInterval < time.Second:
		return fmt.Errorf("growth_interval: must be ≥ 1s, got %s", c.GrowthInterval)
	case c.GrowthIntervals < 1 || c.GrowthIntervals > 100:
		return fmt.Errorf("growth_intervals: must be between 1 and 100, got %d", c.GrowthIntervals)
	case c.GrowthMin < 0:
		return fmt.Errorf("growth_min: must be ≥ 0 (0: no growth rule), got %d", c.GrowthMin)
	case c.MaxSockets < 1:
		return fmt.Errorf("max_sockets: must be ≥ 1, got %d", c.MaxSockets)
	case c.Samples < 0 || c.Samples > 100:
		return fmt.Errorf("samples: must be between 0 and 100, got %d", c.Samples)
	}
	return nil
}
