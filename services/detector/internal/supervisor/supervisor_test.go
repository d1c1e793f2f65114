package supervisor

import (
	"context"
	"encoding/json"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/netpulse/netpulse/lib/alert"
	"github.com/netpulse/netpulse/lib/eventpb"
	"github.com/netpulse/netpulse/lib/natsutil"
	"github.com/netpulse/netpulse/lib/testutil/natstest"
	"github.com/netpulse/netpulse/lib/wire"
	"github.com/netpulse/netpulse/services/detector/detect"
	"github.com/netpulse/netpulse/services/detector/internal/clock"
	"github.com/netpulse/netpulse/services/detector/internal/group"
)

// alertSub subscribes to netpulse.alerts.> like a user would.
type alertSub struct {
	ch chan *nats.Msg
}

func subscribeAlerts(t *testing.T, nc *nats.Conn) *alertSub {
	t.Helper()
	s := &alertSub{ch: make(chan *nats.Msg, 1024)}
	sub, err := nc.ChanSubscribe("netpulse.alerts.>", s.ch)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = sub.Unsubscribe() })
	if err := nc.Flush(); err != nil {
		t.Fatal(err)
	}
	return s
}

func (s *alertSub) next(t *testing.T, ctx context.Context) (string, alert.Alert) {
	t.Helper()
	select {
	case m := <-s.ch:
		var a alert.Alert
		if err := json.Unmarshal(m.Data, &a); err != nil {
			t.Fatalf("alert on %s is not JSON: %v", m.Subject, err)
		}
		return m.Subject, a
	case <-ctx.Done():
		t.Fatal("no alert arrived")
	}
	return "", alert.Alert{}
}

func (s *alertSub) none(t *testing.T, within time.Duration) {
	t.Helper()
	select {
	case m := <-s.ch:
		t.Fatalf("unexpected alert on %s: %s", m.Subject, m.Data)
	case <-time.After(within):
	}
}

// startDetector runs d until the test ends and waits until it owns all
// partitions of every detector.
func startDetector(t *testing.T, ctx context.Context, d *Supervisor, partitions int) {
	t.Helper()
	runCtx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- d.Run(runCtx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Run: %v", err)
		}
	})
	for name, c := range d.counters {
		waitFor(t, ctx, name+" to own its partitions", func() bool { return c.Partitions.Load() == int64(partitions) })
	}
}

