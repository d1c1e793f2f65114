package natsutil

import (
	"bytes"
	"context"
	"errors"
	"log/slog"
	"os"
	"os/exec"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/jwt/v2"
	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/nats-io/nkeys"

	"github.com/netpulse/netpulse/lib/config"
	"github.com/netpulse/netpulse/lib/natsutil/securetest"
	"github.com/netpulse/netpulse/lib/testutil/natstest"
	"github.com/netpulse/netpulse/lib/wire"
)

// logBuffer collects a logger's lines for assertions.
type logBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *logBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *logBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

func newLog() (*slog.Logger, *logBuffer) {
	b := &logBuffer{}
	return slog.New(slog.NewTextHandler(b, &slog.HandlerOptions{Level: slog.LevelDebug})), b
}

// connectAs connects with the role's configuration as a service does, and
// returns its log too.
func connectAs(t *testing.T, n *securetest.NATS, r securetest.Role) (*nats.Conn, jetstream.JetStream, *logBuffer) {
	t.Helper()
	cfg := n.Config(r)
	if err := cfg.Validate(); err != nil {
		t.Fatalf("%s: config: %v", r, err)
	}
	log, buf := newLog()
	nc, err := Connect(cfg, "test "+string(r), log)
	if err != nil {
		t.Fatalf("%s: connect: %v\n%s", r, err, n.Log())
	}
	t.Cleanup(nc.Close)
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	return nc, js, buf
}

// refusedPublish publishes to subject on nc and waits for the server's
// refusal: the permissions violation it sends back for that subject.
func refusedPublish(t *testing.T, nc *nats.Conn, subject string) {
	t.Helper()
	if err := nc.Publish(subject, []byte("x")); err != nil {
		t.Fatal(err)
	}
	waitRefusal(t, nc, `Permissions Violation for Publish to "`+subject+`"`)
}

