package agent

import (
	"strings"
	"testing"
	"time"

	"github.com/netpulse/netpulse/lib/config/configtest"
)

func TestShippedConfigIsTheDefault(t *testing.T) {
	configtest.ShippedIsDefault(t, "probe", "../../../../config/probe.yaml", DefaultConfig)
}

func TestValidateNamesTheKey(t *testing.T) {
	tests := []struct {
		name   string
		mutate func(*Config)
		want   string
	}{
		{"host replacement", func(c *Config) { c.HostReplacement = "." }, "host_replacement"},
		{"ring buffer", func(c *Config) { c.Tracer.RingBufferBytes = 12345 }, "tracer.ring_buffer_bytes"},
		{"listener map", func(c *Config) { c.Tracer.ListenerMapEntries = -1 }, "tracer.listener_map_entries"},
		{"socket table", func(c *Config) { c.Sockets.MaxEntries = 10 }, "sockets.max_entries"},
		{"resync interval", func(c *Config) { c.Sockets.ResyncInterval = 10 * time.Millisecond }, "sockets.resync_interval"},
		{"negative resync interval", func(c *Config) { c.Sockets.ResyncInterval = -time.Second }, "sockets.resync_interval"},
		{"snapshot interval", func(c *Config) { c.Snapshot.Interval = time.Millisecond }, "snapshot.interval"},
		{"snapshot groups", func(c *Config) { c.Snapshot.MaxGroups = 0 }, "snapshot.max_groups"},
		{"snapshot close_wait", func(c *Config) { c.Snapshot.MaxCloseWait = -1 }, "snapshot.max_close_wait"},
		{"snapshot endpoints", func(c *Config) { c.Snapshot.MaxEndpoints = 100001 }, "snapshot.max_endpoints"},
		{"batch too big for NATS", func(c *Config) { c.Batch.MaxBytes = 2 << 20 }, "batch.max_bytes"},
		{"flush interval", func(c *Config) { c.Batch.FlushInterval = 0 }, "batch.flush_interval"},
		{"in flight", func(c *Config) { c.Publish.MaxInFlight = 0 }, "publish.max_in_flight"},
		{"stream", func(c *Config) { c.Stream.Storage = "disk" }, "stream.storage"},
		{"log level", func(c *Config) { c.Log.Level = "loud" }, "log.level"},
		{"negative memory limit", func(c *Config) { c.MemoryLimit = -1 }, "memory_limit"},
		{"memory limit below a full table", func(c *Config) { c.Sockets.MaxEntries = 1 << 20 }, "memory_limit"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := DefaultConfig()
			tt.mutate(&c)
			err := c.Validate()
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("Validate() = %v, want an error naming %s", err, tt.want)
			}
		})
	}
}
