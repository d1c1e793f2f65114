// Package ingest consumes NETPULSE_EVENTS (every data kind) and
// NETPULSE_ALERTS, one durable consumer each, and writes each message's
// rows into ClickHouse exactly once: rows are batched by size and time, a
// message is acked only after its rows are stored, and the rows of a
// redelivered message that are already stored are skipped (chwriter).
package ingest

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2"
	"github.com/ClickHouse/clickhouse-go/v2/lib/driver"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"golang.org/x/sync/errgroup"

	"github.com/netpulse/netpulse/lib/eventpb"
	"github.com/netpulse/netpulse/lib/natsutil"
	"github.com/netpulse/netpulse/lib/obs"
	"github.com/netpulse/netpulse/lib/retry"
	"github.com/netpulse/netpulse/lib/wire"
	"github.com/netpulse/netpulse/services/sink/internal/chcluster"
	"github.com/netpulse/netpulse/services/sink/internal/chschema"
	"github.com/netpulse/netpulse/services/sink/internal/chwriter"
)

// finalFlushTimeout bounds the last INSERT after the sink was told to stop;
// rows not stored by then are simply not acknowledged and come back.
const finalFlushTimeout = 15 * time.Second

// Waits between attempts while ClickHouse fails: an INSERT backs off to 10 s
// (the rows wait in memory, ack deadlines kept alive); a duplicate look-up,
// which holds up the whole consumer, is tried again every second.
var (
	flushBackoff  = retry.Backoff{First: 250 * time.Millisecond, Max: 10 * time.Second}
	lookupBackoff = retry.Backoff{First: time.Second, Max: time.Second}
)

// Counters are a consumer's running totals (its stats line).
type Counters struct {
	Messages    uint64 // NATS messages handled (acked or terminated)
	Redelivered uint64 // deliveries of a message the sink already held
	BadMessages uint64 // undecodable, of an unknown schema version or kind, or not what their kind holds: terminated
	chwriter.Counters
}

// Sink is one running sink: a consumer of raw events and one of alerts,
// each with its own writer, sharing the ClickHouse connection pool.
type Sink struct {
	cfg    Config
	log    *slog.Logger
	events *consumer
	alerts *consumer

	obs           *obs.Obs                            // see Observe
	observeInsert func(table string, d time.Duration) // nil: not observed
}

// New checks cfg; it starts nothing.
func New(cfg Config, log *slog.Logger) *Sink {
	log = log.With("component", "sink")
	s := &Sink{cfg: cfg, log: log}
	s.events = newConsumer("events", cfg, log)
	s.events.add = s.events.addBatch
	s.alerts = newConsumer("alerts", cfg, log)
	s.alerts.add = s.alerts.addAlert
	return s
}

