package publish

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"slices"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/netpulse/netpulse/lib/config"
	"github.com/netpulse/netpulse/lib/natsutil"
	"github.com/netpulse/netpulse/lib/testutil/natstest"
	"github.com/netpulse/netpulse/lib/wire"
	"github.com/netpulse/netpulse/services/probe/internal/batch"
)

var quiet = slog.New(slog.NewTextHandler(io.Discard, nil))

func setup(t *testing.T, s *server.Server) (jetstream.JetStream, jetstream.Stream) {
	t.Helper()
	nc, err := natsutil.Connect(config.DefaultNATS().WithURL(s.ClientURL()), "test", quiet)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	st, err := natsutil.EnsureEventsStream(ctx, js, config.DefaultStream(), quiet)
	if err != nil {
		t.Fatal(err)
	}
	return js, st
}

func mkBatch(seq uint64) batch.Batch {
	return batch.Batch{Seq: seq, Events: 10, Data: []byte(fmt.Sprintf("batch-%d", seq)),
		Subject: "netpulse.events.h1.state", MsgID: fmt.Sprintf("probe1-state-%d", seq)}
}

// Every batch is stored once, even when the same message ID is published
// twice (a retry after a lost ack).
func TestPublishStoresEachBatchOnce(t *testing.T) {
	js, st := setup(t, natstest.Start(t))
	p := New(DefaultConfig(), js, quiet)
	go p.Run(context.Background())
	ctx := context.Background()
	for seq := uint64(1); seq <= 100; seq++ {
		if err := p.Publish(ctx, mkBatch(seq)); err != nil {
			t.Fatal(err)
		}
	}
	// A duplicate of batch 7, as a retry would send it.
	if err := p.Publish(ctx, mkBatch(7)); err != nil {
		t.Fatal(err)
	}
	p.Close()
	<-p.Done()
	info, err := st.Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if info.State.Msgs != 100 {
		t.Errorf("stream holds %d messages, want 100", info.State.Msgs)
	}
	c := p.Counters()
	if c.BatchesPublished != 101 || c.EventsDropped != 0 {
		t.Errorf("counters %+v; want 101 acked (the duplicate is acked too), none dropped", c)
	}
}

// A server that goes away and comes back loses nothing: the publisher
// retries with the same message IDs until the server acknowledges.
func TestPublishSurvivesServerRestart(t *testing.T) {
	dir := t.TempDir()
	s, err := natstest.New(dir)
	if err != nil {
		t.Fatal(err)
	}
	port := s.Addr().(interface{ String() string }).String()
	js, _ := setup(t, s)
	cfg := DefaultConfig()
	cfg.AckTimeout = 500 * time.Millisecond
	p := New(cfg, js, quiet)
	go p.Run(context.Background())
	ctx := context.Background()
	for seq := uint64(1); seq <= 20; seq++ {
		if err := p.Publish(ctx, mkBatch(seq)); err != nil {
			t.Fatal(err)
		}
	}
	s.Shutdown()
	s.WaitForShutdown()
	for seq := uint64(21); seq <= 40; seq++ {
		if err := p.Publish(ctx, mkBatch(seq)); err != nil {
			t.Fatal(err)
		}
	}
	s2, err := natstest.NewAt(dir, port)
	if err != nil {
		t.Fatal(err)
	}
	defer s2.Shutdown()
	p.Close()
	select {
	case <-p.Done():
	case <-time.After(60 * time.Second):
		t.Fatalf("publisher did not finish after the server came back: %+v", p.Counters())
	}
	nc, err := nats.Connect(s2.ClientURL())
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	js2, _ := jetstream.New(nc)
	st, err := js2.Stream(ctx, wire.EventsStream)
	if err != nil {
		t.Fatal(err)
	}
	info, _ := st.Info(ctx)
	c := p.Counters()
	if info.State.Msgs != 40 || c.EventsDropped != 0 || c.EventsPublished != 400 {
		t.Errorf("stream holds %d messages (want 40); counters %+v (want 400 events published, 0 dropped)", info.State.Msgs, c)
	}
	if c.PublishErrors == 0 {
		t.Errorf("no publish error was counted although the server was down")
	}
}

// flaky is a server that fails the first `fails` synchronous publishes; it
// records the message ID of each.
type flaky struct {
	jetstream.JetStream // only PublishMsg is called
	fails               int
	ids                 []string
}

func (f *flaky) PublishMsg(_ context.Context, m *nats.Msg, _ ...jetstream.PublishOpt) (*jetstream.PubAck, error) {
	f.ids = append(f.ids, m.Header.Get(jetstream.MsgIDHeader))
	if len(f.ids) <= f.fails {
		return nil, errors.New("server away")
	}
	return &jetstream.PubAck{}, nil
}

// A batch whose first attempt failed is retried with its message ID until
// acknowledged, every failed attempt counted; when stop ends first it is
// given up.
func TestAwaitRetries(t *testing.T) {
	cfg := DefaultConfig()
	cfg.RetryBackoff = time.Millisecond
	js := &flaky{fails: 2}
	p := New(cfg, js, quiet)
	b := mkBatch(3)
	msg := nats.NewMsg(b.Subject)
	msg.Header.Set(jetstream.MsgIDHeader, b.MsgID)
	if !p.await(context.Background(), &job{msg: msg, events: b.Events, err: errors.New("not sent")}) {
		t.Fatal("await gave up")
	}
	if want := []string{b.MsgID, b.MsgID, b.MsgID}; !slices.Equal(js.ids, want) {
		t.Errorf("retries sent message IDs %q, want %q", js.ids, want)
	}
	if c := p.Counters(); c.PublishErrors != 3 || c.BatchesPublished != 1 || c.EventsPublished != 10 {
		t.Errorf("counters %+v; want 3 errors (the first attempt and 2 retries), 1 batch of 10 published", c)
	}

	stop, cancel := context.WithCancel(context.Background())
	js.fails, js.ids = 1<<30, nil
	time.AfterFunc(50*time.Millisecond, cancel)
	if p.await(stop, &job{msg: msg, events: b.Events, err: errors.New("not sent")}) {
		t.Fatal("await succeeded against a server that never answers")
	}
}
