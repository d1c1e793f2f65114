package alertout

import (
	"context"
	"io"
	"log/slog"
	"slices"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/netpulse/netpulse/lib/alert"
	"github.com/netpulse/netpulse/lib/config"
	"github.com/netpulse/netpulse/lib/natsutil"
	"github.com/netpulse/netpulse/lib/testutil/natstest"
	"github.com/netpulse/netpulse/lib/wire"
)

func TestHostKey(t *testing.T) {
	for _, h := range []string{"web-1", "web_1", "häßlich", "a=b", "=", "x/y", "UPPER"} {
		k := HostKey(h)
		back, ok := hostOfKey(k)
		if !ok || back != h {
			t.Errorf("HostKey(%q) = %q, back %q", h, k, back)
		}
		if !plainKey.MatchString(k) && !(k[0] == '=' && plainKey.MatchString(k[1:])) {
			t.Errorf("HostKey(%q) = %q: not a KV key token", h, k)
		}
	}
	if HostKey("web-1") != "web-1" {
		t.Error("a plain host name must stay readable")
	}
}

func setup(t *testing.T) (jetstream.JetStream, *Store, context.Context) {
	t.Helper()
	s := natstest.Start(t)
	_, js := natstest.Connect(t, s)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	t.Cleanup(cancel)
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	if _, err := natsutil.EnsureAlertsStream(ctx, js, config.DefaultAlertsStream(), log); err != nil {
		t.Fatal(err)
	}
	kv, err := EnsureBucket(ctx, js, "test-alerts", 1)
	if err != nil {
		t.Fatal(err)
	}
	return js, &Store{KV: kv, Detector: "conn_leak"}, ctx
}

func firing(host string, at time.Time) alert.Alert {
	labels := map[string]string{"pid": "7"}
	return alert.Alert{Fingerprint: alert.Fingerprint("conn_leak", host, labels), Detector: "conn_leak", Status: alert.Firing,
		Severity: "warning", Host: host, StartsAt: at, SentAt: at, Labels: labels}
}

// A retried publish of the same transition is stored once; a later
// transition of the same alert is not mistaken for it.
func TestRetriedPublishIsStoredOnce(t *testing.T) {
	js, store, ctx := setup(t)
	p := NewPublisher(js, store, 8, slog.New(slog.NewTextHandler(io.Discard, nil)))
	now := time.Now().UTC()
	a := firing("web-1", now)
	key, rev, err := store.Put(ctx, Record{Alert: a})
	if err != nil {
		t.Fatal(err)
	}
	st := Stored{Key: key, Revision: rev, Record: Record{Alert: a}}
	// The same stored transition published three times: a retry after a
	// lost ack, and a new owner republishing an unconfirmed record.
	for i := 0; i < 3; i++ {
		p.Enqueue(ctx, st)
	}
	r := a
	r.Status = alert.Resolved
	end := now.Add(time.Minute)
	r.EndsAt, r.SentAt = &end, end
	key, rev, err = store.Put(ctx, Record{Alert: r})
	if err != nil {
		t.Fatal(err)
	}
	p.Enqueue(ctx, Stored{Key: key, Revision: rev, Record: Record{Alert: r}})
	p.Close()
	p.Run(ctx)

	stream, err := js.Stream(ctx, wire.AlertsStream)
	if err != nil {
		t.Fatal(err)
	}
	info, err := stream.Info(ctx, jetstream.WithSubjectFilter(">"))
	if err != nil {
		t.Fatal(err)
	}
	if info.State.Msgs != 2 || info.State.Subjects["netpulse.alerts.conn_leak.warning.web-1"] != 2 {
		t.Errorf("stored %d messages %v, want the firing and the resolution once each", info.State.Msgs, info.State.Subjects)
	}
	if p.Published.Load() != 4 || p.Errors.Load() != 0 {
		t.Errorf("published %d (errors %d), want 4 accepted publishes", p.Published.Load(), p.Errors.Load())
	}
	// The resolution, once out, removed the record.
	recs, err := store.Load(ctx, "web-1")
	if err != nil || len(recs) != 0 {
		t.Errorf("records after resolution: %+v, %v", recs, err)
	}
}