func waitRefusal(t *testing.T, nc *nats.Conn, want string) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		_ = nc.Flush()
		err := nc.LastError()
		if errors.Is(err, nats.ErrPermissionViolation) && strings.Contains(err.Error(), want) {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("server did not refuse: want %q, last error %v", want, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// The shipped accounts (deploy/nats/accounts.sh) on a TLS-only server
// started from deploy/nats/server.conf.tmpl: each role connects with its
// credentials from files and does what it needs; the probe is refused
// everything else.
func TestShippedAccounts(t *testing.T) {
	n := securetest.StartNATS(t, "host-a", "host-b")
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()

	// The probe of host-a, first on the server: creates NETPULSE_EVENTS
	// and publishes its own host's events, acknowledged by JetStream.
	pnc, pjs, plog := connectAs(t, n, securetest.Probe("host-a"))
	quietLog, _ := newLog()
	if _, err := EnsureEventsStream(ctx, pjs, config.DefaultStream(), quietLog); err != nil {
		t.Fatalf("probe creates NETPULSE_EVENTS: %v\n%v", err, n.Violations())
	}
	ack, err := pjs.Publish(ctx, wire.EventSubject("host-a", wire.KindState), []byte("batch"), jetstream.WithMsgID("p-state-1"))
	if err != nil {
		t.Fatalf("probe publishes its host's events: %v", err)
	}
	if ack.Stream != wire.EventsStream {
		t.Fatalf("ack from %q, want %s", ack.Stream, wire.EventsStream)
	}
	// Stats are a plain publish.
	if err := pnc.Publish(wire.EventSubject("host-a", wire.KindStats), []byte("{}")); err != nil {
		t.Fatal(err)
	}
	if err := pnc.Flush(); err != nil || pnc.LastError() != nil {
		t.Fatalf("stats publish: %v, last error %v", err, pnc.LastError())
	}

	// Another host's subject and an alert: refused by the server, never
	// stored.
	for _, subj := range []string{wire.EventSubject("host-b", wire.KindState), "netpulse.alerts.conn_leak.critical.host-a"} {
		refusedPublish(t, pnc, subj)
		pctx, pcancel := context.WithTimeout(ctx, time.Second)
		_, err := pjs.Publish(pctx, subj, []byte("forged"))
		pcancel()
		if err == nil {
			t.Fatalf("probe's JetStream publish to %s was acknowledged", subj)
		}
	}
	if !strings.Contains(plog.String(), "Permissions Violation for Publish") {
		t.Errorf("the probe's log does not report the refusal:\n%s", plog.String())
	}
	// Nor may it read anything but its own replies, or change the stream.
	if _, err := pnc.Subscribe("netpulse.>", func(*nats.Msg) {}); err != nil {
		t.Fatal(err)
	}
	waitRefusal(t, pnc, `Permissions Violation for Subscription to "netpulse.>"`)
	if _, err := pnc.Subscribe("_INBOX.netpulse-sink.>", func(*nats.Msg) {}); err != nil {
		t.Fatal(err)
	}
	waitRefusal(t, pnc, `Permissions Violation for Subscription to "_INBOX.netpulse-sink.>"`)
	other := config.DefaultStream()
	other.MaxAge = time.Hour
	ulog, ubuf := newLog()
	start := time.Now()
	if _, err := EnsureEventsStream(ctx, pjs, other, ulog); err != nil || time.Since(start) > 2*time.Second {
		t.Fatalf("probe with other limits: %v, after %s", err, time.Since(start))
	}
	if !strings.Contains(ubuf.String(), "may not update it") {
		t.Errorf("the probe does not say it left the stream as it is:\n%s", ubuf.String())
	}
	refusedPublish(t, pnc, "$JS.API.STREAM.DELETE."+wire.EventsStream)

	// The detector: its streams, publishes an alert and a dead letter.
	_, djs, dlog := connectAs(t, n, securetest.Detector)
	if err := EnsureEventsAndAlerts(ctx, djs, config.DefaultStream(), config.DefaultAlertsStream(), quietLog); err != nil {
		t.Fatalf("detector streams: %v", err)
	}
	si, err := djs.Stream(ctx, wire.EventsStream)
	if err != nil {
		t.Fatal(err)
	}
	if si.CachedInfo().Config.MaxAge != config.DefaultStream().MaxAge {
		t.Fatalf("the probe changed NETPULSE_EVENTS' max_age to %s", si.CachedInfo().Config.MaxAge)
	}
	if _, err := djs.Publish(ctx, "netpulse.alerts.conn_leak.critical.host-a", []byte(`{"status":"firing"}`)); err != nil {
		t.Fatalf("detector publishes an alert: %v", err)
	}
	if _, err := EnsureStream(ctx, djs, StreamConfig(config.DefaultStream(), wire.DeadLetterStream, "dead letters", wire.DeadLetterPrefix+".>"), quietLog); err != nil {
		t.Fatalf("detector creates %s: %v", wire.DeadLetterStream, err)
	}
	if _, err := djs.Publish(ctx, wire.DetectorDeadLetterSubject("conn_leak"), []byte("bad batch")); err != nil {
		t.Fatalf("detector publishes a dead letter: %v", err)
	}

	// The sink: its durable consumers, reads the probe's batch and the alert.
	snc, sjs, slog := connectAs(t, n, securetest.Sink)
	if err := EnsureEventsAndAlerts(ctx, sjs, config.DefaultStream(), config.DefaultAlertsStream(), quietLog); err != nil {
		t.Fatalf("sink streams: %v", err)
	}
	for stream, durable := range map[string]string{wire.EventsStream: "netpulse-sink", wire.AlertsStream: "netpulse-sink-alerts"} {
		c, err := sjs.CreateOrUpdateConsumer(ctx, stream, jetstream.ConsumerConfig{
			Durable: durable, AckPolicy: jetstream.AckExplicitPolicy, FilterSubjects: []string{"netpulse.>"},
		})
		if err != nil {
			t.Fatalf("sink consumer on %s: %v", stream, err)
		}
		batch, err := c.Fetch(1, jetstream.FetchMaxWait(5*time.Second))
		if err != nil {
			t.Fatal(err)
		}
		got := 0
		for m := range batch.Messages() {
			got++
			if err := m.DoubleAck(ctx); err != nil {
				t.Fatalf("sink acks on %s: %v", stream, err)
			}
		}
		if got != 1 || batch.Error() != nil {
			t.Fatalf("sink read %d messages from %s (%v), want 1", got, stream, batch.Error())
		}
	}
	refusedPublish(t, snc, "netpulse.alerts.conn_leak.critical.host-a")

	// Passwords never show: not in the logs of the services.
	for r, logs := range map[securetest.Role]string{securetest.Probe("host-a"): plog.String(), securetest.Detector: dlog.String(), securetest.Sink: slog.String()} {
		for _, pw := range n.Passwords {
			if strings.Contains(logs, pw) {
				t.Errorf("log of %s holds a password:\n%s", r, logs)
			}
		}
	}

	// Every violation the server saw is one this test provoked.
	for _, v := range n.Violations() {
		switch {
		case strings.Contains(v, `"netpulse.events.host-b.state"`), strings.Contains(v, `"netpulse.alerts.conn_leak.critical.host-a"`),
			strings.Contains(v, `"netpulse.>"`), strings.Contains(v, `"_INBOX.netpulse-sink.>"`),
			strings.Contains(v, `"$JS.API.STREAM.UPDATE.NETPULSE_EVENTS"`), strings.Contains(v, `"$JS.API.STREAM.DELETE.NETPULSE_EVENTS"`):
		default:
			t.Errorf("unexpected permissions violation: %s", v)
		}
	}
}

// Credentials the server refuses, or a certificate it does not accept,
// stop the first connect at once, and the error holds no secret.
func TestRefusedCredentials(t *testing.T) {
	n := securetest.StartNATS(t, "host-a")
	log, buf := newLog()

	wrong := securetest.Secret(t)
	cfg := n.Config(securetest.Sink)
	cfg.PasswordFile = securetest.WriteSecret(t, "wrong", wrong)
	start := time.Now()
	_, err := Connect(cfg, "test", log)
	if err == nil || !errors.Is(err, nats.ErrAuthorization) {
		t.Fatalf("wrong password: err %v, want an authorization violation", err)
	}
	if time.Since(start) > 10*time.Second {
		t.Errorf("the refusal took %s", time.Since(start))
	}

	// The password in the URL instead: redacted in the error.
	cfg = n.Config(securetest.Sink)
	cfg.User, cfg.PasswordFile = "", ""
	cfg.URL = strings.Replace(n.URL, "tls://", "tls://netpulse-sink:"+wrong+"@", 1)
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}
	_, err = Connect(cfg, "test", log)
	if err == nil || !strings.Contains(err.Error(), "netpulse-sink:"+config.Redacted+"@") {
		t.Fatalf("password in the URL: err %v, want it refused, the URL redacted", err)
	}

	// No client certificate: the server requires one. Mostly the server's
	// TLS alert reaches the client and Connect fails; under TLS 1.3 the
	// client can also see only the closed connection (EOF), which it
	// cannot tell from a server going away, and keeps retrying. Either
	// way it is never connected.
	cfg = n.Config(securetest.Sink)
	cfg.TLS.CertFile, cfg.TLS.KeyFile = "", ""
	if nc, err := Connect(cfg, "test", log); err == nil {
		connected := nc.IsConnected()
		nc.Close()
		if connected {
			t.Fatal("connected without a client certificate")
		}
	}
	// Another CA: the server's certificate does not verify.
	cfg = n.Config(securetest.Sink)
	cfg.TLS.CAFile = securetest.NewCA(t).CertFile
	if _, err = Connect(cfg, "test", log); err == nil || !strings.Contains(err.Error(), "certificate") {
		t.Fatalf("unknown CA: err %v, want a certificate error", err)
	}

	for _, s := range []string{wrong, n.Passwords[securetest.Sink]} {
		if strings.Contains(err.Error(), s) || strings.Contains(buf.String(), s) {
			t.Errorf("a password shows in an error or the log:\n%v\n%s", err, buf.String())
		}
	}
}

// nats.token_file (read again at reconnects) and nats.token against a
// server that takes a token.
func TestTokenAuth(t *testing.T) {
	token := securetest.Secret(t)
	s, err := server.NewServer(&server.Options{Host: "127.0.0.1", Port: -1, NoLog: true, NoSigs: true, Authorization: token})
	if err != nil {
		t.Fatal(err)
	}
	go s.Start()
	if !s.ReadyForConnections(10 * time.Second) {
		t.Fatal("server not ready")
	}
	t.Cleanup(s.Shutdown)
	log, buf := newLog()
	for _, cfg := range []config.NATS{
		{URL: s.ClientURL(), ConnectTimeout: time.Second, InboxPrefix: "_INBOX", TokenFile: securetest.WriteSecret(t, "token", token)},
		{URL: s.ClientURL(), ConnectTimeout: time.Second, InboxPrefix: "_INBOX", Token: token},
	} {
		if err := cfg.Validate(); err != nil {
			t.Fatal(err)
		}
		nc, err := Connect(cfg, "test", log)
		if err != nil {
			t.Fatalf("token: %v", err)
		}
		if err := nc.Publish("x", nil); err != nil {
			t.Fatal(err)
		}
		if err := nc.Flush(); err != nil {
			t.Fatal(err)
		}
		nc.Close()
	}
	cfg := config.NATS{URL: s.ClientURL(), ConnectTimeout: time.Second, InboxPrefix: "_INBOX", TokenFile: securetest.WriteSecret(t, "token", "not-"+token)}
	if _, err := Connect(cfg, "test", log); !errors.Is(err, nats.ErrAuthorization) || strings.Contains(err.Error(), token) {
		t.Fatalf("wrong token: %v", err)
	}
	if strings.Contains(buf.String(), token) {
		t.Errorf("the token shows in the log:\n%s", buf.String())
	}
}

// nats.creds_file: a user JWT and seed (what nsc writes) against a server
// that trusts the operator; the JWT's permissions hold.
func TestCredsFile(t *testing.T) {
	okp, _ := nkeys.CreateOperator()
	opub, _ := okp.PublicKey()
	oc := jwt.NewOperatorClaims(opub)
	ojwt, err := oc.Encode(okp)
	if err != nil {
		t.Fatal(err)
	}
	akp, _ := nkeys.CreateAccount()
	apub, _ := akp.PublicKey()
	ac := jwt.NewAccountClaims(apub)
	ajwt, err := ac.Encode(okp)
	if err != nil {
		t.Fatal(err)
	}
	ukp, _ := nkeys.CreateUser()
	upub, _ := ukp.PublicKey()
	uc := jwt.NewUserClaims(upub)
	uc.Pub.Allow.Add("netpulse.events.host-a.>")
	uc.Sub.Allow.Add("_INBOX.>")
	ujwt, err := uc.Encode(akp)
	if err != nil {
		t.Fatal(err)
	}
	useed, _ := ukp.Seed()
	creds, err := jwt.FormatUserConfig(ujwt, useed)
	if err != nil {
		t.Fatal(err)
	}
	credsFile := securetest.WriteSecret(t, "user.creds", string(creds))

	operator, err := jwt.DecodeOperatorClaims(ojwt)
	if err != nil {
		t.Fatal(err)
	}
	resolver := &server.MemAccResolver{}
	if err := resolver.Store(apub, ajwt); err != nil {
		t.Fatal(err)
	}
	s, err := server.NewServer(&server.Options{Host: "127.0.0.1", Port: -1, NoLog: true, NoSigs: true,
		TrustedOperators: []*jwt.OperatorClaims{operator}, AccountResolver: resolver})
	if err != nil {
		t.Fatal(err)
	}
	go s.Start()
	if !s.ReadyForConnections(10 * time.Second) {
		t.Fatal("server not ready")
	}
	t.Cleanup(s.Shutdown)

	cfg := config.DefaultNATS().WithURL(s.ClientURL())
	cfg.CredsFile = credsFile
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}
	log, buf := newLog()
	nc, err := Connect(cfg, "test", log)
	if err != nil {
		t.Fatalf("creds: %v", err)
	}
	defer nc.Close()
	if err := nc.Publish("netpulse.events.host-a.state", nil); err != nil {
		t.Fatal(err)
	}
	if err := nc.Flush(); err != nil || nc.LastError() != nil {
		t.Fatalf("allowed publish: %v %v", err, nc.LastError())
	}
	refusedPublish(t, nc, "netpulse.events.host-b.state")
	if strings.Contains(buf.String(), string(useed)) {
		t.Error("the seed shows in the log")
	}

	// A file that is not a creds file is refused at validation.
	cfg.CredsFile = securetest.WriteSecret(t, "bad.creds", "SUAM"+strings.Repeat("A", 20))
	if err := cfg.Validate(); err == nil || !strings.Contains(err.Error(), "nats.creds_file") || strings.Contains(err.Error(), "SUAM") {
		t.Fatalf("bad creds file: %v", err)
	}
	if _, err := os.Stat(credsFile); err != nil {
		t.Fatal(err)
	}
}

