package supervisor

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"

	"github.com/netpulse/netpulse/lib/testutil/natstest"
	"github.com/netpulse/netpulse/lib/wire"
	"github.com/netpulse/netpulse/services/detector/detect"
)

// A detector kind stuck in Observe holds back no other kind: the other
// handles every batch meanwhile, each kind has a NATS connection of its
// own, and the stuck one catches up once released.
func TestStuckKindHoldsBackNoOther(t *testing.T) {
	ns := natstest.Start(t)
	_, js := natstest.Connect(t, ns)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	release := make(chan struct{})
	stuck := func(any, string) (detect.Instance, error) {
		return observeFunc(func(detect.Input) { <-release }), nil
	}
	reg := &detect.Registry{}
	for _, p := range []detect.Plugin{
		{Name: "stuck", Kinds: []string{wire.KindState}, Config: func() any { return &struct{}{} }, New: stuck},
		{Name: "free", Kinds: []string{wire.KindState}, Config: func() any { return &struct{}{} }, New: newNop},
	} {
		if err := reg.Register(p); err != nil {
			t.Fatal(err)
		}
	}
	cfg := testConfig(t, reg, ns, "r1")
	d, err := New(cfg, reg, quietLog())
	if err != nil {
		t.Fatal(err)
	}
	startDetector(t, ctx, d, cfg.Group.Partitions)
	released := false
	defer func() {
		if !released {
			close(release)
		}
	}()

	const batches = 300
	for i := range batches {
		host := []string{"h1", "h2", "h3"}[i%3]
		publish(t, ctx, js, wire.EventSubject(host, wire.KindState), batch(host, uint64(i/3+1), manyEvents(64)...))
	}
	free, held := d.Counters("free"), d.Counters("stuck")
	waitFor(t, ctx, "the free kind to handle every batch", func() bool { return free.Messages.Load() == batches })
	// At most one batch per worker got into the stuck Observe calls.
	if n := held.Messages.Load(); n > batches/10 {
		t.Errorf("the stuck kind handled %d batches while stuck", n)
	}

	connz, err := ns.Connz(&server.ConnzOptions{})
	if err != nil {
		t.Fatal(err)
	}
	perKind := map[string]bool{}
	for _, c := range connz.Conns {
		for _, k := range []string{"stuck", "free"} {
			if strings.HasSuffix(c.Name, " r1 "+k) {
				perKind[k] = true
			}
		}
	}
	if len(perKind) != 2 {
		t.Errorf("connections per kind: %v, want one for stuck and one for free", perKind)
	}
	close(release)
	released = true
	waitFor(t, ctx, "the stuck kind to catch up", func() bool { return held.Messages.Load()+held.Duplicates.Load() >= batches })
}