// Events in, alert JSON out on the contract's subject; bad input goes to
// the dead-letter subject without blocking the partition; a panicking
// plugin is recovered and its instance rebuilt.
func TestAlertsEndToEnd(t *testing.T) {
	ns := natstest.Start(t)
	nc, js := natstest.Connect(t, ns)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	reg := markerRegistry(t, "r1", nil)
	cfg := testConfig(t, reg, ns, "r1")
	d, err := New(cfg, reg, quietLog())
	if err != nil {
		t.Fatal(err)
	}
	alerts := subscribeAlerts(t, nc)
	startDetector(t, ctx, d, cfg.Group.Partitions)
	c := d.Counters("marker")

	subj := wire.EventSubject("web-1", wire.KindState)
	publish(t, ctx, js, subj, batch("web-1", 1, event(1, 0), event(666, 7)))
	got, a := alerts.next(t, ctx)
	if got != "netpulse.alerts.marker.warning.web-1" {
		t.Errorf("subject %s", got)
	}
	if a.Status != alert.Firing || a.Detector != "marker" || a.Host != "web-1" || a.Severity != "warning" ||
		a.Labels["marker"] != "7" || a.Labels["host"] != "web-1" || a.Labels["alertname"] != "marker" || a.Labels["severity"] != "warning" || len(a.Labels) != 4 || a.Annotations["markers"] != "1" ||
		a.Fingerprint != alert.Fingerprint("marker", "web-1", map[string]string{"marker": "7"}) || a.EndsAt != nil ||
		a.Summary() != "marker 7 on web-1" || a.Value != 7 || a.StartsAt.IsZero() {
		t.Errorf("firing alert %+v", a)
	}
	// Present at every evaluation: no second message.
	alerts.none(t, 5*cfg.EvaluateInterval)

	// Garbage and a batch of an unknown schema: dead-lettered, acknowledged,
	// and the partition goes on (the clear below resolves the alert).
	dl, err := js.CreateOrUpdateConsumer(ctx, wire.DeadLetterStream, jetstream.ConsumerConfig{AckPolicy: jetstream.AckNonePolicy})
	if err != nil {
		t.Fatal(err)
	}
	garbageSeq := publish(t, ctx, js, subj, []byte("\xff\xffnot protobuf"))
	future := batch("web-1", 2)
	future[1] = 9 // schema_version 9
	publish(t, ctx, js, subj, future)
	publish(t, ctx, js, subj, batch("web-1", 3, event(667, 7)))
	got, r := alerts.next(t, ctx)
	if got != "netpulse.alerts.marker.warning.web-1" || r.Status != alert.Resolved || r.Fingerprint != a.Fingerprint ||
		r.EndsAt == nil || r.EndsAt.Before(a.StartsAt) || !r.StartsAt.Equal(a.StartsAt) {
		t.Errorf("resolved alert %+v", r)
	}
	msgs, err := dl.Fetch(2, jetstream.FetchMaxWait(5*time.Second))
	if err != nil {
		t.Fatal(err)
	}
	var reasons []string
	for m := range msgs.Messages() {
		if m.Subject() != "netpulse.deadletter.detector.marker" || m.Headers().Get("Netpulse-Subject") != subj {
			t.Errorf("dead letter on %s, headers %v", m.Subject(), m.Headers())
		}
		reasons = append(reasons, m.Headers().Get("Netpulse-Reason"))
	}
	if len(reasons) != 2 || reasons[0] == "" || reasons[1] != "schema_version 9, this detector reads 1" {
		t.Errorf("dead-letter reasons %q", reasons)
	}
	if c.DeadLettered.Load() != 2 {
		t.Errorf("dead-lettered %d, want 2", c.DeadLettered.Load())
	}
	_ = garbageSeq

	// A batch that makes Observe panic: recovered, dead-lettered, the
	// instance rebuilt from the replayed window (marker 8 survives it and
	// is not fired twice), and the host keeps working.
	publish(t, ctx, js, subj, batch("web-1", 4, event(666, 8)))
	if _, a := alerts.next(t, ctx); a.Labels["marker"] != "8" || a.Status != alert.Firing {
		t.Fatalf("alert %+v", a)
	}
	publish(t, ctx, js, subj, batch("web-1", 5, event(999, 0)))
	waitFor(t, ctx, "the panic to be counted", func() bool { return c.Panics.Load() == 1 && c.DeadLettered.Load() == 3 })
	publish(t, ctx, js, subj, batch("web-1", 6, event(666, 9)))
	if _, a := alerts.next(t, ctx); a.Labels["marker"] != "9" || a.Status != alert.Firing {
		t.Fatalf("after the panic: alert %+v", a)
	}
	alerts.none(t, 5*cfg.EvaluateInterval) // marker 8 neither resolved nor fired again

	if c.Messages.Load() != 5 || c.Fired.Load() != 3 || c.Resolved.Load() != 1 || c.Hosts.Load() != 1 {
		t.Errorf("counters: messages %d fired %d resolved %d hosts %d", c.Messages.Load(), c.Fired.Load(), c.Resolved.Load(), c.Hosts.Load())
	}
	// Every transition is in NETPULSE_ALERTS once.
	st, err := js.Stream(ctx, wire.AlertsStream)
	if err != nil {
		t.Fatal(err)
	}
	waitFor(t, ctx, "4 alerts stored", func() bool {
		info, err := st.Info(ctx)
		return err == nil && info.State.Msgs == 4
	})
}

// Evaluation runs on the injected clock: with for: 10s nothing fires until
// the fake clock has moved 10 s, whatever the wall clock does.
func TestEvaluationFollowsTheClock(t *testing.T) {
	ns := natstest.Start(t)
	nc, js := natstest.Connect(t, ns)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	reg := markerRegistry(t, "r1", nil)
	cfg := testConfig(t, reg, ns, "r1")
	section(cfg, "marker").For = 10 * time.Second
	fake := clock.NewFake(time.Now())
	d, err := New(cfg, reg, quietLog(), WithClock(fake))
	if err != nil {
		t.Fatal(err)
	}
	alerts := subscribeAlerts(t, nc)
	startDetector(t, ctx, d, cfg.Group.Partitions)
	waitFor(t, ctx, "the workers' tickers", func() bool { return fake.Tickers() == cfg.Group.Partitions })

	publish(t, ctx, js, wire.EventSubject("h1", wire.KindState), batch("h1", 1, event(666, 1)))
	c := d.Counters("marker")
	waitFor(t, ctx, "the batch to be observed", func() bool { return c.Messages.Load() == 1 })
	step := func(d time.Duration) {
		n := c.Evaluations.Load()
		fake.Advance(d)
		waitFor(t, ctx, "an evaluation", func() bool { return c.Evaluations.Load() > n })
	}
	step(cfg.EvaluateInterval) // pending from here
	start := fake.Now()
	step(5 * time.Second)
	alerts.none(t, 100*time.Millisecond)
	step(5 * time.Second)
	_, a := alerts.next(t, ctx)
	if a.Status != alert.Firing || !a.StartsAt.Equal(start.Add(10*time.Second)) {
		t.Errorf("alert %+v, want firing at %v (fake time)", a, start.Add(10*time.Second))
	}
}

