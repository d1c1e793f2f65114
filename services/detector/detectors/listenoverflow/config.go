package listenoverflow

import (
	"fmt"
	"time"
)

// Config of listen_overflow; keys are relative to the detector's section.
type Config struct {
	// Window over which a listener's drops are summed: the counts of the
	// probe's drop intervals (drops.interval, 10 s) that ended within it.
	// Default 1m.
	Window time.Duration `koanf:"window"`
	// MinDrops: connections a listener refused within Window at which it
	// fires. A healthy listener refuses none. Default 1.
	MinDrops int `koanf:"min_drops"`
	// CriticalPerSecond: from this many refusals per second over Window
	// the alert is critical, else warning; 0 never. Default 10.
	CriticalPerSecond float64 `koanf:"critical_per_second"`
	// A firing listener resolves once a whole Window passed without a
	// refusal.
}

// DefaultConfig is listen_overflow's documented defaults.
func DefaultConfig() *Config {
	return &Config{Window: time.Minute, MinDrops: 1, CriticalPerSecond: 10}
}

// Validate names the key at fault.
func (c *Config) Validate() error {
	switch {
	case c.Window < time.Second || c.Window > time.Hour:
		return fmt.Errorf("window: must be between 1s and 1h, got %s", c.Window)
	case c.MinDrops < 1:
		return fmt.Errorf("min_drops: must be ≥ 1, got %d", c.MinDrops)
	case !(c.CriticalPerSecond >= 0):
		return fmt.Errorf("critical_per_second: must be ≥ 0 (0: never critical), got %g", c.CriticalPerSecond)
	}
	return nil
}
