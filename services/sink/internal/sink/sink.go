package sink

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2"
	"github.com/ClickHouse/clickhouse-go/v2/lib/driver"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/netpulse/netpulse/lib/eventpb"
	"github.com/netpulse/netpulse/lib/natsutil"
	"github.com/netpulse/netpulse/services/sink/internal/chschema"
	"github.com/netpulse/netpulse/services/sink/internal/chwriter"
)

// finalFlushTimeout bounds the last INSERT after the sink was told to stop;
// rows not stored by then are simply not acknowledged and come back.
const finalFlushTimeout = 15 * time.Second

// Counters are the sink's running totals.
type Counters struct {
	Messages    uint64 // NATS messages handled (acked or terminated)
	Redelivered uint64 // deliveries of a message the sink already held
	BadMessages uint64 // undecodable or of an unknown schema version: terminated
	chwriter.Counters
}

// Sink is one running sink.
type Sink struct {
	cfg Config
	log *slog.Logger

	conn    driver.Conn
	w       *chwriter.Writer
	pending map[uint64]jetstream.Msg // stream seq -> latest delivery, not yet acked
	order   []uint64
	first   time.Time // when the oldest pending message arrived
	touched time.Time // when the pending messages' ack deadlines were last extended
	c       Counters
	badSeen map[string]bool
}

// New checks cfg; it starts nothing.
func New(cfg Config, log *slog.Logger) *Sink {
	return &Sink{cfg: cfg, log: log.With("component", "sink"), pending: make(map[uint64]jetstream.Msg), badSeen: make(map[string]bool)}
}

// Run consumes until ctx ends, then stores what it holds and returns.
func (s *Sink) Run(ctx context.Context) error {
	conn, err := clickhouse.Open(&clickhouse.Options{
		Addr:        []string{s.cfg.ClickHouse.Addr},
		Auth:        clickhouse.Auth{Username: s.cfg.ClickHouse.Username, Password: s.cfg.ClickHouse.Password},
		DialTimeout: s.cfg.ClickHouse.DialTimeout,
	})
	if err != nil {
		return fmt.Errorf("clickhouse %s: %w", s.cfg.ClickHouse.Addr, err)
	}
	defer conn.Close()
	s.conn = conn
	feats, err := natsutil.Retry(ctx, s.log, "ClickHouse schema at "+s.cfg.ClickHouse.Addr, func(ctx context.Context) (chschema.Features, error) {
		f, err := chschema.Probe(ctx, conn)
		if err != nil {
			return f, err
		}
		return f, chschema.Migrate(ctx, conn, f, chschema.Options{Database: s.cfg.ClickHouse.Database, TTLDays: s.cfg.ClickHouse.TTLDays})
	})
	if err != nil {
		return err
	}
	s.log.Info("ClickHouse schema ready", "addr", s.cfg.ClickHouse.Addr, "database", s.cfg.ClickHouse.Database,
		"version", feats.Version, "datetime64", feats.DateTime64, "low_cardinality", feats.LowCardinality, "codecs", feats.Codecs, "ttl", feats.TTL)
	s.w = chwriter.New(conn, s.cfg.ClickHouse.Database, s.log)

	nc, cons, err := natsutil.EventsConsumer(ctx, s.cfg.NATS, s.cfg.Stream, "netpulse-sink", jetstream.ConsumerConfig{
		Durable:        s.cfg.Consumer.Durable,
		Description:    "netpulse sink: raw events into ClickHouse",
		FilterSubjects: []string{natsutil.KindSubjects(natsutil.KindState)},
		AckPolicy:      jetstream.AckExplicitPolicy,
		AckWait:        s.cfg.Consumer.AckWait,
		MaxAckPending:  s.cfg.Consumer.MaxAckPending,
		DeliverPolicy:  jetstream.DeliverAllPolicy,
		MaxDeliver:     -1,
	}, s.log)
	if err != nil {
		return err
	}
	defer nc.Close()
	if info, err := cons.Info(ctx); err == nil {
		s.log.Info("consuming", "consumer", s.cfg.Consumer.Durable, "ack_floor", info.AckFloor.Stream, "pending", info.NumPending)
	}
	it, err := cons.Messages(jetstream.PullMaxBytes(32 << 20))
	if err != nil {
		return fmt.Errorf("consume: %w", err)
	}
	defer it.Stop()
	return s.loop(ctx, it)
}

