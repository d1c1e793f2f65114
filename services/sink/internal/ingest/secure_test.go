package ingest

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2"
	"github.com/ClickHouse/clickhouse-go/v2/lib/driver"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/netpulse/netpulse/lib/alert"
	"github.com/netpulse/netpulse/lib/config"
	"github.com/netpulse/netpulse/lib/eventpb"
	"github.com/netpulse/netpulse/lib/natsutil"
	"github.com/netpulse/netpulse/lib/natsutil/securetest"
	"github.com/netpulse/netpulse/lib/testutil/chtest"
	"github.com/netpulse/netpulse/lib/testutil/logbuf"
	"github.com/netpulse/netpulse/lib/wire"
)

// shippedUsers renders deploy/clickhouse/users.d/netpulse.xml.tmpl with the
// passwords' SHA-256, as its header says.
func shippedUsers(t *testing.T, sinkPassword, analystPassword string) string {
	t.Helper()
	_, file, _, _ := runtime.Caller(0)
	tmpl, err := os.ReadFile(filepath.Join(filepath.Dir(file), "../../../../deploy/clickhouse/users.d/netpulse.xml.tmpl"))
	if err != nil {
		t.Fatal(err)
	}
	hash := func(pw string) string { s := sha256.Sum256([]byte(pw)); return hex.EncodeToString(s[:]) }
	return strings.NewReplacer("@SINK_PASSWORD_SHA256@", hash(sinkPassword), "@ANALYST_PASSWORD_SHA256@", hash(analystPassword)).Replace(string(tmpl))
}