// Run consumes until ctx ends, then stores what it holds and returns.
func (s *Sink) Run(ctx context.Context) error {
	chOpts, err := s.cfg.ClickHouse.Options()
	if err != nil {
		return err
	}
	conn, err := clickhouse.Open(chOpts)
	if err != nil {
		return fmt.Errorf("clickhouse %s: %w", s.cfg.ClickHouse.Addr, err)
	}
	defer conn.Close()
	ch := s.cfg.ClickHouse
	feats, err := retry.Logged(ctx, s.log, "ClickHouse schema at "+ch.Addr, func(ctx context.Context) (chschema.Features, error) {
		f, err := chschema.Probe(ctx, conn)
		if err != nil {
			return f, err
		}
		return f, chschema.Migrate(ctx, conn, f, chschema.Options{Database: ch.Database, TTLDays: ch.TTLDays, Cluster: ch.Cluster})
	})
	if err != nil {
		return err
	}
	s.obs.Ready(readyClickHouse, true)
	s.log.Info("ClickHouse schema ready", "addr", ch.Addr, "cluster", ch.Cluster, "database", ch.Database,
		"tls", ch.TLS.Enabled, "version", feats.Version, "datetime64", feats.DateTime64, "low_cardinality", feats.LowCardinality, "codecs", feats.Codecs, "ttl", feats.TTL)
	if ch.Cluster == "" {
		s.events.w = chwriter.New(conn, ch.Database, s.events.log)
		s.alerts.w = chwriter.New(conn, ch.Database, s.alerts.log)
	} else {
		topo, shards, err := s.openShards(ctx, conn)
		if err != nil {
			return err
		}
		defer func() {
			for _, c := range shards {
				c.Close()
			}
		}()
		s.events.w = chwriter.NewCluster(shards, topo.ShardOf, ch.Database, s.events.log)
		s.alerts.w = chwriter.NewCluster(shards, topo.ShardOf, ch.Database, s.alerts.log)
	}
	if s.observeInsert != nil {
		s.events.w.ObserveInserts(s.observeInsert)
		s.alerts.w.ObserveInserts(s.observeInsert)
	}

	nc, err := natsutil.Connect(s.cfg.NATS, "netpulse-sink", s.log)
	if err != nil {
		return err
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		return fmt.Errorf("jetstream: %w", err)
	}
	if err := natsutil.EnsureEventsAndAlerts(ctx, js, s.cfg.Stream, s.cfg.AlertsStream, s.log); err != nil {
		return err
	}
	s.obs.Ready(readyNATS, true)
	var kinds []string
	for _, k := range wire.DataKinds {
		kinds = append(kinds, wire.KindSubjects(k))
	}
	// CreateOrUpdate: a durable made by an older sink (state only) gets the
	// new filter in place and keeps its position.
	evIt, err := s.events.start(ctx, js, wire.EventsStream, s.consumerConfig(s.cfg.Consumer.Durable,
		"netpulse sink: raw events into ClickHouse", kinds))
	if err != nil {
		return err
	}
	defer evIt.Stop()
	alIt, err := s.alerts.start(ctx, js, wire.AlertsStream, s.consumerConfig(s.cfg.Consumer.AlertsDurable,
		"netpulse sink: alerts into ClickHouse", []string{wire.AllAlerts}))
	if err != nil {
		return err
	}
	defer alIt.Stop()
	s.obs.Ready(readyConsuming, true)
	defer s.obs.Ready(readyConsuming, false)

	// Both loops end when ctx does, each after a final flush; if one fails,
	// the group's context stops the other.
	g, gctx := errgroup.WithContext(ctx)
	g.Go(func() error { return s.events.loop(gctx, evIt) })
	g.Go(func() error { return s.alerts.loop(gctx, alIt) })
	return g.Wait()
}

// openShards reads the cluster's shards from the server conn talks to and
// opens a connection to each shard's replicas.
func (s *Sink) openShards(ctx context.Context, conn driver.Conn) (chcluster.Topology, []driver.Conn, error) {
	ch := s.cfg.ClickHouse
	topo, err := retry.Logged(ctx, s.log, "ClickHouse cluster "+ch.Cluster, func(ctx context.Context) (chcluster.Topology, error) {
		return chcluster.Discover(ctx, conn, ch.Cluster)
	})
	if err != nil {
		return topo, nil, err
	}
	var shards []driver.Conn
	for _, sh := range topo.Shards {
		opts, err := ch.OptionsFor(sh.Replicas)
		if err == nil {
			var c driver.Conn
			if c, err = clickhouse.Open(opts); err == nil {
				shards = append(shards, c)
				s.log.Info("ClickHouse shard", "cluster", ch.Cluster, "shard", sh.Num, "weight", sh.Weight, "replicas", sh.Replicas)
				continue
			}
		}
		for _, c := range shards {
			c.Close()
		}
		return topo, nil, fmt.Errorf("clickhouse cluster %s, shard %d: %w", ch.Cluster, sh.Num, err)
	}
	return topo, shards, nil
}

func (s *Sink) consumerConfig(durable, description string, filter []string) jetstream.ConsumerConfig {
	return jetstream.ConsumerConfig{
		Durable:        durable,
		Description:    description,
		FilterSubjects: filter,
		AckPolicy:      jetstream.AckExplicitPolicy,
		AckWait:        s.cfg.Consumer.AckWait,
		MaxAckPending:  s.cfg.Consumer.MaxAckPending,
		DeliverPolicy:  jetstream.DeliverAllPolicy,
		MaxDeliver:     -1,
	}
}

// consumer is one durable consumer's loop: it buffers the rows of its
// messages in its own writer and acks the messages once the rows are
// stored.
//
// The INSERTs of one batch run in a goroutine of their own (a flush) while
// the loop fetches, decodes and buffers the next batch: the server's work
// on a batch overlaps the sink's on the next. At most one flush runs; when
// the next batch is due before it ends, the loop waits for it. A flush acks
// its batch's messages once all of its rows are stored.
type consumer struct {
	name string
	cfg  Config
	log  *slog.Logger
	w    *chwriter.Writer
	// add buffers the rows of one message. A non-empty reason means the
	// message is bad (err says why); an error without a reason means ctx
	// ended before the rows could be buffered.
	add func(ctx context.Context, m jetstream.Msg, seq uint64, redelivered bool) (reason string, err error)

	// mu guards what the loop and a running flush share.
	mu sync.Mutex
	// pending: stream seq -> latest delivery, not yet acked: buffered in w
	// or in the running flush.
	pending  map[uint64]jetstream.Msg
	touched  time.Time // when the pending messages' ack deadlines were last extended
	messages uint64    // Counters.Messages

	// The loop's own.
	order       []uint64        // the messages buffered in w, in arrival order
	first       time.Time       // when order[0] arrived
	flushing    []*flushJob     // the running (or failed) flushes, oldest first, at most maxFlushes
	inserts     context.Context // a flush's INSERTs run under it (see flushRetrying)
	c           Counters
	badSeen     map[string]bool
	lastPending uint64 // NumPending of the last message delivered

	snap      snap      // under mu: the loop's counters as of its last refresh, for scrapes
	refreshed time.Time // the loop's own: when snap was last refreshed
}

