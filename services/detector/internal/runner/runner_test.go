package runner

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net/netip"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/netpulse/netpulse/lib/eventpb"
	"github.com/netpulse/netpulse/services/detector/detect"
	"github.com/netpulse/netpulse/services/detector/internal/clock"
	"github.com/netpulse/netpulse/services/detector/internal/group"
	"github.com/netpulse/netpulse/services/detector/internal/lifecycle"
)

func TestSourceSeq(t *testing.T) {
	h := nats.Header{}
	if sourceSeq(h) != 0 {
		t.Error("no header must give 0")
	}
	// As nats-server 2.15 writes it for a sourced, transformed message.
	h.Set("Nats-Stream-Source", "NETPULSE_EVENTS 4711 netpulse.events.*.state {{Partition(4,1)}}.netpulse.events.{{Wildcard(1)}}.state netpulse.events.h1.state rRVoOyzH")
	if got := sourceSeq(h); got != 4711 {
		t.Errorf("sourceSeq = %d", got)
	}
	h.Set("Nats-Stream-Source", "NETPULSE_EVENTS x")
	if sourceSeq(h) != 0 {
		t.Error("garbage must give 0")
	}
}

type nopDetector struct{ events int }

func (n *nopDetector) Observe(in detect.Input)               { n.events += len(in.Batch.Events) }
func (n *nopDetector) Evaluate(time.Time) []detect.Condition { return nil }

// fakeMsg is the part of a delivered message the runner uses.
type fakeMsg struct {
	jetstream.Msg
	subject string
	data    []byte
	header  nats.Header
	acked   *atomic.Uint64
}

func (m *fakeMsg) Subject() string                  { return m.subject }
func (m *fakeMsg) Data() []byte                     { return m.data }
func (m *fakeMsg) Headers() nats.Header             { return m.header }
func (m *fakeMsg) Ack() error                       { m.acked.Add(1); return nil }
func (m *fakeMsg) NakWithDelay(time.Duration) error { return nil }

// sampleBatch is n realistic state changes of one host.
func sampleBatch(host string, n int) []byte {
	src, dst := netip.MustParseAddr("10.1.2.3").AsSlice(), netip.MustParseAddr("10.9.8.7").AsSlice()
	b := &eventpb.Batch{SchemaVersion: eventpb.SchemaVersion, Host: host, ProbeId: "p-1", BatchSeq: 1}
	for i := 0; i < n; i++ {
		b.Events = append(b.Events, &eventpb.Event{
			Type: eventpb.EventType_EVENT_TYPE_STATE_CHANGE, TimeUnixNano: uint64(time.Now().UnixNano()), Seq: uint64(i + 1),
			Pid: 4242, Tid: 4243, Comm: "nginx", Family: eventpb.Family_FAMILY_IPV4, Saddr: src, Daddr: dst,
			Sport: uint32(30000 + i), Dport: 443, OldState: eventpb.TcpState_TCP_STATE_SYN_SENT, NewState: eventpb.TcpState_TCP_STATE_ESTABLISHED,
			StateDurationUs: 812, SockId: uint64(i), OwnerSource: eventpb.OwnerSource_OWNER_SOURCE_TASK, CgroupId: 77,
			HandshakeUs: 812, Side: eventpb.Side_SIDE_CLIENT,
		})
	}
	data, err := b.MarshalVT()
	if err != nil {
		panic(err)
	}
	return data
}

func benchRunner(partitions int) *Runner {
	p := detect.Plugin{Name: "nop", Kinds: []string{"state"}, Config: func() any { return &struct{}{} },
		New: func(any, string) (detect.Instance, error) { return &nopDetector{}, nil }}
	r := New(Settings{Plugin: p, Group: group.Spec{Partitions: partitions}, EvaluateInterval: time.Hour, IdleTimeout: time.Hour},
		Deps{Clock: clock.Real{}, Log: slog.New(slog.NewTextHandler(io.Discard, nil))})
	r.ctx = context.Background()
	for p, w := range r.workers {
		r.part[p].Store(1) // owned, epoch 0
		w.ctx = r.ctx
	}
	return r
}

// The framework's cost per event with a detector that does nothing: decode
// the batch once, check it, route it to its host's instance, acknowledge.
func BenchmarkHandle(b *testing.B) {
	const perBatch = 256
	r := benchRunner(1)
	w := r.workers[0]
	inst := &nopDetector{}
	w.hosts["web-1"] = &hostState{inst: inst, tr: lifecycle.New(lifecycle.Settings{Detector: "nop", Host: "web-1"})}
	data := sampleBatch("web-1", perBatch)
	var acked atomic.Uint64
	m := &fakeMsg{acked: &acked}
	b.SetBytes(int64(len(data)))
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		w.handle(delivery{msg: m, subject: "netpulse.events.web-1.state", host: "web-1", kind: "state", seq: uint64(i + 1), data: data, state: 1})
	}
	b.StopTimer()
	if inst.events != b.N*perBatch || acked.Load() != uint64(b.N) {
		b.Fatalf("observed %d events, acked %d", inst.events, acked.Load())
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*perBatch), "ns/event")
	b.ReportMetric(float64(b.N*perBatch)/b.Elapsed().Seconds(), "events/s")
}

// The same through the consumer callback: parse the subject and the source
// header, hash the host to its partition, hand over to that partition's
// goroutine (16 partitions, 64 hosts), then as above.
func BenchmarkDispatch(b *testing.B) {
	const perBatch, hosts = 256, 64
	r := benchRunner(16)
	ctx, cancel := context.WithCancel(context.Background())
	r.ctx = ctx
	done := make(chan struct{})
	for _, w := range r.workers {
		go func() { w.run(ctx); done <- struct{}{} }()
	}
	var acked atomic.Uint64
	msgs := make([]*fakeMsg, hosts)
	for h := range msgs {
		host := fmt.Sprintf("host-%d", h)
		msgs[h] = &fakeMsg{subject: "netpulse.events." + host + ".state", data: sampleBatch(host, perBatch), header: nats.Header{}, acked: &acked}
		w := r.workers[group.Partition(host, 16)]
		w.hosts[host] = &hostState{inst: &nopDetector{}, tr: lifecycle.New(lifecycle.Settings{Detector: "nop", Host: host})}
	}
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		m := msgs[i%hosts]
		m.header.Set("Nats-Stream-Source", fmt.Sprintf("NETPULSE_EVENTS %d x y %s", i+1, m.subject))
		r.onMsg(m)
	}
	for acked.Load() < uint64(b.N) {
		time.Sleep(time.Microsecond) // (benchmark tail only) wait for the workers to drain
	}
	b.StopTimer()
	cancel()
	for range r.workers {
		<-done
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*perBatch), "ns/event")
	b.ReportMetric(float64(b.N*perBatch)/b.Elapsed().Seconds(), "events/s")
}
