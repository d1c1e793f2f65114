package alertout

import (
	"context"
	"encoding/json"
	"log/slog"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/netpulse/netpulse/lib/alert"
	"github.com/netpulse/netpulse/lib/retry"
	"github.com/netpulse/netpulse/lib/wire"
)

// Message is the NATS message of a: JSON on netpulse.alerts.<detector>.<severity>.<host>.
func Message(a alert.Alert) (*nats.Msg, error) {
	b, err := json.Marshal(a)
	if err != nil {
		return nil, err
	}
	m := nats.NewMsg(wire.AlertSubject(a.Detector, a.Severity, a.Host))
	m.Data = b
	m.Header.Set(jetstream.MsgIDHeader, wire.AlertMsgID(a))
	return m, nil
}

// Publisher publishes one detector kind's alerts in order, retrying each
// until it is stored: a NATS outage delays this kind's alerts and nothing
// else. Its queue is bounded; a full queue holds back the kind's evaluation.
type Publisher struct {
	JS    jetstream.JetStream
	Store *Store
	Log   *slog.Logger

	queue     chan Stored
	Published atomic.Uint64
	Errors    atomic.Uint64
}

// NewPublisher makes a publisher with a queue of size n.
func NewPublisher(js jetstream.JetStream, store *Store, n int, log *slog.Logger) *Publisher {
	return &Publisher{JS: js, Store: store, Log: log, queue: make(chan Stored, n)}
}

// Enqueue hands a stored record over for publishing; it waits while the
// queue is full, until ctx ends.
func (p *Publisher) Enqueue(ctx context.Context, st Stored) bool {
	select {
	case p.queue <- st:
		return true
	case <-ctx.Done():
		return false
	}
}

// Close ends Run once the queue is drained.
func (p *Publisher) Close() { close(p.queue) }

// Run publishes until Close was called and the queue is empty, or ctx
// ends; what is left unpublished stays in the store as unpublished, and the
// next owner of the host publishes it.
func (p *Publisher) Run(ctx context.Context) {
	for st := range p.queue {
		if !p.publish(ctx, st) {
			return
		}
	}
}

func (p *Publisher) publish(ctx context.Context, st Stored) bool {
	m, err := Message(st.Alert)
	if err != nil { // cannot happen with JSON-able evidence; count and move on
		p.Errors.Add(1)
		p.Log.Error("alert not encodable", "fingerprint", st.Alert.Fingerprint, "err", err)
		return true
	}
	if _, err := retry.Do(ctx, retry.Backoff{First: 100 * time.Millisecond, Max: 5 * time.Second}, func() (*jetstream.PubAck, error) {
		pctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		defer cancel()
		return p.JS.PublishMsg(pctx, m)
	}, func(attempt int, err error, _ time.Duration) {
		p.Errors.Add(1)
		if attempt == 1 || attempt%20 == 0 {
			p.Log.Warn("publishing alert failed; retrying", "subject", m.Subject, "msg_id", wire.AlertMsgID(st.Alert), "attempt", attempt, "err", err)
		}
	}); err != nil {
		return false // ctx ended
	}
	p.Published.Add(1)
	// One line per alert message: what an operator tails the log for.
	p.Log.Info("alert", "status", st.Alert.Status, "detector", st.Alert.Detector, "severity", st.Alert.Severity,
		"host", st.Alert.Host, "summary", st.Alert.Summary(), "fingerprint", st.Alert.Fingerprint)
	sctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	if err := p.Store.settle(sctx, st); err != nil {
		// The alert is out; a stale record only makes the next owner
		// publish it again under the same message ID.
		p.Log.Warn("alert published but its record not updated", "key", st.Key, "err", err)
	}
	return true
}
