package detector

import (
	"context"
	"io"
	"log/slog"
	"testing"
	"time"

	"github.com/netpulse/netpulse/lib/eventpb"
	"github.com/netpulse/netpulse/lib/natsutil"
	"github.com/netpulse/netpulse/lib/testutil/natstest"
)

// The detector connects, creates its durable consumer, decodes and acks
// every batch, and terminates what does not decode.
func TestDetectorConsumes(t *testing.T) {
	ns := natstest.Start(t)
	cfg := DefaultConfig()
	cfg.NATS = cfg.NATS.WithURL(ns.ClientURL())
	d := New(cfg, slog.New(slog.NewTextHandler(io.Discard, nil)))
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- d.Run(ctx) }()

	_, js := natstest.Connect(t, ns)
	deadline, stop := context.WithTimeout(context.Background(), 20*time.Second)
	defer stop()
	// The consumer delivers new events only: wait until it exists.
	for {
		if _, err := js.Consumer(deadline, natsutil.EventsStream, cfg.Consumer.Durable); err == nil {
			break
		}
		select {
		case <-deadline.Done():
			t.Fatal("detector never created its consumer")
		case <-time.After(20 * time.Millisecond):
		}
	}
	subj := natsutil.EventSubject("h1", natsutil.KindState)
	for i := 0; i < 5; i++ {
		b := &eventpb.Batch{SchemaVersion: eventpb.SchemaVersion, Host: "h1", BatchSeq: uint64(i + 1)}
		for j := 0; j < 7; j++ {
			b.Events = append(b.Events, &eventpb.Event{Type: eventpb.EventType_EVENT_TYPE_STATE_CHANGE, Seq: uint64(i*7 + j + 1)})
		}
		data, _ := b.MarshalVT()
		if _, err := js.Publish(deadline, subj, data); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := js.Publish(deadline, subj, []byte("\xffgarbage")); err != nil {
		t.Fatal(err)
	}
	for d.Counters().Events.Load() < 35 || d.Counters().BadMessages.Load() < 1 {
		select {
		case <-deadline.Done():
			t.Fatalf("detector counted %d events, %d bad messages; want 35 and 1", d.Counters().Events.Load(), d.Counters().BadMessages.Load())
		case <-time.After(20 * time.Millisecond):
		}
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatalf("Run: %v", err)
	}
	if got := d.Counters().Messages.Load(); got != 5 {
		t.Errorf("messages %d, want 5", got)
	}
}
