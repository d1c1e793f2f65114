package config

import (
	"fmt"
	"log/slog"
	"net"
	"net/url"
	"os"
	"strings"
	"time"
)

// NATS is how a service reaches the NATS servers, and who it is there.
type NATS struct {
	// URL is one server or a comma-separated list of them (a cluster);
	// the client starts with any and fails over to the others.
	URL            string        `koanf:"url"`
	ConnectTimeout time.Duration `koanf:"connect_timeout"`
	// At most one way to authenticate: User with Password (or
	// PasswordFile), Token (or TokenFile), NkeySeedFile, or CredsFile (a
	// JWT and its nkey seed, as nsc writes it). Secrets may come from the
	// *_file keys; those files are read again at every (re)connect.
	User         string `koanf:"user"`
	Password     string `koanf:"password"`
	PasswordFile string `koanf:"password_file"`
	Token        string `koanf:"token"`
	TokenFile    string `koanf:"token_file"`
	NkeySeedFile string `koanf:"nkey_seed_file"`
	CredsFile    string `koanf:"creds_file"`
	// InboxPrefix starts the reply subjects of this connection's requests
	// (JetStream API calls, acks of publishes, pulled messages). With its
	// own prefix a user can be allowed to subscribe to its replies only
	// (deploy/nats: _INBOX.<user>).
	InboxPrefix string `koanf:"inbox_prefix"`
	TLS         TLS    `koanf:"tls"`
}

// DefaultInboxPrefix is the NATS client's own inbox prefix.
const DefaultInboxPrefix = "_INBOX"

// DefaultNATS is the contract's default server.
func DefaultNATS() NATS {
	return NATS{URL: "nats://127.0.0.1:4222", ConnectTimeout: 5 * time.Second, InboxPrefix: DefaultInboxPrefix}
}

// WithURL returns n pointing at url.
func (n NATS) WithURL(url string) NATS { n.URL = url; return n }

// Servers are the URLs of nats.url (see List).
func (n NATS) Servers() []string { return List(n.URL) }

// List is a comma-separated setting's items, each trimmed, empty ones
// dropped.
func List(s string) []string {
	var out []string
	for _, u := range strings.Split(s, ",") {
		if u = strings.TrimSpace(u); u != "" {
			out = append(out, u)
		}
	}
	return out
}

// RedactedURL is nats.url as it may be shown: secrets in URLs redacted.
func (n NATS) RedactedURL() string { return strings.Join(redactAll(n.Servers()), ",") }

func redactAll(urls []string) []string {
	out := make([]string, len(urls))
	for i, u := range urls {
		out[i] = RedactURL(u)
	}
	return out
}

// natsSchemes are the URL schemes the NATS client dials.
var natsSchemes = map[string]bool{"nats": true, "tls": true, "ws": true, "wss": true}

// Validate checks the NATS settings: every URL, that at most one way to
// authenticate is set, and that every file named can be read and holds
// what it should. Errors name the keys and files, never a secret.
func (n NATS) Validate() error {
	servers := n.Servers()
	if len(servers) == 0 {
		return fmt.Errorf("nats.url: empty; want one URL or a comma-separated list, like nats://127.0.0.1:4222")
	}
	urlAuth := ""
	for _, u := range servers {
		// url.Parse's error repeats the URL: never shown.
		p, err := url.Parse(u)
		if err != nil || p.Hostname() == "" || !natsSchemes[p.Scheme] {
			return fmt.Errorf("nats.url: %q is not a NATS URL like nats://127.0.0.1:4222 (schemes nats, tls, ws, wss; a list is comma-separated)", RedactURL(u))
		}
		if p.User != nil {
			urlAuth = "user info in nats.url"
		}
	}
	if n.ConnectTimeout <= 0 {
		return fmt.Errorf("nats.connect_timeout: must be positive, got %s", n.ConnectTimeout)
	}
	if n.Password != "" && n.PasswordFile != "" {
		return fmt.Errorf("nats.password and nats.password_file: set one of them, not both")
	}
	if n.Token != "" && n.TokenFile != "" {
		return fmt.Errorf("nats.token and nats.token_file: set one of them, not both")
	}
	var methods []string
	if urlAuth != "" {
		methods = append(methods, urlAuth)
	}
	hasPassword := n.Password != "" || n.PasswordFile != ""
	switch {
	case n.User != "" && !hasPassword:
		return fmt.Errorf("nats.user: needs nats.password or nats.password_file")
	case n.User == "" && hasPassword:
		return fmt.Errorf("%s: needs nats.user", firstSet("nats.password", n.Password, "nats.password_file", n.PasswordFile))
	case n.User != "":
		methods = append(methods, "nats.user")
	}
	if k := firstSet("nats.token", n.Token, "nats.token_file", n.TokenFile); k != "" {
		methods = append(methods, k)
	}
	if n.NkeySeedFile != "" {
		methods = append(methods, "nats.nkey_seed_file")
	}
	if n.CredsFile != "" {
		methods = append(methods, "nats.creds_file")
	}
	if len(methods) > 1 {
		return fmt.Errorf("%s: set one way to authenticate, not several", strings.Join(methods, " and "))
	}
	if n.PasswordFile != "" {
		if _, err := ReadSecretFile("nats.password_file", n.PasswordFile); err != nil {
			return err
		}
	}
	if n.TokenFile != "" {
		if _, err := ReadSecretFile("nats.token_file", n.TokenFile); err != nil {
			return err
		}
	}
	if n.NkeySeedFile != "" {
		if err := checkNkeySeedFile("nats.nkey_seed_file", n.NkeySeedFile); err != nil {
			return err
		}
	}
	if n.CredsFile != "" {
		if err := checkCredsFile("nats.creds_file", n.CredsFile); err != nil {
			return err
		}
	}
	p := n.InboxPrefix // "" is the client's default, _INBOX
	if p != "" && (strings.ContainsAny(p, "*> \t") || strings.HasSuffix(p, ".") || strings.HasPrefix(p, ".") || strings.Contains(p, "..")) {
		return fmt.Errorf("nats.inbox_prefix: %q is not a subject prefix like _INBOX or _INBOX.netpulse-sink (no wildcards, no leading or trailing dot)", p)
	}
	return n.TLS.ValidateKey("nats.tls")
}

// firstSet is the first key whose value is set, "" if none.
func firstSet(kv ...string) string {
	for i := 0; i+1 < len(kv); i += 2 {
		if kv[i+1] != "" {
			return kv[i]
		}
	}
	return ""
}

// PasswordValue is nats.password, or the content of nats.password_file.
func (n NATS) PasswordValue() (string, error) {
	return secret("nats.password", n.Password, "nats.password_file", n.PasswordFile)
}

// TokenValue is nats.token, or the content of nats.token_file.
func (n NATS) TokenValue() (string, error) {
	return secret("nats.token", n.Token, "nats.token_file", n.TokenFile)
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

// Metrics is where a service serves /metrics, /healthz and /readyz.
type Metrics struct {
	// Addr is host:port to listen on ("" serves nothing; port 0 picks a
	// free one, logged at start).
	Addr string `koanf:"addr"`
}

// Validate checks the metrics address.
func (m Metrics) Validate() error {
	if m.Addr == "" {
		return nil
	}
	if _, port, err := net.SplitHostPort(m.Addr); err != nil || port == "" {
		return fmt.Errorf("metrics.addr: %q is not host:port (\"\" to serve nothing)", m.Addr)
	}
	return nil
}
