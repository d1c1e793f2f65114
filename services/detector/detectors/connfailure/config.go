package connfailure

import (
	"fmt"
	"time"
)

// Config of conn_failure; keys are relative to the detector's section.
type Config struct {
	// Window over which failures and resets are counted, sliding in
	// sixths. Default 30s.
	Window time.Duration `koanf:"window"`
	// Failed connects of one reason to one remote endpoint fire at
	// MinFailures in the window that are at least MinRatio of all connect
	// attempts to it. Defaults 10 and 0.05.
	MinFailures int     `koanf:"min_failures"`
	MinRatio    float64 `koanf:"min_ratio"`
	// CriticalRatio: from this share of failed attempts on the alert is
	// critical (the endpoint is down for this host), else warning; 0
	// never. Default 0.9.
	CriticalRatio float64 `koanf:"critical_ratio"`
	// MinAbortAge: a connect the application closed in SYN_SENT without an
	// error counts as a timeout when it waited at least this long (the SYN
	// went unanswered; Go, Java and others time out before the kernel
	// does), and is ignored when quicker (a cancelled race such as Happy
	// Eyeballs). Default 1s.
	MinAbortAge time.Duration `koanf:"min_abort_age"`
	// Reset storms: resets sent and received on one endpoint fire at
	// MinResets in the window and ResetFactor × the learned baseline (the
	// median of the first BaselineWindows healthy windows, then an EWMA
	// with weight BaselineAlpha). Some applications reset every connection
	// on purpose: only a change is a storm. Defaults 100, 3, 6, 0.1.
	MinResets       int     `koanf:"min_resets"`
	ResetFactor     float64 `koanf:"reset_factor"`
	BaselineWindows int     `koanf:"baseline_windows"`
	BaselineAlpha   float64 `koanf:"baseline_alpha"`
	// MaxKeys bounds the endpoints tracked per host (least recently used
	// ones are evicted, and counted). Default 4096.
	MaxKeys int `koanf:"max_keys"`
	// ForgetAfter drops an endpoint, baseline included, after this long
	// without an event. Default 1h.
	ForgetAfter time.Duration `koanf:"forget_after"`
}

// DefaultConfig is conn_failure's documented defaults.
func DefaultConfig() *Config {
	return &Config{
		Window: 30 * time.Second, MinFailures: 10, MinRatio: 0.05, CriticalRatio: 0.9,
		MinAbortAge: time.Second, MinResets: 100, ResetFactor: 3, BaselineWindows: 6, BaselineAlpha: 0.1,
		MaxKeys: 4096, ForgetAfter: time.Hour,
	}
}

// Validate names the key at fault.
func (c *Config) Validate() error {
	switch {
	case c.Window < slots*time.Second:
		return fmt.Errorf("window: must be ≥ %ds, got %s", slots, c.Window)
	case c.MinFailures < 1:
		return fmt.Errorf("min_failures: must be ≥ 1, got %d", c.MinFailures)
	case !(c.MinRatio >= 0 && c.MinRatio <= 1):
		return fmt.Errorf("min_ratio: must be in [0, 1], got %g", c.MinRatio)
	case !(c.CriticalRatio >= 0 && c.CriticalRatio <= 1):
		return fmt.Errorf("critical_ratio: must be in [0, 1] (0: never critical), got %g", c.CriticalRatio)
	case c.MinAbortAge < 0:
		return fmt.Errorf("min_abort_age: must be ≥ 0, got %s", c.MinAbortAge)
	case c.MinResets < 1:
		return fmt.Errorf("min_resets: must be ≥ 1, got %d", c.MinResets)
	case !(c.ResetFactor >= 1):
		return fmt.Errorf("reset_factor: must be ≥ 1, got %g", c.ResetFactor)
	case c.BaselineWindows < 1:
		return fmt.Errorf("baseline_windows: must be ≥ 1, got %d", c.BaselineWindows)
	case !(c.BaselineAlpha > 0 && c.BaselineAlpha <= 1):
		return fmt.Errorf("baseline_alpha: must be in (0, 1], got %g", c.BaselineAlpha)
	case c.MaxKeys < 1:
		return fmt.Errorf("max_keys: must be ≥ 1, got %d", c.MaxKeys)
	case c.ForgetAfter < c.Window:
		return fmt.Errorf("forget_after: must be ≥ window (%s), got %s", c.Window, c.ForgetAfter)
	}
	return nil
}
