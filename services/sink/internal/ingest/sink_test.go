package ingest

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2/lib/driver"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/netpulse/netpulse/lib/alert"
	"github.com/netpulse/netpulse/lib/config"
	"github.com/netpulse/netpulse/lib/eventpb"
	"github.com/netpulse/netpulse/lib/natsutil"
	"github.com/netpulse/netpulse/lib/testutil/chtest"
	"github.com/netpulse/netpulse/lib/testutil/natstest"
	"github.com/netpulse/netpulse/lib/wire"
	"github.com/netpulse/netpulse/services/sink/internal/chschema"
	"github.com/netpulse/netpulse/services/sink/internal/chwriter"
)

var srv *chtest.Server

func TestMain(m *testing.M) { chtest.Main(m, &srv) }

var quiet = slog.New(slog.NewTextHandler(io.Discard, nil))

type env struct {
	cfg  Config
	js   jetstream.JetStream
	ch   driver.Conn
	f    chschema.Features
	db   string
	host string
}

func newEnv(t *testing.T) *env { return newEnvOn(t, srv) }

func newEnvOn(t *testing.T, srv *chtest.Server) *env {
	t.Helper()
	ns := natstest.Start(t)
	db := srv.NewDatabase(t)
	_, js := natstest.Connect(t, ns)
	cfg := DefaultConfig()
	cfg.NATS = cfg.NATS.WithURL(ns.ClientURL())
	cfg.ClickHouse.Addr = srv.Addr()
	cfg.ClickHouse.Database = db
	cfg.Batch.FlushInterval = 100 * time.Millisecond
	cfg.Batch.MaxRows = 1000
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, err := natsutil.EnsureEventsStream(ctx, js, cfg.Stream, quiet); err != nil {
		t.Fatal(err)
	}
	if _, err := natsutil.EnsureAlertsStream(ctx, js, cfg.AlertsStream, quiet); err != nil {
		t.Fatal(err)
	}
	ch := srv.Conn(t, db)
	f, err := chschema.Probe(ctx, ch)
	if err != nil {
		t.Fatal(err)
	}
	return &env{cfg: cfg, js: js, ch: ch, f: f, db: db, host: "host-" + db}
}

// event i of batch b; batches alternate between two days so every message
// touches two partitions.
func testEvent(b, i int) *eventpb.Event {
	day := time.Date(2026, 11, 23+b%2, 23, 59, 0, 0, time.UTC)
	return &eventpb.Event{
		Type: eventpb.EventType_EVENT_TYPE_STATE_CHANGE, TimeUnixNano: uint64(day.Add(time.Duration(i) * time.Millisecond).UnixNano()),
		Seq: uint64(b*1000 + i + 1), Pid: 100, Tid: 101, Comm: "curl", Family: eventpb.Family_FAMILY_IPV4,
		Saddr: []byte{127, 0, 0, 1}, Daddr: []byte{127, 0, 0, 2}, Sport: uint32(30000 + i), Dport: 443,
		OldState: eventpb.TcpState_TCP_STATE_SYN_SENT, NewState: eventpb.TcpState_TCP_STATE_ESTABLISHED,
		StateDurationUs: 77, SockId: uint64(b<<32 | i),
	}
}

// publish sends batches [from, to) of n events each (half on each of two days).
func (e *env) publish(t *testing.T, from, to, n int) {
	t.Helper()
	ctx := context.Background()
	for b := from; b < to; b++ {
		batch := &eventpb.Batch{SchemaVersion: eventpb.SchemaVersion, Host: e.host, ProbeId: "p1", BatchSeq: uint64(b + 1)}
		for i := 0; i < n; i++ {
			ev := testEvent(b, i)
			if i%2 == 1 {
				ev.TimeUnixNano += uint64(2 * time.Minute) // the next day
			}
			batch.Events = append(batch.Events, ev)
		}
		data, err := batch.MarshalVT()
		if err != nil {
			t.Fatal(err)
		}
		if _, err := e.js.Publish(ctx, wire.EventSubject(e.host, wire.KindState), data, jetstream.WithMsgID(fmt.Sprintf("p1-%d", b+1))); err != nil {
			t.Fatal(err)
		}
	}
}

