// Package probe wires the eBPF tracer to JetStream: decode, batch, publish,
// and report its own health.
package probe

import (
	"fmt"
	"time"

	"github.com/netpulse/netpulse/lib/config"
	"github.com/netpulse/netpulse/services/probe/internal/publish"
	"github.com/netpulse/netpulse/services/probe/internal/tracer"
)

// Config is the probe's whole configuration (config/probe.yaml).
type Config struct {
	// Host names this machine in subjects and rows; empty means os.Hostname().
	Host string `koanf:"host"`
	// HostReplacement replaces characters a NATS subject token cannot hold.
	HostReplacement string `koanf:"host_replacement"`

	NATS    config.NATS    `koanf:"nats"`
	Stream  config.Stream  `koanf:"stream"`
	Log     config.Log     `koanf:"log"`
	Tracer  TracerConfig   `koanf:"tracer"`
	Batch   BatchConfig    `koanf:"batch"`
	Publish publish.Config `koanf:"publish"`
	Stats   StatsConfig    `koanf:"stats"`
}

// TracerConfig sizes the kernel side.
type TracerConfig struct {
	RingBufferBytes  int `koanf:"ring_buffer_bytes"`
	SocketMapEntries int `koanf:"socket_map_entries"`
}

// BatchConfig bounds one NATS message.
type BatchConfig struct {
	MaxBytes      int           `koanf:"max_bytes"`
	MaxEvents     int           `koanf:"max_events"`
	FlushInterval time.Duration `koanf:"flush_interval"`
}

// StatsConfig sets how often the probe reports its counters.
type StatsConfig struct {
	Interval time.Duration `koanf:"interval"`
}

// DefaultConfig is what config/probe.yaml documents.
func DefaultConfig() Config {
	return Config{
		HostReplacement: "_",
		NATS:            config.DefaultNATS(),
		Stream:          config.DefaultStream(),
		Log:             config.DefaultLog(),
		Tracer:          TracerConfig{RingBufferBytes: 16 << 20, SocketMapEntries: 65536},
		Batch:           BatchConfig{MaxBytes: 256 << 10, MaxEvents: 8192, FlushInterval: 200 * time.Millisecond},
		Publish:         publish.DefaultConfig(),
		Stats:           StatsConfig{Interval: 10 * time.Second},
	}
}

// Validate checks every value and names the key at fault.
func (c *Config) Validate() error {
	if len(c.HostReplacement) != 1 || c.HostReplacement == "." || c.HostReplacement == "*" || c.HostReplacement == ">" || c.HostReplacement <= " " {
		return fmt.Errorf("host_replacement: must be one character other than '.', '*', '>' or space, got %q", c.HostReplacement)
	}
	for _, v := range []interface{ Validate() error }{c.NATS, c.Stream, c.Log, c.Publish} {
		if err := v.Validate(); err != nil {
			return err
		}
	}
	if err := (tracer.Config{RingBufferBytes: c.Tracer.RingBufferBytes, SocketMapEntries: c.Tracer.SocketMapEntries}).Validate(); err != nil {
		return err
	}
	switch {
	case c.Batch.MaxBytes < 4<<10 || c.Batch.MaxBytes > 900<<10:
		// NATS refuses messages over its max_payload, 1 MiB by default.
		return fmt.Errorf("batch.max_bytes: must be 4096..921600 (NATS max_payload is 1 MiB), got %d", c.Batch.MaxBytes)
	case c.Batch.MaxEvents < 1:
		return fmt.Errorf("batch.max_events: must be positive, got %d", c.Batch.MaxEvents)
	case c.Batch.FlushInterval < time.Millisecond || c.Batch.FlushInterval > time.Minute:
		return fmt.Errorf("batch.flush_interval: must be 1ms..1m, got %s", c.Batch.FlushInterval)
	case c.Stats.Interval < 100*time.Millisecond:
		return fmt.Errorf("stats.interval: must be at least 100ms, got %s", c.Stats.Interval)
	}
	return nil
}
