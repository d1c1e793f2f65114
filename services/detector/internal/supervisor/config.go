package supervisor

import (
	"errors"
	"fmt"
	"net/url"
	"regexp"
	"slices"
	"strings"
	"time"

	"github.com/netpulse/netpulse/lib/config"
	"github.com/netpulse/netpulse/services/detector/detect"
	"github.com/netpulse/netpulse/services/detector/internal/pluginconf"
)

// Config is the detector's whole configuration (config/detector.yaml).
type Config struct {
	NATS config.NATS `koanf:"nats"`
	// Stream: limits of NETPULSE_EVENTS.
	Stream config.Stream `koanf:"stream"`
	// AlertsStream: limits of NETPULSE_ALERTS.
	AlertsStream config.Stream `koanf:"alerts_stream"`
	// DeadLetterStream: limits of NETPULSE_DEADLETTER.
	DeadLetterStream config.Stream  `koanf:"deadletter_stream"`
	Log              config.Log     `koanf:"log"`
	Metrics          config.Metrics `koanf:"metrics"`
	// Detectors names the detectors this process runs; empty runs every
	// enabled one.
	Detectors []string `koanf:"detectors"`
	// EvaluateInterval: how often each host's detectors say what holds.
	// It bounds the alert latency (issue 4: under 1 s from the kernel
	// event, with the probe's 200 ms flush); 500 ms costs a replica a few
	// per cent of its throughput over 1 s (BenchmarkReplica), 250 ms 10-20 %.
	EvaluateInterval time.Duration `koanf:"evaluate_interval"`
	// Warmup: history replayed when a replica takes a host over; a
	// backlogged batch older than this when it arrives is skipped.
	Warmup time.Duration `koanf:"warmup"`
	// IdleTimeout drops a host that sent nothing this long and has no alert.
	IdleTimeout time.Duration `koanf:"idle_timeout"`
	Group       GroupConfig   `koanf:"group"`
	Stats       StatsConfig   `koanf:"stats"`
	// GeneratorURL is every alert's generatorURL, {detector}, {host} and
	// {fingerprint} replaced (query-escaped); "" sets none.
	GeneratorURL string             `koanf:"generator_url"`
	Alertmanager AlertmanagerConfig `koanf:"alertmanager"`
	// Detector holds detector.<name> for every registered detector (see
	// package pluginconf).
	Detector any `koanf:"detector,omitempty"`
}

// GroupConfig is how replicas of one detector share the work.
type GroupConfig struct {
	// Prefix names the consumer groups (<prefix>-<detector>) and the KV
	// buckets (<prefix>-replicas, <prefix>-alerts).
	Prefix string `koanf:"prefix"`
	// Partitions: hosts are hashed into this many partitions, the unit that
	// moves between replicas. At most this many replicas share a detector.
	Partitions int `koanf:"partitions"`
	// Replica is this process's name in the groups; empty makes one from the
	// host name and a random suffix.
	Replica string `koanf:"replica"`
	// MemberTTL: a replica silent this long is dropped and its partitions move.
	MemberTTL time.Duration `koanf:"member_ttl"`
	AckWait   time.Duration `koanf:"ack_wait"`
	// MaxAckPending bounds the batches delivered and not yet handled, per
	// kind: with the probe's batches of up to 256 KiB, 64 are 16 MiB, well
	// under a NATS server's 64 MiB max_pending per connection, so a backlog
	// never gets a kind's connection cut as a slow consumer.
	MaxAckPending int `koanf:"max_ack_pending"`
	// MaxBufferedBytes bounds each group's work-queue stream (0: no bound).
	MaxBufferedBytes int64 `koanf:"max_buffered_bytes"`
}

// AlertmanagerConfig is where the detector forwards alerts (package
// amforward); an empty URL forwards nowhere.
type AlertmanagerConfig struct {
	// URL: every Alertmanager of the cluster, comma-separated.
	URL            string        `koanf:"url"`
	ResendInterval time.Duration `koanf:"resend_interval"`
	Timeout        time.Duration `koanf:"timeout"`
	BatchSize      int           `koanf:"batch_size"`
	// AckWait: a transition not acknowledged this long is delivered again
	// (the forwarder extends it while it retries).
	AckWait      time.Duration `koanf:"ack_wait"`
	Username     string        `koanf:"username"`
	Password     string        `koanf:"password"`
	PasswordFile string        `koanf:"password_file"`
	TLS          config.TLS    `koanf:"tls"`
}

