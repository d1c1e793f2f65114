// Package detector consumes raw events with its own durable consumer. The
// detectors themselves (and their alerts) come in a later change; today it
// decodes, counts per kind and acknowledges, which proves the wiring.
package detector

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"regexp"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/netpulse/netpulse/lib/config"
	"github.com/netpulse/netpulse/lib/eventpb"
	"github.com/netpulse/netpulse/lib/natsutil"
)

// Config is the detector's whole configuration (config/detector.yaml).
type Config struct {
	NATS     config.NATS    `koanf:"nats"`
	Stream   config.Stream  `koanf:"stream"`
	Log      config.Log     `koanf:"log"`
	Consumer ConsumerConfig `koanf:"consumer"`
	Stats    StatsConfig    `koanf:"stats"`
}

// ConsumerConfig is the detector's durable consumer.
type ConsumerConfig struct {
	Durable       string        `koanf:"durable"`
	AckWait       time.Duration `koanf:"ack_wait"`
	MaxAckPending int           `koanf:"max_ack_pending"`
}

// StatsConfig sets how often the detector logs its counters.
type StatsConfig struct {
	Interval time.Duration `koanf:"interval"`
}

// DefaultConfig is what config/detector.yaml documents.
func DefaultConfig() Config {
	return Config{
		NATS: config.DefaultNATS(), Stream: config.DefaultStream(), Log: config.DefaultLog(),
		Consumer: ConsumerConfig{Durable: "netpulse-detector", AckWait: 30 * time.Second, MaxAckPending: 1000},
		Stats:    StatsConfig{Interval: 10 * time.Second},
	}
}

var name = regexp.MustCompile(`^[A-Za-z0-9_-]+$`)

// Validate checks every value and names the key at fault.
func (c *Config) Validate() error {
	for _, v := range []interface{ Validate() error }{c.NATS, c.Stream, c.Log} {
		if err := v.Validate(); err != nil {
			return err
		}
	}
	switch {
	case !name.MatchString(c.Consumer.Durable):
		return fmt.Errorf("consumer.durable: %q is not a valid consumer name", c.Consumer.Durable)
	case c.Consumer.AckWait < time.Second:
		return fmt.Errorf("consumer.ack_wait: must be at least 1s, got %s", c.Consumer.AckWait)
	case c.Consumer.MaxAckPending < 1:
		return fmt.Errorf("consumer.max_ack_pending: must be positive, got %d", c.Consumer.MaxAckPending)
	case c.Stats.Interval < 100*time.Millisecond:
		return fmt.Errorf("stats.interval: must be at least 100ms, got %s", c.Stats.Interval)
	}
	return nil
}

// Counters are the detector's running totals.
type Counters struct {
	Messages    atomic.Uint64
	Events      atomic.Uint64
	BadMessages atomic.Uint64
}

// Detector is one running detector process.
type Detector struct {
	cfg Config
	log *slog.Logger
	c   Counters
}

// Counters gives the running totals.
func (d *Detector) Counters() *Counters { return &d.c }

// New checks nothing beyond Validate and starts nothing.
func New(cfg Config, log *slog.Logger) *Detector {
	return &Detector{cfg: cfg, log: log.With("component", "detector")}
}

// Run consumes until ctx ends.
func (d *Detector) Run(ctx context.Context) error {
	nc, cons, err := natsutil.EventsConsumer(ctx, d.cfg.NATS, d.cfg.Stream, "netpulse-detector", jetstream.ConsumerConfig{
		Durable:        d.cfg.Consumer.Durable,
		Description:    "netpulse detector",
		FilterSubjects: []string{natsutil.KindSubjects(natsutil.KindState)},
		AckPolicy:      jetstream.AckExplicitPolicy,
		AckWait:        d.cfg.Consumer.AckWait,
		MaxAckPending:  d.cfg.Consumer.MaxAckPending,
		// A detector cares about now, not a day of history.
		DeliverPolicy: jetstream.DeliverNewPolicy,
	}, d.log)
	if err != nil {
		return err
	}
	defer nc.Close()
	d.log.Info("consuming", "consumer", d.cfg.Consumer.Durable)
	b := &eventpb.Batch{}
	cc, err := cons.Consume(func(m jetstream.Msg) {
		b.ResetVT()
		if err := b.UnmarshalVT(m.Data()); err != nil || b.SchemaVersion != eventpb.SchemaVersion {
			d.c.BadMessages.Add(1)
			_ = m.TermWithReason(fmt.Sprintf("undecodable batch (schema_version %d): %v", b.SchemaVersion, err))
			return
		}
		d.c.Messages.Add(1)
		d.c.Events.Add(uint64(len(b.Events)))
		_ = m.Ack()
	}, jetstream.ConsumeErrHandler(func(_ jetstream.ConsumeContext, err error) {
		if !errors.Is(err, jetstream.ErrNoHeartbeat) {
			d.log.Warn("consume", "err", err)
		}
	}))
	if err != nil {
		return fmt.Errorf("consume: %w", err)
	}
	t := time.NewTicker(d.cfg.Stats.Interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			cc.Drain()
			<-cc.Closed()
			d.log.Info("detector stats", "messages", d.c.Messages.Load(), "events", d.c.Events.Load(), "bad_messages", d.c.BadMessages.Load())
			return nil
		case <-t.C:
			d.log.Info("detector stats", "messages", d.c.Messages.Load(), "events", d.c.Events.Load(), "bad_messages", d.c.BadMessages.Load())
		}
	}
}
