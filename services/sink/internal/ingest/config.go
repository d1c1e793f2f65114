package ingest

import (
	"fmt"
	"net"
	"regexp"
	"strings"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2"

	"github.com/netpulse/netpulse/lib/config"
)

// Config is the sink's whole configuration (config/sink.yaml).
type Config struct {
	NATS   config.NATS   `koanf:"nats"`
	Stream config.Stream `koanf:"stream"`
	// AlertsStream holds the limits of NETPULSE_ALERTS, which the sink
	// creates or updates at start like the detectors do.
	AlertsStream config.Stream    `koanf:"alerts_stream"`
	Log          config.Log       `koanf:"log"`
	Metrics      config.Metrics   `koanf:"metrics"`
	ClickHouse   ClickHouseConfig `koanf:"clickhouse"`
	Consumer     ConsumerConfig   `koanf:"consumer"`
	Batch        BatchConfig      `koanf:"batch"`
	Stats        StatsConfig      `koanf:"stats"`
}

// ClickHouseConfig says where the rows go.
type ClickHouseConfig struct {
	// Addr is host:port of the native protocol; with Cluster, a
	// comma-separated list of the cluster's servers may be given: the sink
	// makes the schema and learns the shards through the first that
	// answers.
	Addr string `koanf:"addr"`
	// Cluster names a cluster of the servers' remote_servers: the schema
	// is made ON CLUSTER (Replicated local tables, Distributed tables
	// under the usual names) and each host's rows go to its shard. Empty:
	// one server (or the replicas in Addr), plain MergeTree tables.
	Cluster  string `koanf:"cluster"`
	Database string `koanf:"database"`
	Username string `koanf:"username"`
	Password string `koanf:"password"`
	// PasswordFile holds the password instead of Password (not both).
	PasswordFile string        `koanf:"password_file"`
	DialTimeout  time.Duration `koanf:"dial_timeout"`
	// TTLDays drops rows older than this many days on servers with TTL
	// support; 0 keeps them for ever.
	TTLDays int `koanf:"ttl_days"`
	// TLS: when Enabled, Addr is the server's secure native port
	// (tcp_port_secure, 9440 by convention).
	TLS ClickHouseTLS `koanf:"tls"`
}

// ClickHouseTLS is TLS to ClickHouse's secure native port: the CA that
// signs the server's certificate (empty: the system's roots), an optional
// client certificate and key, the name the server's certificate holds
// (empty: the host of addr).
type ClickHouseTLS struct {
	Enabled    bool   `koanf:"enabled"`
	CAFile     string `koanf:"ca_file"`
	CertFile   string `koanf:"cert_file"`
	KeyFile    string `koanf:"key_file"`
	ServerName string `koanf:"server_name"`
}

func (t ClickHouseTLS) settings() config.TLS {
	return config.TLS{CAFile: t.CAFile, CertFile: t.CertFile, KeyFile: t.KeyFile, ServerName: t.ServerName}
}

// validate checks the ClickHouse credentials and TLS files; errors name
// the keys and files, never a secret.
func (c ClickHouseConfig) validate() error {
	if c.Password != "" && c.PasswordFile != "" {
		return fmt.Errorf("clickhouse.password and clickhouse.password_file: set one of them, not both")
	}
	if c.PasswordFile != "" {
		if _, err := config.ReadSecretFile("clickhouse.password_file", c.PasswordFile); err != nil {
			return err
		}
	}
	if !c.TLS.Enabled {
		if c.TLS.settings().IsSet() {
			return fmt.Errorf("clickhouse.tls.enabled: false, but other clickhouse.tls keys are set: set it true (and clickhouse.addr to the secure native port)")
		}
		return nil
	}
	return c.TLS.settings().ValidateKey("clickhouse.tls")
}

// Options are the clickhouse-go options of the connection: native
// protocol, the password read from clickhouse.password_file when set, TLS
// when enabled.
func (c ClickHouseConfig) Options() (*clickhouse.Options, error) { return c.OptionsFor(c.Addrs()) }

// OptionsFor are Options for the servers addrs (the replicas of one
// shard), tried in order: inserts and look-ups go to the first that
// answers, which sees its own writes at once.
func (c ClickHouseConfig) OptionsFor(addrs []string) (*clickhouse.Options, error) {
	password, err := c.password()
	if err != nil {
		return nil, err
	}
	o := &clickhouse.Options{
		Protocol:         clickhouse.Native,
		Addr:             addrs,
		Auth:             clickhouse.Auth{Username: c.Username, Password: password},
		DialTimeout:      c.DialTimeout,
		ConnOpenStrategy: clickhouse.ConnOpenInOrder,
	}
	if c.TLS.Enabled {
		if o.TLS, err = c.TLS.settings().ConfigKey("clickhouse.tls"); err != nil {
			return nil, err
		}
	}
	return o, nil
}

// Addrs are the servers of clickhouse.addr, trimmed, empty entries dropped.
func (c ClickHouseConfig) Addrs() []string {
	var out []string
	for _, a := range strings.Split(c.Addr, ",") {
		if a = strings.TrimSpace(a); a != "" {
			out = append(out, a)
		}
	}
	return out
}

func (c ClickHouseConfig) password() (string, error) {
	if c.PasswordFile != "" {
		return config.ReadSecretFile("clickhouse.password_file", c.PasswordFile)
	}
	return c.Password, nil
}

