package slowhandshake

import (
	"fmt"
	"time"
)

// Config of slow_handshake; keys are relative to the detector's section.
type Config struct {
	// Window over which handshake times are judged, sliding in sixths.
	// Default 30s.
	Window time.Duration `koanf:"window"`
	// MinHandshakes in the window before anything is judged. Default 10.
	MinHandshakes int `koanf:"min_handshakes"`
	// Quantile of the handshake times that is judged. Default 0.99.
	Quantile float64 `koanf:"quantile"`
	// MinSlow handshakes above the crossed threshold are needed too, so a
	// single lost SYN among few handshakes (then the p99 is the maximum) is
	// not an incident. Default 3.
	MinSlow int `koanf:"min_slow"`
	// Ceiling is the absolute limit for the quantile. Default 500ms.
	Ceiling time.Duration `koanf:"ceiling"`
	// Critical: from this quantile on the alert is critical, else warning;
	// 0 never. Default 3s (two SYNs lost).
	Critical time.Duration `koanf:"critical"`
	// The learned limit is baseline × BaselineFactor + BaselineMargin. The
	// baseline learns the quantile of each healthy window: the median of the
	// first BaselineWindows (then it is used), an EWMA with weight
	// BaselineAlpha after. Defaults 3, 50ms, 0.1, 5.
	BaselineFactor  float64       `koanf:"baseline_factor"`
	BaselineMargin  time.Duration `koanf:"baseline_margin"`
	BaselineAlpha   float64       `koanf:"baseline_alpha"`
	BaselineWindows int           `koanf:"baseline_windows"`
	// MaxKeys bounds the endpoints tracked per host (least recently used
	// ones are evicted, and counted). Default 4096.
	MaxKeys int `koanf:"max_keys"`
	// ForgetAfter drops an endpoint, baseline included, after this long
	// without a handshake. Default 1h.
	ForgetAfter time.Duration `koanf:"forget_after"`
}

// DefaultConfig is slow_handshake's documented defaults.
func DefaultConfig() *Config {
	return &Config{
		Window: 30 * time.Second, MinHandshakes: 10, Quantile: 0.99, MinSlow: 3,
		Ceiling: 500 * time.Millisecond, Critical: 3 * time.Second,
		BaselineFactor: 3, BaselineMargin: 50 * time.Millisecond, BaselineAlpha: 0.1, BaselineWindows: 5,
		MaxKeys: 4096, ForgetAfter: time.Hour,
	}
}

// Validate names the key at fault.
func (c *Config) Validate() error {
	switch {
	case c.Window < slots*time.Second:
		return fmt.Errorf("window: must be ≥ %ds, got %s", slots, c.Window)
	case c.MinHandshakes < 1:
		return fmt.Errorf("min_handshakes: must be ≥ 1, got %d", c.MinHandshakes)
	case !(c.Quantile > 0 && c.Quantile <= 1):
		return fmt.Errorf("quantile: must be in (0, 1], got %g", c.Quantile)
	case c.MinSlow < 1 || c.MinSlow > c.MinHandshakes:
		return fmt.Errorf("min_slow: must be between 1 and min_handshakes (%d), got %d", c.MinHandshakes, c.MinSlow)
	case c.Ceiling <= 0:
		return fmt.Errorf("ceiling: must be > 0, got %s", c.Ceiling)
	case c.Critical < 0:
		return fmt.Errorf("critical: must be ≥ 0 (0: never critical), got %s", c.Critical)
	case c.BaselineFactor < 1:
		return fmt.Errorf("baseline_factor: must be ≥ 1, got %g", c.BaselineFactor)
	case c.BaselineMargin < 0:
		return fmt.Errorf("baseline_margin: must be ≥ 0, got %s", c.BaselineMargin)
	case !(c.BaselineAlpha > 0 && c.BaselineAlpha <= 1):
		return fmt.Errorf("baseline_alpha: must be in (0, 1], got %g", c.BaselineAlpha)
	case c.BaselineWindows < 1:
		return fmt.Errorf("baseline_windows: must be ≥ 1, got %d", c.BaselineWindows)
	case c.MaxKeys < 1:
		return fmt.Errorf("max_keys: must be ≥ 1, got %d", c.MaxKeys)
	case c.ForgetAfter < c.Window:
		return fmt.Errorf("forget_after: must be ≥ window (%s), got %s", c.Window, c.ForgetAfter)
	}
	return nil
}
