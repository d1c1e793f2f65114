package supervisor

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/netpulse/netpulse/lib/config"
	"github.com/netpulse/netpulse/lib/eventpb"
	"github.com/netpulse/netpulse/lib/natsutil"
	"github.com/netpulse/netpulse/lib/wire"
	"github.com/netpulse/netpulse/services/detector/detect"
)

type nop struct{}

func (nop) Observe(detect.Input)                  {}
func (nop) Evaluate(time.Time) []detect.Condition { return nil }

func newNop(any, string) (detect.Instance, error) { return nop{}, nil }

// The marker plugin raises one condition per "marker" a host announced:
// an event with pid FirePid and sport N raises marker N, one with ClearPid
// clears it, one with PanicPid makes Observe panic. It records every batch
// it observes.
type markerConfig struct {
	FirePid  uint32 `koanf:"fire_pid"`
	ClearPid uint32 `koanf:"clear_pid"`
	PanicPid uint32 `koanf:"panic_pid"`
}

type observation struct {
	host     string
	replica  string
	batchSeq uint64
	replay   bool
	at       time.Time
}

// recorder collects observations from every replica in one order.
type recorder struct {
	mu   sync.Mutex
	obs  []observation
	dead map[string]bool // replicas killed: a dead process observes nothing
}

func (r *recorder) add(o observation) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if !r.dead[o.replica] {
		r.obs = append(r.obs, o)
	}
}

func (r *recorder) kill(replica string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.dead == nil {
		r.dead = map[string]bool{}
	}
	r.dead[replica] = true
}

func (r *recorder) snapshot() []observation {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]observation(nil), r.obs...)
}

type marker struct {
	cfg     *markerConfig
	host    string
	replica string
	rec     *recorder
	active  map[uint32]bool
}

func (m *marker) Observe(in detect.Input) {
	if m.rec != nil {
		m.rec.add(observation{host: in.Host, replica: m.replica, batchSeq: in.Batch.BatchSeq, replay: in.Replay, at: time.Now()})
	}
	for _, e := range in.Batch.Events {
		switch e.Pid {
		case m.cfg.FirePid:
			m.active[e.Sport] = true
		case m.cfg.ClearPid:
			delete(m.active, e.Sport)
		case m.cfg.PanicPid:
			panic("marker: asked to panic")
		}
	}
}

func (m *marker) Evaluate(time.Time) []detect.Condition {
	var out []detect.Condition
	for id := range m.active {
		out = append(out, detect.Condition{
			Labels:   map[string]string{"marker": strconv.Itoa(int(id))},
			Details:  map[string]string{"markers": strconv.Itoa(len(m.active))},
			Severity: detect.Warning, Value: float64(id), Threshold: 1,
			Summary: fmt.Sprintf("marker %d on %s", id, m.host),
		})
	}
	return out
}

// markerRegistry registers the marker plugin as "marker" for one replica.
func markerRegistry(t testing.TB, replica string, rec *recorder) *detect.Registry {
	reg := &detect.Registry{}
	err := reg.Register(detect.Plugin{
		Name: "marker", Description: "test plugin", Kinds: []string{wire.KindState},
		Config: func() any { return &markerConfig{FirePid: 666, ClearPid: 667, PanicPid: 999} },
		New: func(cfg any, host string) (detect.Instance, error) {
			return &marker{cfg: cfg.(*markerConfig), host: host, replica: replica, rec: rec, active: map[uint32]bool{}}, nil
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	return reg
}

// testConfig is a validated configuration for a test server, fast timings.
func testConfig(t testing.TB, reg *detect.Registry, s *server.Server, replica string) Config {
	t.Helper()
	cfg, err := DefaultConfigFor(reg)
	if err != nil {
		t.Fatal(err)
	}
	cfg.NATS = cfg.NATS.WithURL(s.ClientURL())
	cfg.EvaluateInterval = 50 * time.Millisecond
	cfg.Warmup = time.Minute
	cfg.Group.Partitions = 8
	cfg.Group.Replica = replica
	cfg.Group.MemberTTL = 2 * time.Second
	cfg.Group.AckWait = 2 * time.Second
	cfg.Stats.Interval = time.Second
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}
	return cfg
}

func quietLog() *slog.Logger {
	if testing.Verbose() {
		return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	return slog.New(slog.NewTextHandler(io.Discard, nil))
}

// event is a state-change event of the marker protocol.
func event(pid, id uint32) *eventpb.Event {
	return &eventpb.Event{Type: eventpb.EventType_EVENT_TYPE_STATE_CHANGE, Pid: pid, Sport: id, TimeUnixNano: uint64(time.Now().UnixNano())}
}

// manyEvents is n ordinary state changes.
func manyEvents(n int) []*eventpb.Event {
	out := make([]*eventpb.Event, n)
	for i := range out {
		out[i] = &eventpb.Event{Type: eventpb.EventType_EVENT_TYPE_STATE_CHANGE, Pid: 4242, Comm: "nginx", Sport: uint32(30000 + i), Dport: 443,
			Saddr: []byte{10, 1, 2, 3}, Daddr: []byte{10, 9, 8, 7}, OldState: eventpb.TcpState_TCP_STATE_SYN_SENT,
			NewState: eventpb.TcpState_TCP_STATE_ESTABLISHED, TimeUnixNano: uint64(time.Now().UnixNano()), Seq: uint64(i + 1)}
	}
	return out
}

func batch(host string, seq uint64, events ...*eventpb.Event) []byte {
	b := &eventpb.Batch{SchemaVersion: eventpb.SchemaVersion, Host: host, BatchSeq: seq, Events: events}
	data, err := b.MarshalVT()
	if err != nil {
		panic(err)
	}
	return data
}

// waitFor polls cond until it holds or the deadline passes.
func waitFor(t testing.TB, ctx context.Context, what string, cond func() bool) {
	t.Helper()
	for !cond() {
		select {
		case <-ctx.Done():
			t.Fatalf("timed out waiting for %s", what)
		case <-time.After(10 * time.Millisecond):
		}
	}
}

// publish stores one message in NETPULSE_EVENTS.
func publish(t testing.TB, ctx context.Context, js jetstream.JetStream, subject string, data []byte) uint64 {
	t.Helper()
	a, err := js.Publish(ctx, subject, data)
	if err != nil {
		t.Fatal(err)
	}
	return a.Sequence
}

// crashable is a replica whose NATS connections a test can cut.
type crashable struct {
	*Supervisor
	mu    sync.Mutex
	conns []*nats.Conn
}

// newCrashable is New with the connections recorded.
func newCrashable(cfg Config, reg *detect.Registry, log *slog.Logger) (*crashable, error) {
	c := &crashable{}
	s, err := New(cfg, reg, log, WithDialer(func(cfg config.NATS, name string, log *slog.Logger) (*nats.Conn, error) {
		nc, err := natsutil.Connect(cfg, name, log)
		if err == nil {
			c.mu.Lock()
			c.conns = append(c.conns, nc)
			c.mu.Unlock()
		}
		return nc, err
	}))
	c.Supervisor = s
	return c, err
}

// crash cuts every connection of the replica: no leave, no drain, like a
// killed process.
func (c *crashable) crash() {
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, nc := range c.conns {
		nc.Close()
	}
}