// The sink as it runs secured: NATS over TLS as the sink user of the
// shipped accounts (password from a file), ClickHouse 18.16 over its
// secure native port with the CA, as the shipped netpulse_sink user with
// its password from a file. It creates database netpulse and inserts every
// event of the probe and the detector's alert; the analyst reads them and
// may change nothing. No password shows in the sink's log.
func TestSinkSecured(t *testing.T) {
	ca := securetest.NewCA(t)
	cert, key := ca.Server(t, "clickhouse")
	sinkPW, analystPW := securetest.Secret(t), securetest.Secret(t)
	chs, err := chtest.StartWith(chtest.Options{
		TLS:        &chtest.TLS{CertFile: cert, KeyFile: key},
		UsersFiles: map[string]string{"netpulse.xml": shippedUsers(t, sinkPW, analystPW)},
	})
	if err != nil {
		t.Fatal(err)
	}
	defer chs.Close()
	chs.Require(t)
	n := securetest.StartNATS(t, "web-1")
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()

	// The probe's events and the detector's alert, each with its own user.
	pnc, err := natsutil.Connect(n.Config(securetest.Probe("web-1")), "probe", quiet)
	if err != nil {
		t.Fatal(err)
	}
	defer pnc.Close()
	pjs, _ := jetstream.New(pnc)
	if _, err := natsutil.EnsureEventsStream(ctx, pjs, config.DefaultStream(), quiet); err != nil {
		t.Fatal(err)
	}
	for b := range 5 {
		batch := &eventpb.Batch{SchemaVersion: eventpb.SchemaVersion, Host: "web-1", ProbeId: "p1", BatchSeq: uint64(b + 1)}
		for i := range 100 {
			batch.Events = append(batch.Events, testEvent(b, i))
		}
		data, _ := batch.MarshalVT()
		if _, err := pjs.Publish(ctx, wire.EventSubject("web-1", wire.KindState), data, jetstream.WithMsgID(fmt.Sprintf("p1-state-%d", b+1))); err != nil {
			t.Fatal(err)
		}
	}
	dnc, err := natsutil.Connect(n.Config(securetest.Detector), "detector", quiet)
	if err != nil {
		t.Fatal(err)
	}
	defer dnc.Close()
	djs, _ := jetstream.New(dnc)
	if _, err := natsutil.EnsureAlertsStream(ctx, djs, config.DefaultAlertsStream(), quiet); err != nil {
		t.Fatal(err)
	}
	at := time.Date(2026, 11, 23, 10, 0, 0, 0, time.UTC)
	alertJSON, _ := json.Marshal(alert.Alert{Fingerprint: "f1", Detector: "conn_leak", Status: alert.Firing, Severity: "warning", Host: "web-1", StartsAt: at, SentAt: at})
	if _, err := djs.Publish(ctx, wire.AlertSubject("conn_leak", "warning", "web-1"), alertJSON); err != nil {
		t.Fatal(err)
	}

	cfg := DefaultConfig()
	cfg.NATS = n.Config(securetest.Sink)
	cfg.ClickHouse.Addr = chs.SecureAddr()
	cfg.ClickHouse.Username = "netpulse_sink"
	cfg.ClickHouse.PasswordFile = securetest.WriteSecret(t, "clickhouse-sink", sinkPW)
	cfg.ClickHouse.TLS = ClickHouseTLS{Enabled: true, CAFile: ca.CertFile}
	cfg.Batch.FlushInterval = 100 * time.Millisecond
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}
	var logs logbuf.Buffer
	log := slog.New(slog.NewTextHandler(&logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	runCtx, stop := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- New(cfg, log).Run(runCtx) }()

	analyst := func(database string) driver.Conn {
		tc, err := config.TLS{CAFile: ca.CertFile}.Config()
		if err != nil {
			t.Fatal(err)
		}
		conn, err := clickhouse.Open(&clickhouse.Options{Protocol: clickhouse.Native, Addr: []string{chs.SecureAddr()},
			Auth: clickhouse.Auth{Database: database, Username: "netpulse_analyst", Password: analystPW}, TLS: tc, DialTimeout: 2 * time.Second})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { conn.Close() })
		return conn
	}
	an := analyst("netpulse")
	var countErr error
	count := func(table string) uint64 {
		var c uint64
		if countErr = an.QueryRow(ctx, "SELECT count() FROM netpulse."+table).Scan(&c); countErr != nil {
			return 0
		}
		return c
	}
	for count("tcp_events") < 500 || count("alerts") < 1 {
		select {
		case err := <-done:
			t.Fatalf("sink ended: %v\n%s", err, logs.String())
		case <-ctx.Done():
			t.Fatalf("rows not stored: tcp_events %d, alerts %d (%v)\n%s", count("tcp_events"), count("alerts"), countErr, logs.String())
		case <-time.After(50 * time.Millisecond):
		}
	}
	stop()
	if err := <-done; err != nil {
		t.Fatalf("sink: %v", err)
	}
	if got := count("tcp_events"); got != 500 {
		t.Errorf("tcp_events holds %d rows, want 500", got)
	}
	if !strings.Contains(logs.String(), "tls=true") {
		t.Errorf("the sink does not say it uses TLS:\n%s", logs.String())
	}
	for _, pw := range []string{sinkPW, n.Passwords[securetest.Sink]} {
		if strings.Contains(logs.String(), pw) {
			t.Errorf("a password is in the sink's log")
		}
	}
	if v := n.Violations(); len(v) > 0 {
		t.Errorf("the NATS server refused the sink:\n%s", strings.Join(v, "\n"))
	}

	// The analyst reads and changes nothing.
	for _, q := range []string{
		"INSERT INTO netpulse.alerts (fingerprint) VALUES ('x')",
		"CREATE TABLE netpulse.mine (x UInt8) ENGINE = Memory",
		"DROP TABLE netpulse.tcp_events",
		"ALTER TABLE netpulse.tcp_events DELETE WHERE 1",
	} {
		if err := an.Exec(ctx, q); err == nil {
			t.Errorf("the analyst may: %s", q)
		}
	}
	if err := analyst("default").Ping(ctx); err == nil {
		t.Error("the analyst may use database default")
	}
	// The sink's user is kept to database netpulse.
	tc, _ := config.TLS{CAFile: ca.CertFile}.Config()
	sc, err := clickhouse.Open(&clickhouse.Options{Protocol: clickhouse.Native, Addr: []string{chs.SecureAddr()},
		Auth: clickhouse.Auth{Database: "default", Username: "netpulse_sink", Password: sinkPW}, TLS: tc})
	if err != nil {
		t.Fatal(err)
	}
	defer sc.Close()
	if err := sc.Ping(ctx); err == nil {
		t.Error("the sink's user may use database default")
	}
	// Over the plain port, TLS enabled: the handshake fails, not a
	// plaintext login.
	plain := cfg.ClickHouse
	plain.Addr = chs.Addr()
	plain.DialTimeout = time.Second
	opts, err := plain.Options()
	if err != nil {
		t.Fatal(err)
	}
	pc, err := clickhouse.Open(opts)
	if err == nil {
		defer pc.Close()
		if err := pc.Ping(ctx); err == nil {
			t.Error("TLS to the plain port succeeded")
		}
	}
}