func (e *env) count(t *testing.T) uint64 {
	t.Helper()
	var n uint64
	if err := e.ch.QueryRow(context.Background(), "SELECT count() FROM tcp_events").Scan(&n); err != nil {
		t.Fatal(err)
	}
	return n
}

// run starts a sink and returns a function that stops it and returns its counters.
func (e *env) run(t *testing.T) func() Counters {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	s := New(e.cfg, quiet)
	done := make(chan error, 1)
	go func() { done <- s.Run(ctx) }()
	return func() Counters {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("sink.Run: %v", err)
		}
		return s.Counters()
	}
}

// Counters returns the running totals of both consumers (the service logs
// each consumer's own; only the tests add them up).
func (s *Sink) Counters() Counters {
	c := s.events.counters()
	c.add(s.alerts.counters())
	return c
}

func (c *Counters) add(o Counters) {
	c.Messages += o.Messages
	c.Redelivered += o.Redelivered
	c.BadMessages += o.BadMessages
	c.RowsInserted += o.RowsInserted
	c.RowsDuplicate += o.RowsDuplicate
	c.Inserts += o.Inserts
	c.InsertErrors += o.InsertErrors
	c.Lookups += o.Lookups
}

// waitAcked waits until the sink's consumers have acknowledged (or
// terminated) every message in the events and the alerts stream.
func (e *env) waitAcked(t *testing.T) {
	t.Helper()
	e.waitAckedOn(t, wire.EventsStream, e.cfg.Consumer.Durable)
	e.waitAckedOn(t, wire.AlertsStream, e.cfg.Consumer.AlertsDurable)
}

func (e *env) waitAckedOn(t *testing.T, stream, durable string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	st, err := e.js.Stream(ctx, stream)
	if err != nil {
		t.Fatal(err)
	}
	si, err := st.Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	last := si.State.LastSeq
	for last > 0 {
		if c, err := e.js.Consumer(ctx, stream, durable); err == nil {
			if info, err := c.Info(ctx); err == nil && info.AckFloor.Stream >= last {
				return
			}
		}
		select {
		case <-ctx.Done():
			t.Fatalf("consumer %s has not acknowledged up to stream sequence %d of %s: %v", durable, last, stream, ctx.Err())
		case <-time.After(20 * time.Millisecond):
		}
	}
}

func TestSinkStoresEveryEventOnce(t *testing.T) {
	e := newEnv(t)
	e.publish(t, 0, 40, 250)
	stop := e.run(t)
	e.waitAcked(t)
	c := stop()
	if got := e.count(t); got != 40*250 {
		t.Fatalf("tcp_events holds %d rows, want %d", got, 40*250)
	}
	if c.RowsInserted != 40*250 || c.Messages != 40 || c.BadMessages != 0 {
		t.Errorf("counters %+v, want 10000 rows inserted from 40 messages", c)
	}
	// Spot-check one row's columns against what was published.
	var (
		host, typ, comm, fam, saddr, daddr, oldS, newS string
		sport, dport                                   uint16
		dur, streamSeq                                 uint64
	)
	row := e.ch.QueryRow(context.Background(), `SELECT host, type, comm, family, saddr, daddr, sport, dport, old_state, new_state, state_duration_us, stream_seq
		FROM tcp_events WHERE seq = 3001`)
	if err := row.Scan(&host, &typ, &comm, &fam, &saddr, &daddr, &sport, &dport, &oldS, &newS, &dur, &streamSeq); err != nil {
		t.Fatal(err)
	}
	got := fmt.Sprint(host, typ, comm, fam, saddr, daddr, sport, dport, oldS, newS, dur, streamSeq)
	want := fmt.Sprint(e.host, "state_change", "curl", "ipv4", "127.0.0.1", "127.0.0.2", 30000, 443, "SYN_SENT", "ESTABLISHED", 77, 4)
	if got != want {
		t.Errorf("row of seq 3001:\n got %s\nwant %s", got, want)
	}
	// A second run of the same durable consumer adds nothing.
	e.publish(t, 40, 41, 10)
	stop = e.run(t)
	e.waitAcked(t)
	stop()
	if got := e.count(t); got != 40*250+10 {
		t.Fatalf("after a restart tcp_events holds %d rows, want %d", got, 40*250+10)
	}
}