// flushJob is one batch being inserted by a goroutine of its own.
type flushJob struct {
	d     *chwriter.Detached
	order []uint64      // its messages, acked once d is stored
	rows  int           // d's rows when it started
	done  chan struct{} // closed when the goroutine ends
	err   error         // nil when stored and acked; else ctx ended first and d still holds rows
}

func newConsumer(name string, cfg Config, log *slog.Logger) *consumer {
	return &consumer{
		name: name, cfg: cfg, log: log.With("consumer", name),
		pending: make(map[uint64]jetstream.Msg), badSeen: make(map[string]bool),
	}
}

// start creates or updates the durable consumer cc on stream and starts
// pulling from it.
func (c *consumer) start(ctx context.Context, js jetstream.JetStream, stream string, cc jetstream.ConsumerConfig) (jetstream.MessagesContext, error) {
	cons, err := retry.Logged(ctx, c.log, "create consumer "+cc.Durable, func(ctx context.Context) (jetstream.Consumer, error) {
		return js.CreateOrUpdateConsumer(ctx, stream, cc)
	})
	if err != nil {
		return nil, err
	}
	if info, err := cons.Info(ctx); err == nil {
		c.log.Info("consuming", "stream", stream, "durable", cc.Durable, "ack_floor", info.AckFloor.Stream, "pending", info.NumPending)
	}
	it, err := cons.Messages(jetstream.PullMaxBytes(32 << 20))
	if err != nil {
		return nil, fmt.Errorf("consume %s: %w", stream, err)
	}
	return it, nil
}

func (c *consumer) loop(ctx context.Context, it jetstream.MessagesContext) error {
	// An INSERT in flight when ctx ends may finish within finalFlushTimeout.
	inserts, stopInserts := context.WithCancel(context.WithoutCancel(ctx))
	defer stopInserts()
	defer context.AfterFunc(ctx, func() { time.AfterFunc(finalFlushTimeout, stopInserts) })()
	c.inserts = inserts
	nextStats := time.Now().Add(c.cfg.Stats.Interval)
	for {
		wait := c.cfg.Batch.FlushInterval
		if len(c.order) > 0 {
			wait = max(time.Until(c.first.Add(c.cfg.Batch.FlushInterval)), time.Millisecond)
		}
		m, err := it.Next(jetstream.NextMaxWait(wait))
		switch {
		case ctx.Err() != nil:
			c.finalFlush()
			c.refresh()
			c.stats()
			return nil
		case errors.Is(err, jetstream.ErrMsgIteratorClosed):
			return fmt.Errorf("%s: message iterator closed", c.name)
		case err != nil && !errors.Is(err, nats.ErrTimeout) && !errors.Is(err, context.DeadlineExceeded):
			c.log.Warn("fetching messages", "err", err)
		case err == nil:
			c.handle(ctx, m)
		}
		c.reap()
		c.keepAlive() // held messages stay leased to this sink while it lives
		if c.w.Buffered() >= c.cfg.Batch.MaxRows || (len(c.order) > 0 && time.Since(c.first) >= c.cfg.Batch.FlushInterval) {
			if err := c.startFlush(ctx); err != nil {
				continue // ctx ended: the next round does the final flush
			}
		}
		now := time.Now()
		if now.Sub(c.refreshed) >= refreshEvery {
			c.refresh()
			c.refreshed = now
		}
		if now.After(nextStats) {
			c.stats()
			nextStats = now.Add(c.cfg.Stats.Interval)
		}
	}
}