// The server deletes a group consumer that stops pulling (a stalled
// replica) and pcgroups does not notice: the runner makes it again.
func TestLostConsumerIsRecreated(t *testing.T) {
	ns := natstest.Start(t)
	nc, js := natstest.Connect(t, ns)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	reg := markerRegistry(t, "r1", nil)
	cfg := testConfig(t, reg, ns, "r1")
	cfg.Group.AckWait = time.Second
	d, err := New(cfg, reg, quietLog())
	if err != nil {
		t.Fatal(err)
	}
	alerts := subscribeAlerts(t, nc)
	startDetector(t, ctx, d, cfg.Group.Partitions)
	stream := group.StreamName("netpulse-detector-marker")
	waitFor(t, ctx, "the group consumer", func() bool { _, err := js.Consumer(ctx, stream, "r1"); return err == nil })
	if err := js.DeleteConsumer(ctx, stream, "r1"); err != nil {
		t.Fatal(err)
	}
	publish(t, ctx, js, wire.EventSubject("h1", wire.KindState), batch("h1", 1, event(666, 1)))
	if _, a := alerts.next(t, ctx); a.Status != alert.Firing || a.Host != "h1" {
		t.Errorf("alert %+v", a)
	}
}

// A host first seen is rebuilt before its first live batch: its latest
// snapshot (older than the window) first, then the window's events, all
// with Replay set; a batch older than the window that is still buffered is
// skipped as stale.
func TestTakeoverReplaysSnapshotThenWindow(t *testing.T) {
	ns := natstest.Start(t)
	_, js := natstest.Connect(t, ns)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	type seen struct {
		kind   string
		seq    uint64
		replay bool
	}
	var mu sync.Mutex
	var got []seen
	reg := &detect.Registry{}
	if err := reg.Register(detect.Plugin{
		Name: "snap", Kinds: []string{wire.KindState, wire.KindSnapshot}, Config: func() any { return &struct{}{} },
		New: func(any, string) (detect.Instance, error) {
			return observeFunc(func(in detect.Input) {
				mu.Lock()
				got = append(got, seen{in.Kind, in.Batch.BatchSeq, in.Replay})
				mu.Unlock()
			}), nil
		},
	}); err != nil {
		t.Fatal(err)
	}
	cfg := testConfig(t, reg, ns, "r1")
	cfg.Warmup = time.Second // (below the validated minimum: a test of the window)

	if _, err := natsutil.EnsureEventsStream(ctx, js, cfg.Stream, quietLog()); err != nil {
		t.Fatal(err)
	}
	snap := func(seq uint64) []byte {
		b := &eventpb.Batch{SchemaVersion: eventpb.SchemaVersion, Host: "h1", BatchSeq: seq, Snapshot: &eventpb.Snapshot{Seq: seq}}
		data, _ := b.MarshalVT()
		return data
	}
	publish(t, ctx, js, wire.EventSubject("h1", wire.KindState), batch("h1", 1)) // will be stale
	publish(t, ctx, js, wire.EventSubject("h1", wire.KindSnapshot), snap(2))     // latest snapshot, older than the window
	old := time.Now()
	waitFor(t, ctx, "the first batches to age past the window", func() bool { return time.Since(old) > cfg.Warmup+200*time.Millisecond })
	publish(t, ctx, js, wire.EventSubject("h1", wire.KindState), batch("h1", 3)) // in the window
	publish(t, ctx, js, wire.EventSubject("h1", wire.KindState), batch("h1", 4))

	d, err := New(cfg, reg, quietLog())
	if err != nil {
		t.Fatal(err)
	}
	startDetector(t, ctx, d, cfg.Group.Partitions)
	c := d.Counters("snap")
	waitFor(t, ctx, "batch 4", func() bool { mu.Lock(); defer mu.Unlock(); return len(got) > 0 && got[len(got)-1].seq == 4 })
	mu.Lock()
	defer mu.Unlock()
	want := []seen{{wire.KindSnapshot, 2, true}, {wire.KindState, 3, false}, {wire.KindState, 4, false}}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("observed %v, want %v", got, want)
	}
	if c.Stale.Load() != 2 || c.Takeovers.Load() != 1 {
		t.Errorf("stale %d (want the old state batch and the snapshot), takeovers %d", c.Stale.Load(), c.Takeovers.Load())
	}
}

type observeFunc func(detect.Input)

func (f observeFunc) Observe(in detect.Input)               { f(in) }
func (f observeFunc) Evaluate(time.Time) []detect.Condition { return nil }
