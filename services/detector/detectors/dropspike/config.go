package dropspike

import (
	"fmt"
	"time"
)

// Config of drop_spike; keys are relative to the detector's section.
type Config struct {
	// Window over which a reason's drop rate is measured: the probe's
	// counts (every drops.interval, 10 s) whose intervals ended within it.
	// It is also the baseline's sample. Default 1m.
	Window time.Duration `koanf:"window"`
	// MinRate: no alert below this many drops per second of one reason
	// and direction. Default 5.
	MinRate float64 `koanf:"min_rate"`
	// The rate must also reach BaselineFactor × the learned baseline: the
	// median rate of the first BaselineWindows healthy windows, then an
	// EWMA (weight BaselineAlpha) of each healthy window's rate. Defaults
	// 5, 0.1, 5. Until the host was watched for BaselineWindows windows
	// nothing fires; a reason first seen after that starts from a learned
	// baseline of 0 (it never happened here: now it does).
	BaselineFactor  float64 `koanf:"baseline_factor"`
	BaselineAlpha   float64 `koanf:"baseline_alpha"`
	BaselineWindows int     `koanf:"baseline_windows"`
	// ResolveFraction: a firing reason resolves when its rate falls below
	// this share of the limit it crossed. Default 0.5.
	ResolveFraction float64 `koanf:"resolve_fraction"`
	// CriticalRate: from this many drops per second the alert is
	// critical, else warning; 0 never. Default 1000.
	CriticalRate float64 `koanf:"critical_rate"`
	// MaxReasons bounds the (reason, direction) keys tracked per host;
	// counts of further ones are left out and counted. Default 512.
	MaxReasons int `koanf:"max_reasons"`
}

// DefaultConfig is drop_spike's documented defaults.
func DefaultConfig() *Config {
	return &Config{
		Window: time.Minute, MinRate: 5, BaselineFactor: 5, BaselineAlpha: 0.1, BaselineWindows: 5,
		ResolveFraction: 0.5, CriticalRate: 1000, MaxReasons: 512,
	}
}

// Validate names the key at fault.
func (c *Config) Validate() error {
	switch {
	case c.Window < 10*time.Second || c.Window > time.Hour:
		return fmt.Errorf("window: must be between 10s and 1h (at least the probe's drops.interval), got %s", c.Window)
	case !(c.MinRate > 0):
		return fmt.Errorf("min_rate: must be > 0, got %g", c.MinRate)
	case !(c.BaselineFactor >= 1):
		return fmt.Errorf("baseline_factor: must be ≥ 1, got %g", c.BaselineFactor)
	case !(c.BaselineAlpha > 0 && c.BaselineAlpha <= 1):
		return fmt.Errorf("baseline_alpha: must be in (0, 1], got %g", c.BaselineAlpha)
	case c.BaselineWindows < 1:
		return fmt.Errorf("baseline_windows: must be ≥ 1, got %d", c.BaselineWindows)
	case !(c.ResolveFraction > 0 && c.ResolveFraction <= 1):
		return fmt.Errorf("resolve_fraction: must be in (0, 1], got %g", c.ResolveFraction)
	case !(c.CriticalRate >= 0):
		return fmt.Errorf("critical_rate: must be ≥ 0 (0: never critical), got %g", c.CriticalRate)
	case c.MaxReasons < 1:
		return fmt.Errorf("max_reasons: must be ≥ 1, got %d", c.MaxReasons)
	}
	return nil
}