// handle buffers one message's rows; the message is acked after they are
// stored.
func (c *consumer) handle(ctx context.Context, m jetstream.Msg) {
	meta, err := m.Metadata()
	if err != nil {
		c.bad(m, "no JetStream metadata", err)
		return
	}
	seq := meta.Sequence.Stream
	c.lastPending = meta.NumPending
	c.mu.Lock()
	_, held := c.pending[seq]
	if held {
		// Redelivered while its rows still wait in our buffer or are being
		// inserted: keep the newest delivery to ack, buffer nothing twice.
		c.pending[seq] = m
	}
	c.mu.Unlock()
	if held {
		c.c.Redelivered++
		return
	}
	// A first delivery cannot be stored yet; a redelivery may be.
	reason, err := c.add(ctx, m, seq, meta.NumDelivered > 1)
	switch {
	case reason != "":
		c.bad(m, reason, err)
		return
	case err != nil:
		return // ctx ended: not acked, comes back after a restart
	}
	c.mu.Lock()
	if len(c.pending) == 0 {
		c.touched = time.Now()
	}
	c.pending[seq] = m
	c.mu.Unlock()
	if len(c.order) == 0 {
		c.first = time.Now()
	}
	c.order = append(c.order, seq)
}

// addBatch buffers the rows of a raw-event message, routed by the kind in
// its subject.
func (c *consumer) addBatch(ctx context.Context, m jetstream.Msg, seq uint64, redelivered bool) (string, error) {
	host, kind, _ := wire.ParseEventSubject(m.Subject())
	if chwriter.TableOf(kind) == "" {
		return "unknown kind", fmt.Errorf("subject %s: kind %q is not one the sink stores", m.Subject(), kind)
	}
	b := eventpb.BatchFromVTPool()
	defer b.ReturnToVTPool()
	// Unsafe: strings alias m.Data(), which stays alive while m is pending.
	if rej := wire.DecodeBatchUnsafe(b, m.Data(), host, "sink"); rej != nil {
		return rej.Reason, rej.Err
	}
	if reason, err := chwriter.Check(kind, b); reason != "" {
		return reason, err
	}
	return "", c.retryLookup(ctx, func() error { return c.w.Add(ctx, kind, seq, redelivered, b) })
}

// addAlert buffers the row of an alert message (JSON).
func (c *consumer) addAlert(ctx context.Context, m jetstream.Msg, seq uint64, redelivered bool) (string, error) {
	a, err := chwriter.DecodeAlert(m.Data())
	switch {
	case errors.Is(err, chwriter.ErrInvalidAlert):
		return "invalid alert", err
	case err != nil:
		return "undecodable alert", err
	}
	return "", c.retryLookup(ctx, func() error { return c.w.AddAlert(ctx, seq, redelivered, a) })
}

// retryLookup calls add until it succeeds (its only failure is ClickHouse
// not answering a duplicate look-up) or ctx ends.
func (c *consumer) retryLookup(ctx context.Context, add func() error) error {
	_, err := retry.Do(ctx, lookupBackoff, func() (struct{}, error) { return struct{}{}, add() },
		func(_ int, err error, _ time.Duration) {
			c.log.Warn("ClickHouse unreachable while checking for duplicates; retrying", "err", err)
			c.keepAlive()
		})
	return err
}

func (c *consumer) bad(m jetstream.Msg, reason string, err error) {
	c.c.BadMessages++
	c.mu.Lock()
	c.messages++
	c.mu.Unlock()
	if !c.badSeen[reason] {
		c.badSeen[reason] = true
		c.log.Error("dropping bad message (counted in bad_messages; logged once per reason)", "reason", reason, "subject", m.Subject(), "err", err)
	}
	_ = m.TermWithReason(reason + ": " + err.Error())
}

// maxFlushes is how many batches insert at once: while the server works
// on one, the client encodes and sends the next.
const maxFlushes = 2

// startFlush hands the buffered batch to a flush of its own, after the
// oldest running flush has ended when maxFlushes run. An error means ctx
// ended first.
func (c *consumer) startFlush(ctx context.Context) error {
	if len(c.flushing) >= maxFlushes {
		if err := c.waitFlush(); err != nil {
			return err
		}
	}
	if len(c.order) == 0 {
		return nil
	}
	job := &flushJob{d: c.w.Detach(), order: c.order, done: make(chan struct{})}
	job.rows = job.d.Buffered()
	c.order = nil
	c.flushing = append(c.flushing, job)
	go func() {
		defer close(job.done)
		job.err = c.flushRetrying(ctx, c.inserts, job.d, job.order)
	}()
	return nil
}

