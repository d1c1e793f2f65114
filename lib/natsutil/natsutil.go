// Package natsutil holds what every netpulse service does with NATS: connect
// with reconnects, and create its streams idempotently. What the subjects
// and streams mean is package wire.
package natsutil

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"reflect"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/netpulse/netpulse/lib/config"
	"github.com/netpulse/netpulse/lib/retry"
	"github.com/netpulse/netpulse/lib/wire"
)

// Connect dials NATS and keeps reconnecting for ever: a server that goes away
// is waited for, never a reason to exit. Every server of cfg.URL (a
// comma-separated list) is in the client's pool, which the servers' own
// gossip extends. Connection changes are logged, URLs with secrets
// redacted.
//
// What cannot get better by waiting stops the first connect with an error:
// the server refusing the credentials, or a certificate that does not
// verify. Secrets are read here (password and token files again at every
// reconnect, so a rotated file is picked up), never logged or returned in
// an error.
func Connect(cfg config.NATS, name string, log *slog.Logger) (*nats.Conn, error) {
	opts, err := Options(cfg, name, log)
	if err != nil {
		return nil, err
	}
	servers := cfg.RedactedURL()
	// First without RetryOnFailedConnect, to tell a refusal from a server
	// that is not there yet.
	first := opts
	first.RetryOnFailedConnect = false
	nc, err := first.Connect()
	switch {
	case err == nil:
	case isConfigError(err):
		return nil, fmt.Errorf("connect to NATS %s: %w", servers, err)
	default:
		log.Warn("NATS not reachable yet; retrying", "url", servers, "err", err)
		if nc, err = opts.Connect(); err != nil {
			return nil, fmt.Errorf("connect to NATS %s: %w", servers, err)
		}
	}
	if nc.IsConnected() {
		log.Info("connected to NATS", "url", config.RedactURL(nc.ConnectedUrl()), "server", nc.ConnectedServerName())
	}
	return nc, nil
}

// Options are the client options Connect uses.
func Options(cfg config.NATS, name string, log *slog.Logger) (nats.Options, error) {
	o := nats.GetDefaultOptions()
	o.Servers = cfg.Servers()
	if len(o.Servers) == 0 {
		return o, fmt.Errorf("nats.url: no server")
	}
	set := []nats.Option{
		nats.Name(name),
		nats.Timeout(cfg.ConnectTimeout),
		nats.MaxReconnects(-1),
		nats.ReconnectWait(500 * time.Millisecond),
		nats.RetryOnFailedConnect(true),
		nats.ReconnectBufSize(32 << 20),
		// A refusal after a reconnect (credentials rotated on the server
		// first) is retried like an absent server, not the end.
		nats.IgnoreAuthErrorAbort(),
		nats.DisconnectErrHandler(func(c *nats.Conn, err error) {
			if err == nil && c.IsClosed() {
				return // closed by us, at shutdown
			}
			log.Warn("disconnected from NATS", "err", err)
		}),
		nats.ReconnectHandler(func(c *nats.Conn) {
			log.Info("reconnected to NATS", "url", config.RedactURL(c.ConnectedUrl()), "server", c.ConnectedServerName())
		}),
		nats.ErrorHandler(func(_ *nats.Conn, sub *nats.Subscription, err error) {
			subj := ""
			if sub != nil {
				subj = sub.Subject
			}
			log.Error("NATS async error", "subject", subj, "err", err)
		}),
	}
	if cfg.InboxPrefix != "" && cfg.InboxPrefix != config.DefaultInboxPrefix {
		set = append(set, nats.CustomInboxPrefix(cfg.InboxPrefix))
	}
	switch {
	case cfg.User != "":
		pw, err := cfg.PasswordValue()
		if err != nil {
			return o, err
		}
		if cfg.PasswordFile != "" {
			read := rereadSecret("nats.password_file", cfg.PasswordFile, pw, log)
			set = append(set, nats.UserInfoHandler(func() (string, string) { return cfg.User, read() }))
		} else {
			set = append(set, nats.UserInfo(cfg.User, pw))
		}
	case cfg.TokenFile != "":
		tok, err := cfg.TokenValue()
		if err != nil {
			return o, err
		}
		set = append(set, nats.TokenHandler(rereadSecret("nats.token_file", cfg.TokenFile, tok, log)))
	case cfg.Token != "":
		set = append(set, nats.Token(cfg.Token))
	case cfg.NkeySeedFile != "":
		opt, err := nats.NkeyOptionFromSeed(cfg.NkeySeedFile)
		if err != nil {
			// nats' error may quote the file's line; say only what is wrong.
			return o, fmt.Errorf("nats.nkey_seed_file: %s holds no usable NATS user nkey seed", cfg.NkeySeedFile)
		}
		set = append(set, opt)
	case cfg.CredsFile != "":
		set = append(set, nats.UserCredentials(cfg.CredsFile))
	}
	if cfg.TLS.IsSet() {
		tc, err := cfg.TLS.ConfigKey("nats.tls")
		if err != nil {
			return o, err
		}
		set = append(set, nats.Secure(tc))
	}
	for _, opt := range set {
		if err := opt(&o); err != nil {
			return o, fmt.Errorf("NATS client options: %w", err)
		}
	}
	return o, nil
}