// A sink that crashed after its INSERT and before its acks gets the same
// messages again: they must not be stored twice.
func TestSinkRedeliveryAfterCrashIsSkipped(t *testing.T) {
	e := newEnv(t)
	e.publish(t, 0, 10, 100)
	ctx := context.Background()
	f, err := chschema.Probe(ctx, e.ch)
	if err != nil {
		t.Fatal(err)
	}
	if err := chschema.Migrate(ctx, e.ch, f, chschema.Options{Database: e.db}); err != nil {
		t.Fatal(err)
	}
	// The "crashed" sink: receives messages 1..6 through the durable
	// consumer, stores them, and dies before acking.
	e.cfg.Consumer.AckWait = time.Second // so the server redelivers soon
	cons, err := e.js.CreateOrUpdateConsumer(ctx, wire.EventsStream, jetstream.ConsumerConfig{
		Durable: e.cfg.Consumer.Durable, AckPolicy: jetstream.AckExplicitPolicy, AckWait: e.cfg.Consumer.AckWait,
		FilterSubjects: []string{wire.KindSubjects(wire.KindState)},
	})
	if err != nil {
		t.Fatal(err)
	}
	fetched, err := cons.FetchNoWait(6)
	if err != nil {
		t.Fatal(err)
	}
	w := chwriter.New(e.ch, e.db, quiet)
	for m := range fetched.Messages() {
		meta, _ := m.Metadata()
		var b eventpb.Batch
		if err := b.UnmarshalVT(m.Data()); err != nil {
			t.Fatal(err)
		}
		if err := w.Add(ctx, wire.KindState, meta.Sequence.Stream, meta.NumDelivered > 1, &b); err != nil {
			t.Fatal(err)
		}
	}
	if err := w.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	if got := e.count(t); got != 600 {
		t.Fatalf("crashed sink stored %d rows, want 600", got)
	}
	stop := e.run(t)
	e.waitAcked(t)
	c := stop()
	if got := e.count(t); got != 1000 {
		t.Fatalf("tcp_events holds %d rows after the restart, want 1000 (no duplicates, none missing)", got)
	}
	if c.RowsDuplicate != 600 || c.RowsInserted != 400 {
		t.Errorf("counters %+v, want 600 duplicate rows skipped and 400 inserted", c)
	}
	var dups uint64
	if err := e.ch.QueryRow(ctx, "SELECT count() FROM (SELECT seq, stream_seq FROM tcp_events GROUP BY seq, stream_seq HAVING count() > 1)").Scan(&dups); err != nil {
		t.Fatal(err)
	}
	if dups != 0 {
		t.Errorf("%d events are stored more than once", dups)
	}
}

// A message that does not decode is terminated and counted; the ones around
// it are stored.
func TestSinkTerminatesBadMessages(t *testing.T) {
	e := newEnv(t)
	e.publish(t, 0, 1, 10)
	ctx := context.Background()
	subj := wire.EventSubject(e.host, wire.KindState)
	if _, err := e.js.Publish(ctx, subj, []byte("\xff\xff not protobuf")); err != nil {
		t.Fatal(err)
	}
	future, _ := (&eventpb.Batch{SchemaVersion: 99, Host: e.host}).MarshalVT()
	if _, err := e.js.Publish(ctx, subj, future); err != nil {
		t.Fatal(err)
	}
	e.publish(t, 1, 2, 10)
	stop := e.run(t)
	e.waitAcked(t)
	c := stop()
	if got := e.count(t); got != 20 {
		t.Errorf("tcp_events holds %d rows, want 20", got)
	}
	if c.BadMessages != 2 {
		t.Errorf("bad_messages = %d, want 2", c.BadMessages)
	}
}

