package natsutil

import (
	"context"
	"io"
	"log/slog"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/netpulse/netpulse/lib/config"
	"github.com/netpulse/netpulse/lib/testutil/natstest"
)

// Any service may create or update the stream at start, in any order.
func TestEnsureEventsStreamIsIdempotent(t *testing.T) {
	s := natstest.Start(t)
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	nc, err := Connect(config.DefaultNATS().WithURL(s.ClientURL()), "test", log)
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	js, _ := jetstream.New(nc)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	cfg := config.DefaultStream()
	for i := 0; i < 2; i++ {
		if _, err := EnsureEventsStream(ctx, js, cfg, log); err != nil {
			t.Fatalf("round %d: %v", i, err)
		}
	}
	cfg.MaxAge = 2 * time.Hour // a changed limit is applied in place
	st, err := EnsureEventsStream(ctx, js, cfg, log)
	if err != nil {
		t.Fatal(err)
	}
	info, err := st.Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if info.Config.MaxAge != 2*time.Hour || info.Config.MaxBytes != cfg.MaxBytes || info.Config.Subjects[0] != "netpulse.events.>" {
		t.Errorf("stream config %+v", info.Config)
	}
}

func TestStreamDiffers(t *testing.T) {
	want := StreamConfig(config.DefaultStream(), "S", "d", "s.>")
	cur := want
	cur.MaxMsgs, cur.MaxConsumers, cur.Metadata = -1, -1, map[string]string{"_nats.ver": "2.15"} // server defaults
	if StreamDiffers(cur, want) {
		t.Error("server defaults count as a difference")
	}
	for name, mutate := range map[string]func(*jetstream.StreamConfig){
		"max_age":  func(c *jetstream.StreamConfig) { c.MaxAge = time.Hour },
		"subjects": func(c *jetstream.StreamConfig) { c.Subjects = []string{"other.>"} },
		"replicas": func(c *jetstream.StreamConfig) { c.Replicas = 3 },
		"storage":  func(c *jetstream.StreamConfig) { c.Storage = jetstream.MemoryStorage },
		"discard":  func(c *jetstream.StreamConfig) { c.Discard = jetstream.DiscardNew },
	} {
		c := cur
		mutate(&c)
		if !StreamDiffers(c, want) {
			t.Errorf("%s: no difference seen", name)
		}
	}
}