// URLs is the Alertmanagers of alertmanager.url.
func (a AlertmanagerConfig) URLs() []string { return config.List(a.URL) }

// PasswordValue is the password, or password_file's content.
func (a AlertmanagerConfig) PasswordValue() (string, error) {
	switch {
	case a.Password != "" && a.PasswordFile != "":
		return "", errors.New("alertmanager.password and alertmanager.password_file: set one of them, not both")
	case a.PasswordFile != "":
		return config.ReadSecretFile("alertmanager.password_file", a.PasswordFile)
	}
	return a.Password, nil
}

func (a AlertmanagerConfig) validate() error {
	urls := a.URLs()
	if len(urls) == 0 {
		return nil
	}
	for _, raw := range urls {
		u, err := url.Parse(raw)
		if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			return fmt.Errorf("alertmanager.url: %q is not an http:// or https:// URL", config.RedactURL(raw))
		}
		if u.User != nil {
			return fmt.Errorf("alertmanager.url: %q: put credentials in alertmanager.username and password(_file), not in the URL", config.RedactURL(raw))
		}
	}
	switch {
	case a.ResendInterval < time.Second:
		return fmt.Errorf("alertmanager.resend_interval: must be at least 1s, got %s", a.ResendInterval)
	case a.Timeout < 100*time.Millisecond:
		return fmt.Errorf("alertmanager.timeout: must be at least 100ms, got %s", a.Timeout)
	case a.BatchSize < 1 || a.BatchSize > 10000:
		return fmt.Errorf("alertmanager.batch_size: must be 1..10000, got %d", a.BatchSize)
	case a.AckWait < 3*a.Timeout:
		return fmt.Errorf("alertmanager.ack_wait: must be at least 3 × alertmanager.timeout (%s), got %s", 3*a.Timeout, a.AckWait)
	case (a.Password != "" || a.PasswordFile != "") && a.Username == "":
		return errors.New("alertmanager.password: needs alertmanager.username")
	}
	if _, err := a.PasswordValue(); err != nil {
		return err
	}
	return a.TLS.ValidateKey("alertmanager.tls")
}

// StatsConfig sets how often the detector logs its counters.
type StatsConfig struct {
	Interval time.Duration `koanf:"interval"`
}

// DefaultDeadLetterStream keeps a week of unusable messages, at most 256 MiB.
func DefaultDeadLetterStream() config.Stream {
	return config.Stream{MaxAge: 7 * 24 * time.Hour, MaxBytes: 256 << 20, DuplicateWindow: 2 * time.Minute, Replicas: 1, Storage: "file"}
}

// DefaultConfigFor is the default configuration with a section per plugin
// of reg; it fails when a plugin's config struct cannot be a section.
func DefaultConfigFor(reg *detect.Registry) (Config, error) {
	plugins := make([]detect.Plugin, 0)
	for _, n := range reg.Names() {
		p, _ := reg.Lookup(n)
		plugins = append(plugins, p)
	}
	tree, err := pluginconf.Defaults(plugins)
	if err != nil {
		return Config{}, err
	}
	return Config{
		NATS: config.DefaultNATS(), Stream: config.DefaultStream(), AlertsStream: config.DefaultAlertsStream(),
		DeadLetterStream: DefaultDeadLetterStream(), Log: config.DefaultLog(),
		Metrics:          config.Metrics{Addr: "127.0.0.1:9432"},
		Detectors:        []string{},
		EvaluateInterval: 500 * time.Millisecond,
		Warmup:           5 * time.Minute,
		IdleTimeout:      15 * time.Minute,
		Group: GroupConfig{
			Prefix: "netpulse-detector", Partitions: 16, MemberTTL: 3 * time.Second,
			AckWait: 3 * time.Second, MaxAckPending: 64, MaxBufferedBytes: 1 << 30,
		},
		Stats:        StatsConfig{Interval: 10 * time.Second},
		GeneratorURL: "http://127.0.0.1:3000/d/netpulse-tcp/netpulse-tcp?var-host={host}",
		Alertmanager: AlertmanagerConfig{ResendInterval: time.Minute, Timeout: 10 * time.Second, BatchSize: 64, AckWait: time.Minute},
		Detector:     tree,
	}, nil
}

