// Package publish sends encoded batches to JetStream: asynchronously, with a
// bounded number in flight, a message ID on every message so a retried
// publish is stored once, and retries until the server acknowledges.
package publish

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/netpulse/netpulse/lib/retry"
	"github.com/netpulse/netpulse/services/probe/internal/batch"
)

// Config bounds the publisher.
type Config struct {
	// MaxInFlight is the number of batches published but not yet acknowledged.
	// When it is reached Publish blocks: the back-pressure ends in the kernel
	// ring buffer, whose drops are counted.
	MaxInFlight int `koanf:"max_in_flight"`
	// AckTimeout is how long one attempt waits for the server's ack.
	AckTimeout time.Duration `koanf:"ack_timeout"`
	// RetryBackoff is about the first wait between attempts; the waits
	// double, spread ±50 % (lib/retry), and are never longer than 5 s.
	RetryBackoff time.Duration `koanf:"retry_backoff"`
}

// maxRetryWait caps the doubling of RetryBackoff.
const maxRetryWait = 5 * time.Second

// DefaultConfig suits a busy host: 64 x 256 KiB in flight.
func DefaultConfig() Config {
	return Config{MaxInFlight: 64, AckTimeout: 5 * time.Second, RetryBackoff: 100 * time.Millisecond}
}

// Validate checks the settings; keys are named as under "publish".
func (c Config) Validate() error {
	switch {
	case c.MaxInFlight < 1 || c.MaxInFlight > 4096:
		return fmt.Errorf("publish.max_in_flight: must be 1..4096, got %d", c.MaxInFlight)
	case c.AckTimeout <= 0:
		return fmt.Errorf("publish.ack_timeout: must be positive, got %s", c.AckTimeout)
	case c.RetryBackoff <= 0:
		return fmt.Errorf("publish.retry_backoff: must be positive, got %s", c.RetryBackoff)
	}
	return nil
}

// Counters are the publisher's running totals.
type Counters struct {
	BatchesPublished uint64 // acknowledged by the server
	EventsPublished  uint64
	PublishErrors    uint64 // failed attempts, each retried
	EventsDropped    uint64 // given up at shutdown after the grace period
	InFlight         int
}

type job struct {
	msg    *nats.Msg
	events int
	batch  batch.Batch
	fut    jetstream.PubAckFuture
	err    error // set when the async publish could not even be sent
	// due is when the ack is late: publish.ack_timeout after the send, so
	// that acks lost together (a leader that died) time out together, not
	// one ack_timeout after another.
	due  time.Time
	sent time.Time
}

// Publisher publishes batches, each on its own subject with its own message
// ID. Publish is called from one goroutine; Run acknowledges them on another.
type Publisher struct {
	cfg Config
	js  jetstream.JetStream
	log *slog.Logger

	slots chan struct{} // one per batch in flight
	queue chan *job
	done  chan struct{}

	published, events, errs, dropped atomic.Uint64

	// ObserveAck, when set before Run, is told how long each batch took
	// from its first send to its ack (retries included).
	ObserveAck func(time.Duration)
}

// New makes a Publisher. Each batch is Released once the server has it (or
// it was given up).
func New(cfg Config, js jetstream.JetStream, log *slog.Logger) *Publisher {
	return &Publisher{
		cfg: cfg, js: js, log: log,
		slots: make(chan struct{}, cfg.MaxInFlight),
		queue: make(chan *job, cfg.MaxInFlight),
		done:  make(chan struct{}),
	}
}

// Publish sends b asynchronously. It blocks while MaxInFlight batches await
// their ack, and returns an error only when ctx ends first (the batch is then
// counted as dropped).
func (p *Publisher) Publish(ctx context.Context, b batch.Batch) error {
	msg := nats.NewMsg(b.Subject)
	msg.Header.Set(jetstream.MsgIDHeader, b.MsgID)
	msg.Data = b.Data
	j := &job{msg: msg, events: b.Events, batch: b}
	select {
	case p.slots <- struct{}{}:
	case <-ctx.Done():
		p.dropped.Add(uint64(b.Events))
		b.Release()
		return fmt.Errorf("publish batch %s: %w", b.MsgID, ctx.Err())
	}
	j.sent = time.Now()
	j.due = j.sent.Add(p.cfg.AckTimeout)
	j.fut, j.err = p.js.PublishMsgAsync(msg)
	p.queue <- j // never blocks: it has as much room as there are slots
	return nil
}

// Close tells Run that no more batches come; Run then waits for the
// outstanding acks.
func (p *Publisher) Close() { close(p.queue) }

// Run waits for the ack of every batch in order, retrying failed ones with
// the same message ID. It returns once Close was called and every batch is
// acknowledged, or when stop ends: what is still unacknowledged then is
// counted as dropped.
func (p *Publisher) Run(stop context.Context) {
	defer close(p.done)
	for j := range p.queue {
		if !p.await(stop, j) {
			p.dropped.Add(uint64(j.events))
		}
		j.batch.Release()
		<-p.slots
	}
}

// Done is closed when Run has returned.
func (p *Publisher) Done() <-chan struct{} { return p.done }

func (p *Publisher) await(stop context.Context, j *job) bool {
	err := j.err
	if err == nil {
		late := time.NewTimer(time.Until(j.due))
		defer late.Stop()
		select {
		case <-j.fut.Ok():
			p.acked(j)
			return true
		case err = <-j.fut.Err():
		case <-late.C:
			err = errors.New("no ack within publish.ack_timeout")
		case <-stop.Done():
			return false
		}
	}
	// That was attempt 1: its error starts the retries, each a synchronous
	// publish of the same message (same ID), until one is acknowledged or
	// stop ends.
	first := err
	_, err = retry.Do(stop, retry.Backoff{First: p.cfg.RetryBackoff, Max: maxRetryWait}, func() (*jetstream.PubAck, error) {
		if first != nil {
			e := first
			first = nil
			return nil, e
		}
		ctx, cancel := context.WithTimeout(stop, p.cfg.AckTimeout)
		defer cancel()
		return p.js.PublishMsg(ctx, j.msg)
	}, func(attempt int, err error, wait time.Duration) {
		p.errs.Add(1)
		p.log.Warn("publish failed, retrying with the same message ID",
			"subject", j.msg.Subject, "msg_id", j.msg.Header.Get(jetstream.MsgIDHeader), "attempt", attempt, "err", err, "in", wait.Round(time.Millisecond))
	})
	if err != nil { // only when stop ended
		return false
	}
	p.acked(j)
	return true
}

func (p *Publisher) acked(j *job) {
	if p.ObserveAck != nil {
		p.ObserveAck(time.Since(j.sent))
	}
	p.published.Add(1)
	p.events.Add(uint64(j.events))
}

// Counters returns the running totals.
func (p *Publisher) Counters() Counters {
	return Counters{
		BatchesPublished: p.published.Load(),
		EventsPublished:  p.events.Load(),
		PublishErrors:    p.errs.Load(),
		EventsDropped:    p.dropped.Load(),
		InFlight:         len(p.slots),
	}
}