// Every server of nats.url is in the client's pool: with the first one
// down, Connect reaches the second.
func TestConnectTakesEveryServer(t *testing.T) {
	s := natstest.Start(t)
	down := "nats://127.0.0.1:1" // nothing listens on port 1
	cfg := config.DefaultNATS().WithURL(down + " , " + s.ClientURL())
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}
	log, _ := newLog()
	o, err := Options(cfg, "test", log)
	if err != nil {
		t.Fatal(err)
	}
	if strings.Join(o.Servers, ",") != down+","+s.ClientURL() {
		t.Fatalf("servers %q", o.Servers)
	}
	for range 5 { // the pool is shuffled: whichever comes first
		nc, err := Connect(cfg, "test", log)
		if err != nil {
			t.Fatal(err)
		}
		if !nc.IsConnected() || nc.ConnectedUrl() != s.ClientURL() {
			t.Fatalf("connected to %q (%v)", nc.ConnectedUrl(), nc.Status())
		}
		nc.Close()
	}
}

// accounts.sh refuses what would make a broken or too open configuration.
func TestAccountsScriptRefusesBadInput(t *testing.T) {
	script := securetest.RepoFile(t, "deploy/nats/accounts.sh")
	ok := []string{"--detector", "password:a", "--sink", "password:b"}
	for name, args := range map[string][]string{
		"no probe":           ok,
		"host with a dot":    append(ok, "--probe", "web.1=password:c"),
		"host with wildcard": append(ok, "--probe", "*=password:c"),
		"no credential kind": append(ok, "--probe", "web-1=c"),
		"bad nkey":           append(ok, "--probe", "web-1=nkey:UNOTAKEY"),
		"quote in password":  append(ok, "--probe", `web-1=password:a"b`),
		"bad detector name":  append(ok, "--probe", "web-1=password:c", "--detectors", "conn_leak,a.b"),
		"unknown argument":   append(ok, "--probe", "web-1=password:c", "--open"),
	} {
		out, err := exec.Command("bash", append([]string{script}, args...)...).Output()
		if ee, isExit := err.(*exec.ExitError); !isExit || ee.ExitCode() != 64 || len(out) > 0 {
			t.Errorf("%s: %v and %d bytes of configuration, want exit status 64 and none", name, err, len(out))
		}
	}
	out, err := exec.Command("bash", script, "--detector", "password:a", "--sink", "password:b", "--probe", "web-1=password:c",
		"--detectors", "conn_leak", "--group-prefix", "np").Output()
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{`"netpulse.events.web-1.>"`, `"_INBOX.netpulse-probe-web-1.>"`, `"$JS.API.STREAM.CREATE.NETPULSE_EVENTS-np-conn_leak"`, `"$KV.np-replicas.>"`} {
		if !strings.Contains(string(out), want) {
			t.Errorf("output lacks %s", want)
		}
	}
	if strings.Contains(string(out), "slow_handshake") {
		t.Error("--detectors conn_leak still lists slow_handshake")
	}
}