// DefaultConfig is what config/detector.yaml documents: the detectors
// registered in detect.Default.
func DefaultConfig() Config {
	c, err := DefaultConfigFor(detect.Default)
	if err != nil {
		panic(err) // a built-in detector's config struct is broken: caught by the tests
	}
	return c
}

var (
	token = regexp.MustCompile(`^[A-Za-z0-9_-]+$`)
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
	if err := c.DeadLetterStream.ValidateKey("deadletter_stream"); err != nil {
		return err
	}
	g := c.Group
	switch {
	case c.EvaluateInterval < 10*time.Millisecond:
		return fmt.Errorf("evaluate_interval: must be at least 10ms, got %s", c.EvaluateInterval)
	case c.Warmup < 10*time.Second:
		return fmt.Errorf("warmup: must be at least 10s (a slower backlog is skipped as stale), got %s", c.Warmup)
	case c.IdleTimeout < c.EvaluateInterval:
		return fmt.Errorf("idle_timeout: must be at least evaluate_interval (%s), got %s", c.EvaluateInterval, c.IdleTimeout)
	case !token.MatchString(g.Prefix):
		return fmt.Errorf("group.prefix: %q: use letters, digits, '-' and '_'", g.Prefix)
	case g.Partitions < 1 || g.Partitions > 1024:
		return fmt.Errorf("group.partitions: must be 1..1024, got %d", g.Partitions)
	case g.Replica != "" && !token.MatchString(g.Replica):
		return fmt.Errorf("group.replica: %q: use letters, digits, '-' and '_'", g.Replica)
	case g.MemberTTL < time.Second:
		return fmt.Errorf("group.member_ttl: must be at least 1s, got %s", g.MemberTTL)
	case g.AckWait < time.Second:
		return fmt.Errorf("group.ack_wait: must be at least 1s, got %s", g.AckWait)
	case g.MaxAckPending < 1:
		return fmt.Errorf("group.max_ack_pending: must be positive, got %d", g.MaxAckPending)
	case g.MaxBufferedBytes < 0:
		return fmt.Errorf("group.max_buffered_bytes: must not be negative (0: no bound), got %d", g.MaxBufferedBytes)
	case c.Stats.Interval < 100*time.Millisecond:
		return fmt.Errorf("stats.interval: must be at least 100ms, got %s", c.Stats.Interval)
	}
	if err := c.Alertmanager.validate(); err != nil {
		return err
	}
	if c.GeneratorURL != "" {
		u, err := url.Parse(strings.NewReplacer("{detector}", "d", "{host}", "h", "{fingerprint}", "f").Replace(c.GeneratorURL))
		if err != nil || u.Scheme == "" || u.Host == "" {
			return fmt.Errorf("generator_url: %q is not an absolute URL", c.GeneratorURL)
		}
	}
	sections := pluginconf.List(c.Detector)
	names := make([]string, len(sections))
	for i, s := range sections {
		names[i] = s.Name
		if err := s.Section.Validate(s.Name); err != nil {
			return err
		}
	}
	for _, n := range c.Detectors {
		i := slices.Index(names, n)
		switch {
		case i < 0:
			return fmt.Errorf("detectors: no detector %q (there are: %s)", n, strings.Join(names, ", "))
		case !sections[i].Section.Enabled:
			return fmt.Errorf("detectors: %s is disabled (detector.%s.enabled: false)", n, n)
		}
	}
	return nil
}

// Selected is the detectors this process runs with their sections: the
// ones named in detectors, else every enabled one.
func (c *Config) Selected() []pluginconf.Named {
	var out []pluginconf.Named
	for _, s := range pluginconf.List(c.Detector) {
		if len(c.Detectors) > 0 && slices.Contains(c.Detectors, s.Name) || len(c.Detectors) == 0 && s.Section.Enabled {
			out = append(out, s)
		}
	}
	return out
}
