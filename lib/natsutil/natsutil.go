// Package natsutil holds what every netpulse service does with NATS: connect
// with reconnects, name subjects, and create the event stream idempotently.
package natsutil

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/netpulse/netpulse/lib/config"
	"github.com/netpulse/netpulse/lib/eventpb"
)

const (
	// EventsStream holds every raw event, partitioned by subject.
	EventsStream = "NETPULSE_EVENTS"
	// EventsPrefix starts every raw-event subject: netpulse.events.<host>.<kind>.
	EventsPrefix = "netpulse.events"
	// AlertsStream holds every alert transition.
	AlertsStream = "NETPULSE_ALERTS"
	// AlertsPrefix starts every alert subject: netpulse.alerts.<detector>.<severity>.<host>.
	AlertsPrefix = "netpulse.alerts"
)

// Event kinds: the last token of a raw-event subject.
const (
	KindState      = "state"      // STATE_CHANGE events
	KindRetransmit = "retransmit" // RETRANSMIT and SYNACK_RETRANSMIT events
	KindReset      = "reset"      // RESET_SENT and RESET_RECEIVED events
	KindError      = "error"      // SOCKET_ERROR and CONNECT_FAILED events
	KindConn       = "conn"       // finished connections (Batch.connections)
	KindSnapshot   = "snapshot"   // socket-table snapshots (Batch.snapshot)
	KindStats      = "stats"      // probe counters, JSON
)

// DataKinds are the kinds whose messages are protobuf Batches: every kind
// but stats.
var DataKinds = []string{KindState, KindRetransmit, KindReset, KindError, KindConn, KindSnapshot}

// KindOf is the kind an event of type t is published under; "" for types
// this code does not know.
func KindOf(t eventpb.EventType) string {
	switch t {
	case eventpb.EventType_EVENT_TYPE_STATE_CHANGE:
		return KindState
	case eventpb.EventType_EVENT_TYPE_RETRANSMIT, eventpb.EventType_EVENT_TYPE_SYNACK_RETRANSMIT:
		return KindRetransmit
	case eventpb.EventType_EVENT_TYPE_RESET_SENT, eventpb.EventType_EVENT_TYPE_RESET_RECEIVED:
		return KindReset
	case eventpb.EventType_EVENT_TYPE_SOCKET_ERROR, eventpb.EventType_EVENT_TYPE_CONNECT_FAILED:
		return KindError
	}
	return ""
}

// SubjectKind returns the kind token of a raw-event subject
// (netpulse.events.<host>.<kind>), or "" when subject is not one.
func SubjectKind(subject string) string {
	rest, ok := strings.CutPrefix(subject, EventsPrefix+".")
	if !ok {
		return ""
	}
	i := strings.LastIndexByte(rest, '.')
	if i <= 0 {
		return ""
	}
	return rest[i+1:]
}

// EventSubject is the subject of events of kind from host.
func EventSubject(host, kind string) string {
	return EventsPrefix + "." + host + "." + kind
}

// KindSubjects matches events of kind from every host.
func KindSubjects(kind string) string { return EventSubject("*", kind) }

// SanitizeToken makes name usable as one NATS subject token: characters a
// token cannot hold ('.', '*', '>', whitespace, control characters) become
// repl. An empty name becomes "unknown".
func SanitizeToken(name, repl string) string {
	var b strings.Builder
	for _, r := range name {
		if r == '.' || r == '*' || r == '>' || r <= ' ' || r == 0x7f {
			b.WriteString(repl)
			continue
		}
		b.WriteRune(r)
	}
	if b.Len() == 0 {
		return "unknown"
	}
	return b.String()
}

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

// EventsStreamConfig is the NETPULSE_EVENTS stream the settings describe.
func EventsStreamConfig(s config.Stream) jetstream.StreamConfig {
	return StreamConfig(s, EventsStream, "netpulse raw TCP events, netpulse.events.<host>.<kind>", EventsPrefix+".>")
}

// AlertsStreamConfig is the NETPULSE_ALERTS stream the settings describe.
func AlertsStreamConfig(s config.Stream) jetstream.StreamConfig {
	return StreamConfig(s, AlertsStream, "netpulse alerts, netpulse.alerts.<detector>.<severity>.<host>", AlertsPrefix+".>")
}

// EnsureAlertsStream creates or updates NETPULSE_ALERTS, retrying while the
// server is unreachable until ctx ends.
func EnsureAlertsStream(ctx context.Context, js jetstream.JetStream, s config.Stream, log *slog.Logger) (jetstream.Stream, error) {
	cfg := AlertsStreamConfig(s)
	return Retry(ctx, log, "create stream "+cfg.Name, func(ctx context.Context) (jetstream.Stream, error) {
		return js.CreateOrUpdateStream(ctx, cfg)
	})
}

// AlertSubject is the subject of an alert: netpulse.alerts.<detector>.<severity>.<host>.
func AlertSubject(detector, severity, host string) string {
	return AlertsPrefix + "." + detector + "." + severity + "." + host
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
	cfg := EventsStreamConfig(s)
	return Retry(ctx, log, "create stream "+cfg.Name, func(ctx context.Context) (jetstream.Stream, error) {
		return js.CreateOrUpdateStream(ctx, cfg)
	})
}

// Retry calls fn until it succeeds or ctx ends, backing off from 250 ms to
// 5 s and logging each failure.
func Retry[T any](ctx context.Context, log *slog.Logger, what string, fn func(context.Context) (T, error)) (T, error) {
	wait := 250 * time.Millisecond
	for {
		callCtx, cancel := context.WithTimeout(ctx, 10*time.Second)
		v, err := fn(callCtx)
		cancel()
		if err == nil {
			return v, nil
		}
		if errors.Is(err, jetstream.ErrStreamNameAlreadyInUse) {
			// A stream whose config is not updatable in place: an operator must decide.
			return v, fmt.Errorf("%s: %w", what, err)
		}
		log.Warn("retrying", "what", what, "err", err, "in", wait)
		select {
		case <-ctx.Done():
			return v, fmt.Errorf("%s: %w (last error: %v)", what, ctx.Err(), err)
		case <-time.After(wait):
		}
		wait = min(wait*2, 5*time.Second)
	}
}

// EventsConsumer connects as name, makes sure NETPULSE_EVENTS exists and
// creates or updates the durable consumer cc on it, retrying while the
// server is unreachable until ctx ends. The caller closes the connection.
func EventsConsumer(ctx context.Context, cfg config.NATS, stream config.Stream, name string, cc jetstream.ConsumerConfig, log *slog.Logger) (*nats.Conn, jetstream.Consumer, error) {
	nc, err := Connect(cfg, name, log)
	if err != nil {
		return nil, nil, err
	}
	js, err := jetstream.New(nc)
	if err != nil {
		nc.Close()
		return nil, nil, fmt.Errorf("jetstream: %w", err)
	}
	if _, err := EnsureEventsStream(ctx, js, stream, log); err != nil {
		nc.Close()
		return nil, nil, err
	}
	cons, err := Retry(ctx, log, "create consumer "+cc.Durable, func(ctx context.Context) (jetstream.Consumer, error) {
		return js.CreateOrUpdateConsumer(ctx, EventsStream, cc)
	})
	if err != nil {
		nc.Close()
		return nil, nil, err
	}
	return nc, cons, nil
}
