package agent

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
	// MemoryLimit is the Go runtime's soft memory limit in bytes
	// (runtime/debug.SetMemoryLimit, set by main); 0 sets none. Without
	// one the heap grows to twice what is live before a collection, and
	// what a burst freed stays resident for minutes.
	MemoryLimit int64 `koanf:"memory_limit"`

	NATS     config.NATS    `koanf:"nats"`
	Stream   config.Stream  `koanf:"stream"`
	Log      config.Log     `koanf:"log"`
	Metrics  config.Metrics `koanf:"metrics"`
	Tracer   TracerConfig   `koanf:"tracer"`
	Batch    BatchConfig    `koanf:"batch"`
	Publish  publish.Config `koanf:"publish"`
	Stats    StatsConfig    `koanf:"stats"`
	Sockets  SocketsConfig  `koanf:"sockets"`
	Snapshot SnapshotConfig `koanf:"snapshot"`
	Drops    DropsConfig    `koanf:"drops"`
}

// DropsConfig sets how often dropped packets are counted and published.
type DropsConfig struct {
	// Interval is the span one drop count covers: the kernel's counts
	// per key and the listeners' drop counters are read and published
	// this often.
	Interval time.Duration `koanf:"interval"`
}

// TracerConfig sizes the kernel side.
type TracerConfig struct {
	RingBufferBytes    int `koanf:"ring_buffer_bytes"`
	SocketMapEntries   int `koanf:"socket_map_entries"`
	ListenerMapEntries int `koanf:"listener_map_entries"`
	SynackMapEntries   int `koanf:"synack_map_entries"`
	DropMapEntries     int `koanf:"drop_map_entries"`
}

func (c TracerConfig) tracer() tracer.Config {
	return tracer.Config{
		RingBufferBytes: c.RingBufferBytes, SocketMapEntries: c.SocketMapEntries,
		ListenerMapEntries: c.ListenerMapEntries, SynackMapEntries: c.SynackMapEntries,
		DropMapEntries: c.DropMapEntries,
	}
}

// SocketsConfig is the probe's own socket table (the source of snapshots).
type SocketsConfig struct {
	// MaxEntries bounds the table; beyond it the least recently updated
	// socket is evicted (counted).
	MaxEntries int `koanf:"max_entries"`
	// Seed reads the sockets that existed before the probe started
	// (sock_diag, owners from /proc) at start.
	Seed bool `koanf:"seed"`
	// ResyncInterval is how often the whole table is reconciled with the
	// kernel's sockets (sock_diag), to heal what lost events left wrong:
	// gone sockets removed, missing ones added (owners from /proc, for
	// those only), wrong states corrected. While it is on, CLOSE_WAIT and
	// LAST_ACK sockets are also reconciled before every snapshot (the
	// kernel filters by state: cheap), since leak alerts depend on them.
	// 0 turns both off. A full resync of 100k sockets costs about 0.17 s
	// of CPU (sock_diag dump 0.13 s, matching 0.035 s with the table lock
	// held; sockdiag's BenchmarkDumpFunc, socktable's BenchmarkResync):
	// every 60 s is 0.3% of a core. The CLOSE_WAIT one costs about 45 ms
	// (the kernel still walks every socket). A change needs two runs in a
	// row to agree (events lag), so a lost CLOSE is healed within two
	// snapshot intervals for CLOSE_WAIT, two resync intervals otherwise.
	ResyncInterval time.Duration `koanf:"resync_interval"`
}

// SnapshotConfig sets the periodic socket-table snapshots.
type SnapshotConfig struct {
	Interval     time.Duration `koanf:"interval"`
	MaxGroups    int           `koanf:"max_groups"`
	MaxCloseWait int           `koanf:"max_close_wait"`
	// MaxEndpoints bounds the endpoint groups (TIME_WAIT, FIN_WAIT2 and
	// live sockets per local address and remote endpoint), largest first.
	MaxEndpoints int `koanf:"max_endpoints"`
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
		MemoryLimit:     48 << 20,
		NATS:            config.DefaultNATS(),
		Stream:          config.DefaultStream(),
		Log:             config.DefaultLog(),
		Metrics:         config.Metrics{Addr: "127.0.0.1:9431"},
		Tracer:          TracerConfig{RingBufferBytes: 16 << 20, SocketMapEntries: 65536, ListenerMapEntries: 4096, SynackMapEntries: 4096, DropMapEntries: 8192},
		Batch:           BatchConfig{MaxBytes: 256 << 10, MaxEvents: 8192, FlushInterval: 200 * time.Millisecond},
		Publish:         publish.DefaultConfig(),
		Stats:           StatsConfig{Interval: 10 * time.Second},
		Sockets:         SocketsConfig{MaxEntries: 262144, Seed: true, ResyncInterval: time.Minute},
		Snapshot:        SnapshotConfig{Interval: 15 * time.Second, MaxGroups: 1000, MaxCloseWait: 1000, MaxEndpoints: 1000},
		Drops:           DropsConfig{Interval: 10 * time.Second},
	}
}