// waitFlush waits for the oldest running flush to end and takes back its
// buffers. An error means ctx ended first: the flush's rows wait for
// finalFlush.
func (c *consumer) waitFlush() error {
	if len(c.flushing) == 0 {
		return nil
	}
	job := c.flushing[0]
	// While the INSERT runs, the messages it holds stay leased to this
	// sink: other sinks on the consumer get them only if this one stops
	// extending their ack deadline (it died or hangs).
	tick := time.NewTicker(c.cfg.Consumer.AckWait / 3)
	defer tick.Stop()
	for waiting := true; waiting; {
		select {
		case <-job.done: // it ends when stored, or when ctx does
			waiting = false
		case <-tick.C:
			c.keepAlive()
		}
	}
	if job.err != nil {
		return job.err
	}
	c.w.Reclaim(job.d)
	c.flushing = c.flushing[1:]
	return nil
}

// reap takes back the buffers of the flushes that have ended, oldest
// first, without waiting.
func (c *consumer) reap() {
	for len(c.flushing) > 0 {
		select {
		case <-c.flushing[0].done:
			if c.waitFlush() != nil {
				return // ctx ended: finalFlush takes it
			}
		default:
			return
		}
	}
}

// finalFlush stores what the consumer holds after ctx ended: the batch of
// the flush that ctx cut short, then the buffer. Rows not stored within
// finalFlushTimeout are not acked and come back on the next start.
func (c *consumer) finalFlush() {
	fctx, cancel := context.WithTimeout(context.Background(), finalFlushTimeout)
	defer cancel()
	for len(c.flushing) > 0 {
		job := c.flushing[0]
		<-job.done
		if job.err != nil {
			if err := c.store(fctx, job.d, job.order); err != nil {
				c.w.Reclaim(job.d) // its counters
				c.log.Warn("final flush failed; the rows come back on the next start", "err", err)
				return
			}
		}
		c.w.Reclaim(job.d)
		c.flushing = c.flushing[1:]
	}
	if err := c.store(fctx, c.w, c.order); err != nil {
		c.log.Warn("final flush failed; the rows come back on the next start", "err", err)
		return
	}
	c.order = c.order[:0]
}

// batch is rows to store: the writer's buffer or a detached batch.
type batch interface {
	Flush(ctx context.Context) error
	Buffered() int
}

// flushRetrying stores b and acks its messages order, retrying with
// back-off while ClickHouse fails, until ctx ends. Each INSERT runs under
// inserts, which outlives ctx: an INSERT cut short leaves its outcome
// unknown, and the server may still commit it after the look-up that
// decides whether to insert again.
func (c *consumer) flushRetrying(ctx, inserts context.Context, b batch, order []uint64) error {
	_, err := retry.Do(ctx, flushBackoff, func() (struct{}, error) { return struct{}{}, c.store(inserts, b, order) },
		func(_ int, err error, wait time.Duration) {
			c.log.Error("insert failed; keeping the rows and retrying", "err", err, "in", wait.Round(time.Millisecond), "buffered_rows", b.Buffered())
			c.keepAlive()
		})
	return err
}

// store inserts b, then acks its messages order.
func (c *consumer) store(ctx context.Context, b batch, order []uint64) error {
	if err := b.Flush(ctx); err != nil {
		return err
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, seq := range order {
		// An ack that is lost only means a redelivery, which the look-up skips.
		_ = c.pending[seq].Ack()
		delete(c.pending, seq)
		c.messages++
	}
	return nil
}

// keepAlive extends the ack deadline of the messages the consumer holds, so
// that a slow or failing INSERT does not make the server redeliver them while
// ack_wait stays short (a sink that dies gets its messages redelivered to its
// successor after ack_wait).
func (c *consumer) keepAlive() {
	c.mu.Lock()
	defer c.mu.Unlock()
	if len(c.pending) == 0 || time.Since(c.touched) < c.cfg.Consumer.AckWait/3 {
		return
	}
	for _, m := range c.pending {
		_ = m.InProgress()
	}
	c.touched = time.Now()
}

// counters are the consumer's totals; those of a running flush join once
// it has ended.
func (c *consumer) counters() Counters {
	out := c.c
	c.mu.Lock()
	out.Messages = c.messages
	c.mu.Unlock()
	if c.w != nil {
		out.Counters = c.w.Counters
	}
	return out
}

func (c *consumer) stats() {
	t := c.counters()
	buffered := c.w.Buffered()
	for _, job := range c.flushing {
		buffered += job.rows
	}
	c.log.Info("sink stats", "messages", t.Messages, "rows_inserted", t.RowsInserted, "rows_duplicate", t.RowsDuplicate, "lookups", t.Lookups,
		"inserts", t.Inserts, "insert_errors", t.InsertErrors, "bad_messages", t.BadMessages,
		"redelivered", t.Redelivered, "buffered_rows", buffered)
}