func TestConfigValidation(t *testing.T) {
	tests := []struct {
		name   string
		mutate func(*Config)
		want   string
	}{
		{"database", func(c *Config) { c.ClickHouse.Database = "a-b; DROP" }, "clickhouse.database"},
		{"max rows", func(c *Config) { c.Batch.MaxRows = 2_000_000 }, "batch.max_rows"},
		{"ack wait", func(c *Config) { c.Consumer.AckWait = time.Second }, "consumer.ack_wait"},
		{"ttl", func(c *Config) { c.ClickHouse.TTLDays = -1 }, "clickhouse.ttl_days"},
		{"nats", func(c *Config) { c.NATS = config.NATS{URL: "", ConnectTimeout: time.Second} }, "nats.url"},
		{"alerts stream", func(c *Config) { c.AlertsStream.MaxAge = 0 }, "alerts_stream.max_age"},
		{"alerts stream storage", func(c *Config) { c.AlertsStream.Storage = "tape" }, "alerts_stream.storage"},
		{"alerts durable", func(c *Config) { c.Consumer.AlertsDurable = "a.b" }, "consumer.alerts_durable"},
		{"addr", func(c *Config) { c.ClickHouse.Addr, c.ClickHouse.Cluster = "ch1:9000,ch2", "fleet" }, "not host:port"},
		{"addrs without cluster", func(c *Config) { c.ClickHouse.Addr = "ch1:9000,ch2:9000" }, "clickhouse.cluster"},
		{"cluster", func(c *Config) { c.ClickHouse.Cluster = "a b" }, "clickhouse.cluster"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := DefaultConfig()
			tt.mutate(&c)
			err := c.Validate()
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("Validate() = %v, want an error naming %s", err, tt.want)
			}
		})
	}
}

// ClickHouse going away loses nothing: the sink keeps its rows, retries, and
// acks only once they are stored.
func TestSinkRidesOutClickHouseOutage(t *testing.T) {
	srv.Require(t)
	own, err := chtest.Start()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { own.Close() }) // after the database cleanup: registered first
	e := newEnvOn(t, own)
	e.publish(t, 0, 10, 100)
	stop := e.run(t)
	e.waitAcked(t)

	if err := own.Stop(); err != nil {
		t.Fatal(err)
	}
	e.publish(t, 10, 20, 100)
	// And a message for each other table.
	ns := uint64(at.UnixNano())
	e.publishBatch(t, wire.KindConn, &eventpb.Batch{BatchSeq: 1, Connections: []*eventpb.Connection{{TimeUnixNano: ns}}})
	e.publishBatch(t, wire.KindSnapshot, &eventpb.Batch{BatchSeq: 1, Snapshot: &eventpb.Snapshot{TimeUnixNano: ns}})
	e.publishAlert(t, alert.Alert{Fingerprint: "f", Detector: "conn_leak", Status: alert.Firing, Severity: "info", Host: e.host, StartsAt: at, SentAt: at})
	// The sink takes the new messages but cannot store them: they stay unacked.
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	for {
		c, err := e.js.Consumer(ctx, wire.EventsStream, e.cfg.Consumer.Durable)
		if err != nil {
			t.Fatal(err)
		}
		info, err := c.Info(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if info.NumAckPending > 0 && info.AckFloor.Stream == 10 {
			break
		}
		if info.AckFloor.Stream > 10 {
			t.Fatalf("messages acked while ClickHouse was down (ack floor %d)", info.AckFloor.Stream)
		}
		select {
		case <-ctx.Done():
			t.Fatal("the sink never took the messages published during the outage")
		case <-time.After(20 * time.Millisecond):
		}
	}
	if err := own.Restart(); err != nil {
		t.Fatal(err)
	}
	e.waitAcked(t)
	c := stop()
	for table, want := range map[string]uint64{"tcp_events": 2000, "tcp_connections": 1, "socket_snapshots": 1, "alerts": 1} {
		if got := e.countOf(t, table); got != want {
			t.Errorf("%s holds %d rows after the outage, want %d", table, got, want)
		}
	}
	if c.InsertErrors == 0 || c.RowsInserted != 2003 {
		t.Errorf("counters %+v: want the failed INSERTs counted and 2003 rows inserted", c)
	}
}