func (s *Sink) loop(ctx context.Context, it jetstream.MessagesContext) error {
	nextStats := time.Now().Add(s.cfg.Stats.Interval)
	for {
		wait := s.cfg.Batch.FlushInterval
		if len(s.pending) > 0 {
			wait = max(time.Until(s.first.Add(s.cfg.Batch.FlushInterval)), time.Millisecond)
		}
		m, err := it.Next(jetstream.NextMaxWait(wait))
		switch {
		case ctx.Err() != nil:
			fctx, cancel := context.WithTimeout(context.Background(), finalFlushTimeout)
			defer cancel()
			if err := s.flush(fctx); err != nil {
				s.log.Warn("final flush failed; the rows come back on the next start", "err", err)
			}
			s.stats()
			return nil
		case errors.Is(err, jetstream.ErrMsgIteratorClosed):
			return fmt.Errorf("message iterator closed")
		case err != nil && !errors.Is(err, nats.ErrTimeout) && !errors.Is(err, context.DeadlineExceeded):
			s.log.Warn("fetching messages", "err", err)
		case err == nil:
			s.handle(ctx, m)
		}
		if s.w.Buffered() >= s.cfg.Batch.MaxRows || (len(s.pending) > 0 && time.Since(s.first) >= s.cfg.Batch.FlushInterval) {
			if err := s.flushRetrying(ctx); err != nil {
				continue // ctx ended: the next round does the final flush
			}
		}
		if now := time.Now(); now.After(nextStats) {
			s.stats()
			nextStats = now.Add(s.cfg.Stats.Interval)
		}
	}
}

// handle buffers one message's rows; the message is acked after they are
// stored.
func (s *Sink) handle(ctx context.Context, m jetstream.Msg) {
	meta, err := m.Metadata()
	if err != nil {
		s.bad(m, "no JetStream metadata", err)
		return
	}
	seq := meta.Sequence.Stream
	if _, ok := s.pending[seq]; ok {
		// Redelivered while its rows still wait in our buffer: keep the
		// newest delivery to ack, buffer nothing twice.
		s.pending[seq] = m
		s.c.Redelivered++
		return
	}
	b := eventpb.BatchFromVTPool()
	defer b.ReturnToVTPool()
	// Unsafe: strings alias m.Data(), which stays alive while m is pending.
	if err := b.UnmarshalVTUnsafe(m.Data()); err != nil {
		s.bad(m, "undecodable batch", err)
		return
	}
	if b.SchemaVersion != eventpb.SchemaVersion {
		s.bad(m, "unknown schema version", fmt.Errorf("schema_version %d, this sink reads %d", b.SchemaVersion, eventpb.SchemaVersion))
		return
	}
	for {
		// A first delivery cannot be stored yet; a redelivery may be.
		_, err := s.w.Add(ctx, seq, meta.NumDelivered > 1, b)
		if err == nil {
			break
		}
		s.log.Warn("ClickHouse unreachable while checking for duplicates; retrying", "err", err)
		s.keepAlive()
		if !sleep(ctx, time.Second) {
			return // not acked: comes back after a restart
		}
	}
	if len(s.pending) == 0 {
		s.first = time.Now()
		s.touched = s.first
	}
	s.pending[seq] = m
	s.order = append(s.order, seq)
}

func (s *Sink) bad(m jetstream.Msg, reason string, err error) {
	s.c.BadMessages++
	s.c.Messages++
	if !s.badSeen[reason] {
		s.badSeen[reason] = true
		s.log.Error("dropping bad message (counted in bad_messages; logged once per reason)", "reason", reason, "subject", m.Subject(), "err", err)
	}
	_ = m.TermWithReason(reason + ": " + err.Error())
}

// flushRetrying stores the buffer, retrying with back-off while ClickHouse
// fails, until ctx ends.
func (s *Sink) flushRetrying(ctx context.Context) error {
	wait := 250 * time.Millisecond
	for {
		err := s.flush(ctx)
		if err == nil {
			return nil
		}
		s.log.Error("insert failed; keeping the rows and retrying", "err", err, "in", wait, "buffered_rows", s.w.Buffered())
		s.keepAlive()
		if !sleep(ctx, wait) {
			return ctx.Err()
		}
		wait = min(wait*2, 10*time.Second)
	}
}

func (s *Sink) flush(ctx context.Context) error {
	if err := s.w.Flush(ctx); err != nil {
		return err
	}
	for _, seq := range s.order {
		// An ack that is lost only means a redelivery, which the watermark skips.
		_ = s.pending[seq].Ack()
		delete(s.pending, seq)
		s.c.Messages++
	}
	s.order = s.order[:0]
	return nil
}

// keepAlive extends the ack deadline of the messages the sink holds, so
// that a slow or failing INSERT does not make the server redeliver them while
// ack_wait stays short (a sink that dies gets its messages redelivered to its
// successor after ack_wait).
func (s *Sink) keepAlive() {
	if len(s.pending) == 0 || time.Since(s.touched) < s.cfg.Consumer.AckWait/3 {
		return
	}
	for _, m := range s.pending {
		_ = m.InProgress()
	}
	s.touched = time.Now()
}

// Counters returns the running totals.
func (s *Sink) Counters() Counters {
	c := s.c
	if s.w != nil {
		c.Counters = s.w.Counters
	}
	return c
}

func (s *Sink) stats() {
	c := s.Counters()
	s.log.Info("sink stats", "messages", c.Messages, "rows_inserted", c.RowsInserted, "rows_duplicate", c.RowsDuplicate, "lookups", c.Lookups,
		"inserts", c.Inserts, "insert_errors", c.InsertErrors, "bad_messages", c.BadMessages,
		"redelivered", c.Redelivered, "buffered_rows", s.w.Buffered())
}

func sleep(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
		return true
	}
}