// Records are per host; a published firing one is marked so, and a stale
// settle does not overwrite a newer transition.
func TestStoreRecords(t *testing.T) {
	js, store, ctx := setup(t)
	p := NewPublisher(js, store, 8, slog.New(slog.NewTextHandler(io.Discard, nil)))
	now := time.Now().UTC()
	for _, h := range []string{"web-1", "db.1", "häßlich"} {
		if _, _, err := store.Put(ctx, Record{Alert: firing(h, now)}); err != nil {
			t.Fatal(err)
		}
	}
	hosts, err := store.Hosts(ctx)
	slices.Sort(hosts)
	if err != nil || !slices.Equal(hosts, []string{"db.1", "häßlich", "web-1"}) {
		t.Fatalf("Hosts = %v, %v", hosts, err)
	}
	recs, err := store.Load(ctx, "web-1")
	if err != nil || len(recs) != 1 || recs[0].Published || recs[0].Alert.Host != "web-1" {
		t.Fatalf("Load = %+v, %v", recs, err)
	}
	p.Enqueue(ctx, recs[0])
	p.Close()
	p.Run(ctx)
	recs, _ = store.Load(ctx, "web-1")
	if len(recs) != 1 || !recs[0].Published {
		t.Errorf("after publishing: %+v", recs)
	}
	// A newer transition of the same alert: the old one's settle loses.
	newer := firing("web-1", now.Add(time.Second))
	if _, _, err := store.Put(ctx, Record{Alert: newer}); err != nil {
		t.Fatal(err)
	}
	if err := store.settle(ctx, recs[0]); err != nil {
		t.Fatal(err)
	}
	recs, _ = store.Load(ctx, "web-1")
	if len(recs) != 1 || recs[0].Published || !recs[0].Alert.SentAt.Equal(newer.SentAt) {
		t.Errorf("a stale settle overwrote a newer record: %+v", recs)
	}
}

// A publish that fails (here: no stream takes the subject yet) is retried,
// counted, and stored once when it finally succeeds.
func TestPublishRetriesUntilStored(t *testing.T) {
	s := natstest.Start(t)
	_, js := natstest.Connect(t, s)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	kv, err := EnsureBucket(ctx, js, "test-alerts", 1)
	if err != nil {
		t.Fatal(err)
	}
	store := &Store{KV: kv, Detector: "conn_leak"}
	p := NewPublisher(js, store, 8, slog.New(slog.NewTextHandler(io.Discard, nil)))
	done := make(chan struct{})
	go func() { p.Run(ctx); close(done) }()
	a := firing("web-1", time.Now().UTC())
	key, rev, err := store.Put(ctx, Record{Alert: a})
	if err != nil {
		t.Fatal(err)
	}
	p.Enqueue(ctx, Stored{Key: key, Revision: rev, Record: Record{Alert: a}})
	for p.Errors.Load() < 2 {
		select {
		case <-ctx.Done():
			t.Fatal("no failed attempts counted")
		case <-time.After(10 * time.Millisecond):
		}
	}
	if _, err := natsutil.EnsureAlertsStream(ctx, js, config.DefaultAlertsStream(), slog.New(slog.NewTextHandler(io.Discard, nil))); err != nil {
		t.Fatal(err)
	}
	p.Close()
	<-done
	st, _ := js.Stream(ctx, wire.AlertsStream)
	info, err := st.Info(ctx)
	if err != nil || info.State.Msgs != 1 || p.Published.Load() != 1 {
		t.Errorf("stored %d, published %d (%v)", info.State.Msgs, p.Published.Load(), err)
	}
	recs, _ := store.Load(ctx, "web-1")
	if len(recs) != 1 || !recs[0].Published {
		t.Errorf("record after the publish: %+v", recs)
	}
}
