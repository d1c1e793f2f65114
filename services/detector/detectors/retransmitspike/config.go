package retransmitspike

import (
	"fmt"
	"time"
)

// Config of retransmit_spike; keys are relative to the detector's section.
type Config struct {
	// Window over which the rate is measured, in one-second slots (the
	// current, partial second is left out). Default 10s.
	Window time.Duration `koanf:"window"`
	// Minimum volume: no alert below MinRate retransmitted segments per
	// second, nor below MinRatio retransmitted/sent segments where the ratio
	// is known. Defaults 50 and 0.01.
	MinRate  float64 `koanf:"min_rate"`
	MinRatio float64 `koanf:"min_ratio"`
	// The rate must also reach BaselineFactor × the learned baseline: the
	// median rate of the first BaselineWindows healthy windows, then an
	// EWMA (weight BaselineAlpha) of each healthy window's rate, clamped to
	// the limit. Defaults 3, 0.1, 6. Until the baseline is learned only a
	// known ratio can fire. A remote first seen after the host was watched
	// for BaselineWindows windows starts from a learned baseline of 0.
	BaselineFactor  float64 `koanf:"baseline_factor"`
	BaselineAlpha   float64 `koanf:"baseline_alpha"`
	BaselineWindows int     `koanf:"baseline_windows"`
	// RatioFactor: where the ratio is known, it is also unusual when it
	// reaches RatioFactor × its own learned baseline (learned like the
	// rate's, from the healthy windows whose ratio was known), whatever the
	// rate: loss on a familiar path lowers its throughput, so the rate may
	// stay flat while the ratio grows. The volume limits (min_rate,
	// min_ratio) still apply. 0: the ratio is not judged against a
	// baseline. Default 3.
	RatioFactor float64 `koanf:"ratio_factor"`
	// Hysteresis: once firing, the alert ends only when the rate or the
	// ratio drops below ResolveFraction of its limit, or both the rate and
	// the ratio over their baselines do; entering and ending both need
	// MinDuration without interruption. Defaults 0.5 and 10s.
	ResolveFraction float64       `koanf:"resolve_fraction"`
	MinDuration     time.Duration `koanf:"min_duration"`
	// CriticalRatio: from this known ratio on the alert is critical, else
	// warning; 0 never. Default 0.1.
	CriticalRatio float64 `koanf:"critical_ratio"`
	// PerRemote judges each remote address too (label remote=<addr>), not
	// only the host (remote="*"). Default true.
	PerRemote bool `koanf:"per_remote"`
	// MaxRemotes bounds the remote addresses tracked per host (least
	// recently used ones are evicted, and counted). Default 4096.
	MaxRemotes int `koanf:"max_remotes"`
	// ForgetAfter drops a remote, baseline included, after this long
	// without a retransmit or finished connection. Default 1h.
	ForgetAfter time.Duration `koanf:"forget_after"`
	// MaxSockets bounds the open connections whose segs_out at their last
	// retransmit is remembered per host, for the ratio of connections still
	// open (least recently used evicted, and counted). Default 16384.
	MaxSockets int `koanf:"max_sockets"`
}

// DefaultConfig is retransmit_spike's documented defaults.
func DefaultConfig() *Config {
	return &Config{
		Window: 10 * time.Second, MinRate: 50, MinRatio: 0.01,
		BaselineFactor: 3, BaselineAlpha: 0.1, BaselineWindows: 6, RatioFactor: 3,
		ResolveFraction: 0.5, MinDuration: 10 * time.Second, CriticalRatio: 0.1,
		PerRemote: true, MaxRemotes: 4096, ForgetAfter: time.Hour, MaxSockets: 16384,
	}
}

// Validate names the key at fault.
func (c *Config) Validate() error {
	switch {
	case c.Window < 2*time.Second || c.Window > 10*time.Minute || c.Window%time.Second != 0:
		return fmt.Errorf("window: must be whole seconds between 2s and 10m, got %s", c.Window)
	case !(c.MinRate > 0):
		return fmt.Errorf("min_rate: must be > 0, got %g", c.MinRate)
	case !(c.MinRatio >= 0 && c.MinRatio < 1):
		return fmt.Errorf("min_ratio: must be in [0, 1), got %g", c.MinRatio)
	case !(c.BaselineFactor >= 1):
		return fmt.Errorf("baseline_factor: must be ≥ 1, got %g", c.BaselineFactor)
	case !(c.RatioFactor == 0 || c.RatioFactor >= 1):
		return fmt.Errorf("ratio_factor: must be ≥ 1, or 0 (off), got %g", c.RatioFactor)
	case !(c.BaselineAlpha > 0 && c.BaselineAlpha <= 1):
		return fmt.Errorf("baseline_alpha: must be in (0, 1], got %g", c.BaselineAlpha)
	case c.BaselineWindows < 1:
		return fmt.Errorf("baseline_windows: must be ≥ 1, got %d", c.BaselineWindows)
	case !(c.ResolveFraction > 0 && c.ResolveFraction <= 1):
		return fmt.Errorf("resolve_fraction: must be in (0, 1], got %g", c.ResolveFraction)
	case c.MinDuration < 0:
		return fmt.Errorf("min_duration: must be ≥ 0, got %s", c.MinDuration)
	case !(c.CriticalRatio >= 0 && c.CriticalRatio <= 1):
		return fmt.Errorf("critical_ratio: must be in [0, 1] (0: never critical), got %g", c.CriticalRatio)
	case c.MaxRemotes < 1:
		return fmt.Errorf("max_remotes: must be ≥ 1, got %d", c.MaxRemotes)
	case c.MaxSockets < 1:
		return fmt.Errorf("max_sockets: must be ≥ 1, got %d", c.MaxSockets)
	case c.ForgetAfter < c.Window:
		return fmt.Errorf("forget_after: must be ≥ window (%s), got %s", c.Window, c.ForgetAfter)
	}
	return nil
}