// rereadSecret returns a callback that reads file at every (re)connect and
// returns its secret; when the file cannot be read then, the last
// secret read is used and the failure logged (naming the key, not the
// secret).
func rereadSecret(key, file, initial string, log *slog.Logger) func() string {
	var mu sync.Mutex
	last := initial
	return func() string {
		mu.Lock()
		defer mu.Unlock()
		if s, err := config.ReadSecretFile(key, file); err != nil {
			log.Warn("keeping the last secret read", "err", err)
		} else {
			last = s
		}
		return last
	}
}

// isConfigError says whether a failed first connect is one that retrying
// does not cure: the server refused the credentials, or its certificate
// does not verify (or ours is refused).
func isConfigError(err error) bool {
	if errors.Is(err, nats.ErrAuthorization) || errors.Is(err, nats.ErrAuthExpired) || errors.Is(err, nats.ErrAuthRevoked) ||
		errors.Is(err, nats.ErrAccountAuthExpired) || errors.Is(err, nats.ErrNkeysNotSupported) || errors.Is(err, nats.ErrSecureConnRequired) ||
		errors.Is(err, nats.ErrSecureConnWanted) {
		return true
	}
	var (
		unknownCA *x509.UnknownAuthorityError
		hostname  x509.HostnameError
		invalid   x509.CertificateInvalidError
		verify    *tls.CertificateVerificationError
		rec       tls.RecordHeaderError // not TLS on the other side
	)
	if errors.As(err, &unknownCA) || errors.As(err, &hostname) || errors.As(err, &invalid) ||
		errors.As(err, &verify) || errors.As(err, &rec) {
		return true
	}
	// The server's TLS alert (no or a refused client certificate, no
	// common protocol version) comes as crypto/tls's unexported alert.
	return strings.Contains(err.Error(), "remote error: tls: ")
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
//
// It asks first and changes only what differs, so a user allowed to look
// up and create the stream but not to update it (the probe's, in
// deploy/nats) starts against a stream that is as configured. One that is
// not is left as it is, with a warning, when the server refuses this user
// the update: its limits are another role's to set.
func EnsureStream(ctx context.Context, js jetstream.JetStream, cfg jetstream.StreamConfig, log *slog.Logger) (jetstream.Stream, error) {
	return retry.Logged(ctx, log, "create stream "+cfg.Name, func(ctx context.Context) (jetstream.Stream, error) {
		st, err := js.Stream(ctx, cfg.Name)
		switch {
		case errors.Is(err, jetstream.ErrStreamNotFound):
			st, err = js.CreateStream(ctx, cfg)
			if errors.Is(err, jetstream.ErrStreamNameAlreadyInUse) {
				return nil, retry.Permanent(err)
			}
			return st, err
		case err != nil:
			return nil, err
		}
		if !StreamDiffers(st.CachedInfo().Config, cfg) {
			return st, nil
		}
		updated, err := updateStream(ctx, js, cfg)
		switch {
		case err == nil:
			return updated, nil
		case errors.Is(err, jetstream.ErrStreamNameAlreadyInUse):
			return nil, retry.Permanent(err)
		case errors.Is(err, errRefused):
			log.Warn("stream differs from this service's settings and this NATS user may not update it; using it as it is",
				"stream", cfg.Name)
			return st, nil
		}
		return nil, err
	})
}

var errRefused = errors.New("refused by the server")

// updateStream updates the stream, or returns errRefused as soon as the
// server says that this user may not: a refused request gets no answer,
// only the connection's asynchronous error says why.
func updateStream(ctx context.Context, js jetstream.JetStream, cfg jetstream.StreamConfig) (jetstream.Stream, error) {
	subject := "$JS.API.STREAM.UPDATE." + cfg.Name
	before := js.Conn().LastError()
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	type result struct {
		st  jetstream.Stream
		err error
	}
	done := make(chan result, 1)
	go func() {
		st, err := js.UpdateStream(ctx, cfg)
		done <- result{st, err}
	}()
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	for {
		select {
		case r := <-done:
			return r.st, r.err
		case <-tick.C:
			if err := js.Conn().LastError(); err != before && refused(err, subject) {
				return nil, errRefused
			}
		}
	}
}

// refused says whether err is the server's refusal of a publish to subject.
func refused(err error, subject string) bool {
	return errors.Is(err, nats.ErrPermissionViolation) && strings.Contains(err.Error(), `"`+subject+`"`)
}

// StreamDiffers says whether the stream config cur lacks a setting of
// want: every field want sets (not zero) must be equal in cur, and so must
// the retention, discard policy and storage, whose zero values (limits,
// discard old, file) are choices too. The server fills the other fields
// with its defaults.
func StreamDiffers(cur, want jetstream.StreamConfig) bool {
	if cur.Retention != want.Retention || cur.Discard != want.Discard || cur.Storage != want.Storage {
		return true
	}
	c, w := reflect.ValueOf(cur), reflect.ValueOf(want)
	for i := range w.NumField() {
		if f := w.Field(i); !f.IsZero() && !reflect.DeepEqual(f.Interface(), c.Field(i).Interface()) {
			return true
		}
	}
	return false
}