// tableBytesPerSocket bounds what one socket costs in the probe's table
// (a 96-byte entry and its share of the indexes, measured at about 120 by
// socktable's BenchmarkMemory); runtimeBaseBytes is the rest of the probe's
// heap (batches, decoder, NATS client). memory_limit must hold both for a
// full table, or the GC would run without end.
const (
	tableBytesPerSocket = 160
	runtimeBaseBytes    = 8 << 20
)

// minMemoryLimit is the smallest memory_limit for a table of maxSockets.
func minMemoryLimit(maxSockets int) int64 {
	return int64(maxSockets)*tableBytesPerSocket + runtimeBaseBytes
}

// Validate checks every value and names the key at fault.
func (c *Config) Validate() error {
	if len(c.HostReplacement) != 1 || c.HostReplacement == "." || c.HostReplacement == "*" || c.HostReplacement == ">" || c.HostReplacement <= " " {
		return fmt.Errorf("host_replacement: must be one character other than '.', '*', '>' or space, got %q", c.HostReplacement)
	}
	for _, v := range []interface{ Validate() error }{c.NATS, c.Stream, c.Log, c.Metrics, c.Publish} {
		if err := v.Validate(); err != nil {
			return err
		}
	}
	if err := c.Tracer.tracer().Validate(); err != nil {
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
	case c.Sockets.MaxEntries < 1024 || c.Sockets.MaxEntries > 16<<20:
		return fmt.Errorf("sockets.max_entries: must be 1024..16777216, got %d", c.Sockets.MaxEntries)
	case c.Sockets.ResyncInterval != 0 && (c.Sockets.ResyncInterval < time.Second || c.Sockets.ResyncInterval > 24*time.Hour):
		return fmt.Errorf("sockets.resync_interval: must be 0 (off) or 1s..24h, got %s", c.Sockets.ResyncInterval)
	case c.Snapshot.Interval < time.Second || c.Snapshot.Interval > time.Hour:
		return fmt.Errorf("snapshot.interval: must be 1s..1h, got %s", c.Snapshot.Interval)
	case c.Snapshot.MaxGroups < 1 || c.Snapshot.MaxGroups > 100000:
		return fmt.Errorf("snapshot.max_groups: must be 1..100000, got %d", c.Snapshot.MaxGroups)
	case c.Snapshot.MaxCloseWait < 0 || c.Snapshot.MaxCloseWait > 100000:
		return fmt.Errorf("snapshot.max_close_wait: must be 0..100000, got %d", c.Snapshot.MaxCloseWait)
	case c.Snapshot.MaxEndpoints < 0 || c.Snapshot.MaxEndpoints > 100000:
		return fmt.Errorf("snapshot.max_endpoints: must be 0..100000, got %d", c.Snapshot.MaxEndpoints)
	case c.Drops.Interval < time.Second || c.Drops.Interval > time.Hour:
		return fmt.Errorf("drops.interval: must be 1s..1h, got %s", c.Drops.Interval)
	case c.MemoryLimit < 0:
		return fmt.Errorf("memory_limit: must be 0 (none) or positive, got %d", c.MemoryLimit)
	case c.MemoryLimit > 0 && c.MemoryLimit < minMemoryLimit(c.Sockets.MaxEntries):
		return fmt.Errorf("memory_limit: %d bytes is less than a full socket table needs, %d (sockets.max_entries %d x %d bytes + %d MiB): raise it, or 0 for no limit",
			c.MemoryLimit, minMemoryLimit(c.Sockets.MaxEntries), c.Sockets.MaxEntries, tableBytesPerSocket, runtimeBaseBytes>>20)
	}
	return nil
}
