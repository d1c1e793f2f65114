// Package history reads a host's recent past from NETPULSE_EVENTS: what a
// replica replays to rebuild a detector's state when it takes a host over.
package history

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/netpulse/netpulse/lib/wire"
)

// Reader reads NETPULSE_EVENTS.
type Reader struct {
	JS jetstream.JetStream
}

// Msg is one stored message.
type Msg struct {
	Seq     uint64
	Subject string
	Data    []byte
}

// LastOf returns the latest message on subject, or nil when there is none.
func (r Reader) LastOf(ctx context.Context, subject string) (*Msg, error) {
	st, err := r.JS.Stream(ctx, wire.EventsStream)
	if err != nil {
		return nil, err
	}
	m, err := st.GetLastMsgForSubject(ctx, subject)
	if errors.Is(err, jetstream.ErrMsgNotFound) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	return &Msg{Seq: m.Sequence, Subject: m.Subject, Data: m.Data}, nil
}

// tempConsumer makes a short-lived consumer that reads without acks.
func (r Reader) tempConsumer(ctx context.Context, subjects []string, since time.Time) (jetstream.Consumer, func(), error) {
	c, err := r.JS.CreateConsumer(ctx, wire.EventsStream, jetstream.ConsumerConfig{
		Description:       "netpulse detector replay",
		FilterSubjects:    subjects,
		DeliverPolicy:     jetstream.DeliverByStartTimePolicy,
		OptStartTime:      &since,
		AckPolicy:         jetstream.AckNonePolicy,
		MemoryStorage:     true,
		InactiveThreshold: 30 * time.Second, // cleans up after a crash; normally deleted below
	})
	if err != nil {
		return nil, nil, err
	}
	name := c.CachedInfo().Name
	return c, func() {
		dctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = r.JS.DeleteConsumer(dctx, wire.EventsStream, name)
	}, nil
}

// SeqAt returns the sequence of the first message stored at or after t:
// every message below it is older than t.
func (r Reader) SeqAt(ctx context.Context, t time.Time) (uint64, error) {
	c, done, err := r.tempConsumer(ctx, nil, t)
	if err != nil {
		return 0, err
	}
	defer done()
	// A consumer starting at t has "delivered" up to the message before it.
	return c.CachedInfo().Delivered.Stream + 1, nil
}

// replayFetchBytes bounds one replay fetch; more than the largest message
// the server accepts (1 MiB by default).
const replayFetchBytes = 8 << 20

// Replay calls fn for each message on subjects stored at or after since and
// with a sequence below before, in stream order, until ctx ends.
func (r Reader) Replay(ctx context.Context, subjects []string, since time.Time, before uint64, fn func(Msg)) error {
	c, done, err := r.tempConsumer(ctx, subjects, since)
	if err != nil {
		return fmt.Errorf("replay consumer: %w", err)
	}
	defer done()
	if c.CachedInfo().NumPending == 0 {
		return nil
	}
	for {
		// Bounded by bytes too: 256 probe batches of 256 KiB would be the
		// whole 64 MiB a NATS server lets pile up for one connection, which
		// then gets cut off as a slow consumer. (FetchBytes alone would size
		// its channels for a message per byte: megabytes per fetch.)
		batch, err := c.Fetch(256, jetstream.FetchMaxBytes(replayFetchBytes), jetstream.FetchMaxWait(2*time.Second))
		if err != nil {
			return fmt.Errorf("replay fetch: %w", err)
		}
		n := 0
		for m := range batch.Messages() {
			n++
			md, err := m.Metadata()
			if err != nil {
				return fmt.Errorf("replay metadata: %w", err)
			}
			if md.Sequence.Stream >= before {
				return nil
			}
			fn(Msg{Seq: md.Sequence.Stream, Subject: m.Subject(), Data: m.Data()})
			if md.NumPending == 0 {
				return nil
			}
		}
		if err := batch.Error(); err != nil {
			return fmt.Errorf("replay fetch: %w", err)
		}
		if n == 0 {
			return nil // nothing more arrived: what was pending is gone (limits)
		}
		if ctx.Err() != nil {
			return ctx.Err()
		}
	}
}
