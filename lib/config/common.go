package config

import (
	"fmt"
	"log/slog"
	"net/url"
	"os"
	"strings"
	"time"
)

// NATS is how a service reaches the NATS server.
type NATS struct {
	URL            string        `koanf:"url"`
	ConnectTimeout time.Duration `koanf:"connect_timeout"`
	// CredsFile is an optional NATS credentials file.
	CredsFile string `koanf:"creds_file"`
}

// DefaultNATS is the contract's default server.
func DefaultNATS() NATS {
	return NATS{URL: "nats://127.0.0.1:4222", ConnectTimeout: 5 * time.Second}
}

// WithURL returns n pointing at url.
func (n NATS) WithURL(url string) NATS { n.URL = url; return n }

// Validate checks the NATS settings.
func (n NATS) Validate() error {
	for _, u := range strings.Split(n.URL, ",") {
		p, err := url.Parse(strings.TrimSpace(u))
		if err != nil || p.Host == "" {
			return fmt.Errorf("nats.url: %q is not a NATS URL like nats://127.0.0.1:4222", u)
		}
	}
	if n.ConnectTimeout <= 0 {
		return fmt.Errorf("nats.connect_timeout: must be positive, got %s", n.ConnectTimeout)
	}
	return nil
}

// Stream holds the limits of the NETPULSE_EVENTS stream. Every service that
// starts creates or updates the stream with them.
type Stream struct {
	MaxAge          time.Duration `koanf:"max_age"`
	MaxBytes        int64         `koanf:"max_bytes"`
	DuplicateWindow time.Duration `koanf:"duplicate_window"`
	Replicas        int           `koanf:"replicas"`
	// Storage is "file" or "memory".
	Storage string `koanf:"storage"`
}

// DefaultStream keeps a day of events, at most 10 GiB.
func DefaultStream() Stream {
	return Stream{MaxAge: 24 * time.Hour, MaxBytes: 10 << 30, DuplicateWindow: 2 * time.Minute, Replicas: 1, Storage: "file"}
}

// DefaultAlertsStream keeps 30 days of alerts, at most 1 GiB.
func DefaultAlertsStream() Stream {
	return Stream{MaxAge: 30 * 24 * time.Hour, MaxBytes: 1 << 30, DuplicateWindow: 2 * time.Minute, Replicas: 1, Storage: "file"}
}

// Validate checks the stream limits of the "stream" key.
func (s Stream) Validate() error { return s.ValidateKey("stream") }

// ValidateKey checks the stream limits, naming them under key.
func (s Stream) ValidateKey(key string) error {
	switch {
	case s.MaxAge <= 0:
		return fmt.Errorf("%s.max_age: must be positive, got %s", key, s.MaxAge)
	case s.MaxBytes <= 0:
		return fmt.Errorf("%s.max_bytes: must be positive, got %d", key, s.MaxBytes)
	case s.DuplicateWindow <= 0 || s.DuplicateWindow > s.MaxAge:
		return fmt.Errorf("%s.duplicate_window: must be positive and at most %s.max_age, got %s", key, key, s.DuplicateWindow)
	case s.Replicas < 1 || s.Replicas > 5:
		return fmt.Errorf("%s.replicas: must be 1..5, got %d", key, s.Replicas)
	case s.Storage != "file" && s.Storage != "memory":
		return fmt.Errorf("%s.storage: must be file or memory, got %q", key, s.Storage)
	}
	return nil
}

// Log configures the service's slog logger.
type Log struct {
	Level  string `koanf:"level"`
	Format string `koanf:"format"`
}

// DefaultLog logs info and above as text.
func DefaultLog() Log { return Log{Level: "info", Format: "text"} }

// Validate checks the log settings.
func (l Log) Validate() error {
	var lv slog.Level
	if err := lv.UnmarshalText([]byte(l.Level)); err != nil {
		return fmt.Errorf("log.level: %q is not one of debug, info, warn, error", l.Level)
	}
	if l.Format != "text" && l.Format != "json" {
		return fmt.Errorf("log.format: must be text or json, got %q", l.Format)
	}
	return nil
}

// Logger builds the logger the settings describe, writing to stderr.
func (l Log) Logger(service string) *slog.Logger {
	var lv slog.Level
	_ = lv.UnmarshalText([]byte(l.Level))
	opts := &slog.HandlerOptions{Level: lv}
	var h slog.Handler = slog.NewTextHandler(os.Stderr, opts)
	if l.Format == "json" {
		h = slog.NewJSONHandler(os.Stderr, opts)
	}
	return slog.New(h).With("service", service)
}
