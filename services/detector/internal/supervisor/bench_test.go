package supervisor

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/netpulse/netpulse/lib/testutil/natstest"
	"github.com/netpulse/netpulse/lib/wire"
	"github.com/netpulse/netpulse/services/detector/detect"
)

// Events per second one replica takes from NATS (embedded server, the
// publisher and the detector on the same 2 cores) with a detector that does
// nothing: the framework's ceiling, NATS included.
func BenchmarkThroughNATS(b *testing.B) {
	const perBatch, hosts = 256, 16
	ns := natstest.Start(b)
	nc, _ := natstest.Connect(b, ns)
	js, err := jetstream.New(nc, jetstream.WithPublishAsyncMaxPending(2048))
	if err != nil {
		b.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	reg := &detect.Registry{}
	if err := reg.Register(detect.Plugin{Name: "nop", Kinds: []string{wire.KindState}, Config: func() any { return &struct{}{} }, New: newNop}); err != nil {
		b.Fatal(err)
	}
	cfg := testConfig(b, reg, ns, "r1")
	cfg.Group.MaxAckPending = 4096
	d, err := New(cfg, reg, quietLog())
	if err != nil {
		b.Fatal(err)
	}
	runCtx, stop := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- d.Run(runCtx) }()
	defer func() { stop(); <-done }()
	c := d.Counters("nop")
	waitFor(b, ctx, "partitions", func() bool { return c.Partitions.Load() == int64(cfg.Group.Partitions) })

	data := make([][]byte, hosts)
	for h := range data {
		data[h] = batch(fmt.Sprintf("h%d", h), 1, manyEvents(perBatch)...)
	}
	b.SetBytes(int64(len(data[0])))
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		h := i % hosts
		if _, err := js.PublishAsync(wire.EventSubject(fmt.Sprintf("h%d", h), wire.KindState), data[h]); err != nil {
			b.Fatal(err)
		}
	}
	<-js.PublishAsyncComplete()
	waitFor(b, ctx, "every batch", func() bool { return c.Messages.Load()+c.Duplicates.Load() >= uint64(b.N) })
	b.StopTimer()
	b.ReportMetric(float64(b.N*perBatch)/b.Elapsed().Seconds(), "events/s")
}