// ConsumerConfig is the sink's durable JetStream consumers: Durable on
// NETPULSE_EVENTS, AlertsDurable on NETPULSE_ALERTS, with the same limits.
type ConsumerConfig struct {
	Durable       string `koanf:"durable"`
	AlertsDurable string `koanf:"alerts_durable"`
	// AckWait must cover a batch's flush interval and its INSERT.
	AckWait       time.Duration `koanf:"ack_wait"`
	MaxAckPending int           `koanf:"max_ack_pending"`
}

// BatchConfig bounds one INSERT.
type BatchConfig struct {
	MaxRows       int           `koanf:"max_rows"`
	FlushInterval time.Duration `koanf:"flush_interval"`
}

// StatsConfig sets how often the sink logs its counters.
type StatsConfig struct {
	Interval time.Duration `koanf:"interval"`
}

// DefaultConfig is what config/sink.yaml documents.
func DefaultConfig() Config {
	return Config{
		NATS:         config.DefaultNATS(),
		Stream:       config.DefaultStream(),
		AlertsStream: config.DefaultAlertsStream(),
		Log:          config.DefaultLog(),
		Metrics:      config.Metrics{Addr: "127.0.0.1:9433"},
		ClickHouse: ClickHouseConfig{
			Addr: "127.0.0.1:9000", Database: "netpulse", Username: "default",
			DialTimeout: 5 * time.Second, TTLDays: 30,
		},
		Consumer: ConsumerConfig{Durable: "netpulse-sink", AlertsDurable: "netpulse-sink-alerts", AckWait: 15 * time.Second, MaxAckPending: 20000},
		Batch:    BatchConfig{MaxRows: 100000, FlushInterval: time.Second},
		Stats:    StatsConfig{Interval: 10 * time.Second},
	}
}

var (
	identifier   = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_]*$`)
	consumerName = regexp.MustCompile(`^[A-Za-z0-9_-]+$`)
)

// Validate checks every value and names the key at fault.
func (c *Config) Validate() error {
	for _, v := range []interface{ Validate() error }{c.NATS, c.Stream, c.Log, c.Metrics} {
		if err := v.Validate(); err != nil {
			return err
		}
	}
	if err := c.AlertsStream.ValidateKey("alerts_stream"); err != nil {
		return err
	}
	switch {
	case len(c.ClickHouse.Addrs()) == 0:
		return fmt.Errorf("clickhouse.addr: must be host:port of the native protocol, or a comma-separated list of them")
	case c.ClickHouse.Cluster != "" && !identifier.MatchString(c.ClickHouse.Cluster):
		return fmt.Errorf("clickhouse.cluster: %q is not a plain identifier", c.ClickHouse.Cluster)
	case len(c.ClickHouse.Addrs()) > 1 && c.ClickHouse.Cluster == "":
		// Failing over between servers that do not replicate each other
		// would split the rows and blind the duplicate look-ups.
		return fmt.Errorf("clickhouse.addr: several servers need clickhouse.cluster (their remote_servers cluster; a single shard of replicas is a cluster of one shard)")
	case !identifier.MatchString(c.ClickHouse.Database):
		return fmt.Errorf("clickhouse.database: %q is not a plain identifier", c.ClickHouse.Database)
	case c.ClickHouse.DialTimeout <= 0:
		return fmt.Errorf("clickhouse.dial_timeout: must be positive, got %s", c.ClickHouse.DialTimeout)
	case c.ClickHouse.TTLDays < 0:
		return fmt.Errorf("clickhouse.ttl_days: must be 0 (keep) or more, got %d", c.ClickHouse.TTLDays)
	}
	for _, a := range c.ClickHouse.Addrs() {
		if _, _, err := net.SplitHostPort(a); err != nil {
			return fmt.Errorf("clickhouse.addr: %q is not host:port of the native protocol", a)
		}
	}
	if err := c.ClickHouse.validate(); err != nil {
		return err
	}
	switch {
	case !consumerName.MatchString(c.Consumer.Durable):
		return fmt.Errorf("consumer.durable: %q is not a valid consumer name", c.Consumer.Durable)
	case !consumerName.MatchString(c.Consumer.AlertsDurable):
		return fmt.Errorf("consumer.alerts_durable: %q is not a valid consumer name", c.Consumer.AlertsDurable)
	case c.Consumer.MaxAckPending < 1:
		return fmt.Errorf("consumer.max_ack_pending: must be positive, got %d", c.Consumer.MaxAckPending)
	case c.Batch.MaxRows < 1 || c.Batch.MaxRows > 1_000_000:
		// Above max_insert_block_size (1,048,576) the server may split an
		// INSERT into several parts, and one INSERT is no longer atomic.
		return fmt.Errorf("batch.max_rows: must be 1..1000000, got %d", c.Batch.MaxRows)
	case c.Batch.FlushInterval < 10*time.Millisecond:
		return fmt.Errorf("batch.flush_interval: must be at least 10ms, got %s", c.Batch.FlushInterval)
	case c.Consumer.AckWait < 2*c.Batch.FlushInterval+10*time.Second:
		return fmt.Errorf("consumer.ack_wait: must be at least 2 x batch.flush_interval + 10s, got %s", c.Consumer.AckWait)
	case c.Stats.Interval < 100*time.Millisecond:
		return fmt.Errorf("stats.interval: must be at least 100ms, got %s", c.Stats.Interval)
	}
	return nil
}
