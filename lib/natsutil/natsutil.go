// Package natsutil holds what every netpulse service does with NATS: connect
// with reconnects, and create its streams idempotently. What the subjects
// and streams mean is package wire.
package natsutil

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/netpulse/netpulse/lib/config"
	"github.com/netpulse/netpulse/lib/retry"
	"github.com/netpulse/netpulse/lib/wire"
)

// Connect dials NATS and keeps reconnecting for ever: a server that goes away
// is waited for, never a reason to exit. Connection changes are logged.
func Connect(cfg config.NATS, name string, log *slog.Logger) (*nats.Conn, error) {
	opts := []nats.Option{
		nats.Name(name),
		nats.Timeout(cfg.ConnectTimeout),
		nats.MaxReconnects(-1),
		nats.ReconnectWait(500 * time.Millisecond),
		nats.RetryOnFailedConnect(true),
		nats.ReconnectBufSize(32 << 20),
		nats.DisconnectErrHandler(func(c *nats.Conn, err error) {
			if err == nil && c.IsClosed() {
				return // closed by us, at shutdown
			}
			log.Warn("disconnected from NATS", "err", err)
		}),
		nats.ReconnectHandler(func(c *nats.Conn) {
			log.Info("reconnected to NATS", "url", c.ConnectedUrlRedacted())
		}),
		nats.ErrorHandler(func(_ *nats.Conn, sub *nats.Subscription, err error) {
			subj := ""
			if sub != nil {
				subj = sub.Subject
			}
			log.Error("NATS async error", "subject", subj, "err", err)
		}),
	}
	if cfg.CredsFile != "" {
		opts = append(opts, nats.UserCredentials(cfg.CredsFile))
	}
	nc, err := nats.Connect(cfg.URL, opts...)
	if err != nil {
		return nil, fmt.Errorf("connect to NATS %s: %w", cfg.URL, err)
	}
	return nc, nil
}

// eventsStreamConfig is the NETPULSE_EVENTS stream the settings describe.
func eventsStreamConfig(s config.Stream) jetstream.StreamConfig {
	return StreamConfig(s, wire.EventsStream, "netpulse raw TCP events, netpulse.events.<host>.<kind>", wire.EventsPrefix+".>")
}

// alertsStreamConfig is the NETPULSE_ALERTS stream the settings describe.
func alertsStreamConfig(s config.Stream) jetstream.StreamConfig {
	return StreamConfig(s, wire.AlertsStream, "netpulse alerts, netpulse.alerts.<detector>.<severity>.<host>", wire.AllAlerts)
}

// EnsureAlertsStream creates or updates NETPULSE_ALERTS, retrying while the
// server is unreachable until ctx ends.
func EnsureAlertsStream(ctx context.Context, js jetstream.JetStream, s config.Stream, log *slog.Logger) (jetstream.Stream, error) {
	return EnsureStream(ctx, js, alertsStreamConfig(s), log)
}

// StreamConfig is a limits stream named name on subject with the limits
// and storage of s.
func StreamConfig(s config.Stream, name, description, subject string) jetstream.StreamConfig {
	storage := jetstream.FileStorage
	if s.Storage == "memory" {
		storage = jetstream.MemoryStorage
	}
	return jetstream.StreamConfig{
		Name:        name,
		Description: description,
		Subjects:    []string{subject},
		Retention:   jetstream.LimitsPolicy,
		Discard:     jetstream.DiscardOld,
		MaxAge:      s.MaxAge,
		MaxBytes:    s.MaxBytes,
		Duplicates:  s.DuplicateWindow,
		Replicas:    s.Replicas,
		Storage:     storage,
	}
}

// EnsureEventsStream creates or updates NETPULSE_EVENTS, retrying while the
// server is unreachable until ctx ends.
func EnsureEventsStream(ctx context.Context, js jetstream.JetStream, s config.Stream, log *slog.Logger) (jetstream.Stream, error) {
	return EnsureStream(ctx, js, eventsStreamConfig(s), log)
}

// EnsureEventsAndAlerts creates or updates NETPULSE_EVENTS and
// NETPULSE_ALERTS, as every consumer does at start.
func EnsureEventsAndAlerts(ctx context.Context, js jetstream.JetStream, events, alerts config.Stream, log *slog.Logger) error {
	if _, err := EnsureEventsStream(ctx, js, events, log); err != nil {
		return err
	}
	_, err := EnsureAlertsStream(ctx, js, alerts, log)
	return err
}

// EnsureStream creates or updates the stream cfg, retrying while the server
// is unreachable until ctx ends. A stream whose config cannot be updated in
// place is not retried: an operator must decide.
func EnsureStream(ctx context.Context, js jetstream.JetStream, cfg jetstream.StreamConfig, log *slog.Logger) (jetstream.Stream, error) {
	return retry.Logged(ctx, log, "create stream "+cfg.Name, func(ctx context.Context) (jetstream.Stream, error) {
		st, err := js.CreateOrUpdateStream(ctx, cfg)
		if errors.Is(err, jetstream.ErrStreamNameAlreadyInUse) {
			return nil, retry.Permanent(err)
		}
		return st, err
	})
}
