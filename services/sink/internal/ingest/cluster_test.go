package ingest

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2/lib/driver"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/netpulse/netpulse/lib/eventpb"
	"github.com/netpulse/netpulse/lib/natsutil"
	"github.com/netpulse/netpulse/lib/testutil/chtest"
	"github.com/netpulse/netpulse/lib/testutil/natstest"
	"github.com/netpulse/netpulse/lib/wire"
	"github.com/netpulse/netpulse/services/sink/internal/chcluster"
	"github.com/netpulse/netpulse/services/sink/internal/chschema"
)

// A ClickHouse cluster of two shards, the second with two replicas, on
// 18.16 with ZooKeeper. The sink makes the schema ON CLUSTER (twice: it is
// idempotent), writes each host's rows into its shard, and rides out a
// replica killed -9 mid-load and started again: counts through the
// Distributed tables are exact, no row is stored twice, each host's rows
// sit on one shard (the one cityHash64(host) picks), and the replicas of a
// shard agree.
func TestSinkOnCluster(t *testing.T) {
	cl := chtest.StartCluster(t, 1, 2)
	ns := natstest.Start(t)
	_, js := natstest.Connect(t, ns)
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	cfg := DefaultConfig()
	cfg.NATS = cfg.NATS.WithURL(ns.ClientURL())
	cfg.ClickHouse.Addr = cl.Node(1, 1).Addr + "," + cl.Node(2, 2).Addr
	cfg.ClickHouse.Cluster = cl.Name
	cfg.ClickHouse.Database = "netpulse_cluster"
	cfg.Batch.FlushInterval = 100 * time.Millisecond
	cfg.Batch.MaxRows = 2000
	if _, err := natsutil.EnsureEventsStream(ctx, js, cfg.Stream, quiet); err != nil {
		t.Fatal(err)
	}
	if _, err := natsutil.EnsureAlertsStream(ctx, js, cfg.AlertsStream, quiet); err != nil {
		t.Fatal(err)
	}
	seed := cl.Node(1, 1).Conn(t)
	query := func(q string) (uint64, error) {
		var n uint64
		err := seed.QueryRow(ctx, q).Scan(&n)
		return n, err
	}
	count := func(q string) uint64 {
		t.Helper()
		n, err := query(q)
		if err != nil {
			t.Fatalf("%s: %v", q, err)
		}
		return n
	}
	const (
		hosts     = 24
		batches   = 30 // per host
		perBatch  = 200
		total     = hosts * batches * perBatch
		allEvents = "SELECT count() FROM netpulse_cluster.tcp_events"
	)
	publish := func(from, to int) {
		t.Helper()
		for b := from; b < to; b++ {
			for h := range hosts {
				host := fmt.Sprintf("fleet-%02d", h)
				batch := &eventpb.Batch{SchemaVersion: eventpb.SchemaVersion, Host: host, ProbeId: "p1", BatchSeq: uint64(b + 1)}
				for i := range perBatch {
					batch.Events = append(batch.Events, testEvent(b, i))
				}
				data, err := batch.MarshalVT()
				if err != nil {
					t.Fatal(err)
				}
				if _, err := js.Publish(ctx, wire.EventSubject(host, wire.KindState), data, jetstream.WithMsgID(fmt.Sprintf("%s-%d", host, b))); err != nil {
					t.Fatal(err)
				}
			}
		}
	}

	// The schema, made by a sink that starts and stops; then the load.
	s := New(cfg, quiet)
	runCtx, stopSink := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- s.Run(runCtx) }()
	publish(0, 10)
	waitCount(t, ctx, query, allEvents, 10*hosts*perBatch)
	stopSink()
	if err := <-done; err != nil {
		t.Fatal(err)
	}

	// Again (the migration is idempotent on the cluster), and kill -9 a
	// replica of shard 2 while the sink writes.
	s = New(cfg, quiet)
	runCtx, stopSink = context.WithCancel(ctx)
	go func() { done <- s.Run(runCtx) }()
	publish(10, 20)
	waitCount(t, ctx, query, allEvents, 12*hosts*perBatch)
	victim := cl.Node(2, 1)
	victim.Kill()
	publish(20, batches)
	if err := victim.Start(); err != nil {
		t.Fatal(err)
	}
	waitCount(t, ctx, query, allEvents, total)
	natsWaitAcked(t, ctx, js, wire.EventsStream, cfg.Consumer.Durable)
	stopSink()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	c := s.Counters()
	t.Logf("second run: %+v", c)

	if got, distinct := count(allEvents), count("SELECT uniqExact(host, seq) FROM netpulse_cluster.tcp_events"); got != total || distinct != total {
		t.Errorf("tcp_events holds %d rows (%d distinct) through the Distributed table, want %d", got, distinct, total)
	}
	// Where the rows are: each host on its shard only; replicas agree.
	topo, err := chcluster.Discover(ctx, seed, cl.Name)
	if err != nil {
		t.Fatal(err)
	}
	want := map[int]uint64{}
	for h := range hosts {
		want[topo.ShardOf(fmt.Sprintf("fleet-%02d", h))+1] += batches * perBatch
	}
	for _, nd := range cl.Nodes {
		conn := nd.Conn(t)
		waitLocal(t, ctx, conn, want[nd.Shard])
		rows, err := conn.Query(ctx, "SELECT host, count() FROM netpulse_cluster.tcp_events_local GROUP BY host")
		if err != nil {
			t.Fatal(err)
		}
		for rows.Next() {
			var host string
			var n uint64
			if err := rows.Scan(&host, &n); err != nil {
				t.Fatal(err)
			}
			if sh := topo.ShardOf(host) + 1; sh != nd.Shard || n != batches*perBatch {
				t.Errorf("%s (shard %d) holds %d rows of %s, whose shard is %d (want %d rows there)", nd.Name, nd.Shard, n, host, sh, batches*perBatch)
			}
		}
		rows.Close()
	}
	if want[1] == 0 || want[2] == 0 {
		t.Errorf("hosts per shard %v: the test's hosts should land on both shards", want)
	}
	// The migration left the same tables on every node.
	for _, nd := range cl.Nodes {
		var engines []string
		if err := nd.Conn(t).QueryRow(ctx, "SELECT groupArray(concat(name, ':', engine)) FROM (SELECT name, engine FROM system.tables WHERE database = 'netpulse_cluster' ORDER BY name)").Scan(&engines); err != nil {
			t.Fatal(err)
		}
		if len(engines) != 2*len(chschema.Tables) {
			t.Errorf("%s has tables %v, want a Replicated and a Distributed table for each of %d", nd.Name, engines, len(chschema.Tables))
		}
	}
}

// waitCount polls q until it returns at least want (the deadline is the
// assertion); errors (the table is not made yet) count as not yet.
func waitCount(t *testing.T, ctx context.Context, query func(string) (uint64, error), q string, want uint64) {
	t.Helper()
	for {
		got, err := query(q)
		if err == nil && got >= want {
			return
		}
		select {
		case <-ctx.Done():
			t.Fatalf("%s = %d (%v), want %d: %v", q, got, err, want, ctx.Err())
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// waitLocal waits until a node's local tcp_events holds want rows (a
// replica that was down catches up).
func waitLocal(t *testing.T, ctx context.Context, conn driver.Conn, want uint64) {
	t.Helper()
	waitCount(t, ctx, func(q string) (uint64, error) {
		var n uint64
		err := conn.QueryRow(ctx, q).Scan(&n)
		return n, err
	}, "SELECT count() FROM netpulse_cluster.tcp_events_local", want)
}

// natsWaitAcked waits until durable has acknowledged all of stream.
func natsWaitAcked(t *testing.T, ctx context.Context, js jetstream.JetStream, stream, durable string) {
	t.Helper()
	e := &env{js: js}
	e.waitAckedOn(t, stream, durable)
}
