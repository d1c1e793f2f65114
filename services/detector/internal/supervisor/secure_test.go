package supervisor

import (
	"context"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/netpulse/netpulse/lib/alert"
	"github.com/netpulse/netpulse/lib/config"
	"github.com/netpulse/netpulse/lib/eventpb"
	"github.com/netpulse/netpulse/lib/natsutil"
	"github.com/netpulse/netpulse/lib/natsutil/securetest"
	"github.com/netpulse/netpulse/lib/testutil/logbuf"
	"github.com/netpulse/netpulse/lib/wire"
	"github.com/netpulse/netpulse/services/detector/detect"
	_ "github.com/netpulse/netpulse/services/detector/detectors/all"
)

// leakSnapshot is a probe snapshot of host with 20 CLOSE_WAIT sockets an
// hour old, held by pid 300 on port 9090: a leak for conn_leak.
func leakSnapshot(host string, seq uint64) []byte {
	snap := &eventpb.Snapshot{
		TimeUnixNano: uint64(time.Now().UnixNano()), Seq: seq, Seeded: true, IntervalMs: 15000, CloseWaitTotal: 20,
		Groups: []*eventpb.SocketGroup{{State: eventpb.TcpState_TCP_STATE_CLOSE_WAIT, Pid: 300, Comm: "leaky", LocalPort: 9090, Count: 20}},
	}
	for i := range 20 {
		snap.CloseWait = append(snap.CloseWait, &eventpb.SnapshotSocket{
			SockId: uint64(i + 1), Pid: 300, Comm: "leaky", Family: eventpb.Family_FAMILY_IPV4,
			Saddr: []byte{127, 0, 0, 1}, Daddr: []byte{127, 0, 0, 1}, Sport: 9090, Dport: uint32(40000 + i),
			Side: eventpb.Side_SIDE_SERVER, AgeUs: uint64(time.Hour / time.Microsecond),
		})
	}
	b := &eventpb.Batch{SchemaVersion: eventpb.SchemaVersion, Host: host, ProbeId: "p1", BatchSeq: seq, Snapshot: snap}
	data, err := b.MarshalVT()
	if err != nil {
		panic(err)
	}
	return data
}

// The real detector, all four built-in detectors, as the detector user of
// the shipped accounts on a TLS-only server: it creates its streams,
// buckets and groups, replays a host's history, consumes, fires an alert,
// dead-letters a bad batch, shares its partitions with a second replica
// and leaves — and the server refuses it nothing.
func TestDetectorWithShippedAccounts(t *testing.T) {
	n := securetest.StartNATS(t, "web-1")
	ctx, cancel := context.WithTimeout(context.Background(), 40*time.Second)
	defer cancel()
	quiet := quietLog()

	// The probe of web-1: its stream, a snapshot with a leak before the
	// detector starts (replayed at takeover) and a bad batch.
	pnc, err := natsutil.Connect(n.Config(securetest.Probe("web-1")), "probe", quiet)
	if err != nil {
		t.Fatal(err)
	}
	defer pnc.Close()
	pjs, _ := jetstream.New(pnc)
	if _, err := natsutil.EnsureEventsStream(ctx, pjs, config.DefaultStream(), quiet); err != nil {
		t.Fatal(err)
	}
	publish(t, ctx, pjs, wire.EventSubject("web-1", wire.KindSnapshot), leakSnapshot("web-1", 1))
	publish(t, ctx, pjs, wire.EventSubject("web-1", wire.KindState), batch("web-1", 1, event(1, 0)))

	// A user watching alerts (the viewer).
	vnc, err := natsutil.Connect(n.Config(securetest.Viewer), "viewer", quiet)
	if err != nil {
		t.Fatal(err)
	}
	defer vnc.Close()
	alerts := subscribeAlerts(t, vnc)

	var logs logbuf.Buffer
	log := slog.New(slog.NewTextHandler(&logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	replica := func(name string) (*Supervisor, context.CancelFunc, func() error) {
		cfg, err := DefaultConfigFor(detect.Default)
		if err != nil {
			t.Fatal(err)
		}
		cfg.NATS = n.Config(securetest.Detector)
		cfg.EvaluateInterval = 100 * time.Millisecond
		cfg.Group.Partitions = 4
		cfg.Group.Replica = name
		cfg.Group.MemberTTL = 2 * time.Second
		cfg.Group.AckWait = 2 * time.Second
		cfg.Stats.Interval = time.Second
		if err := cfg.Validate(); err != nil {
			t.Fatal(err)
		}
		if n := len(detect.Default.Names()); len(cfg.Selected()) != n {
			t.Fatalf("runs %d detectors, want the %d built-in ones", len(cfg.Selected()), n)
		}
		d, err := New(cfg, detect.Default, log.With("replica", name))
		if err != nil {
			t.Fatal(err)
		}
		rctx, stop := context.WithCancel(context.Background())
		exited := make(chan struct{})
		var runErr error
		go func() { runErr = d.Run(rctx); close(exited) }()
		wait := func() error {
			select {
			case <-exited:
				return runErr
			case <-time.After(20 * time.Second):
				t.Errorf("replica %s did not stop within 20 s", name)
				return nil
			}
		}
		t.Cleanup(func() { stop(); _ = wait() })
		return d, stop, wait
	}
	owned := func(ds ...*Supervisor) map[string]int64 {
		out := map[string]int64{}
		for _, d := range ds {
			for name, c := range d.counters {
				out[name] += c.Partitions.Load()
			}
		}
		return out
	}
	all := func(ds ...*Supervisor) bool {
		o := owned(ds...)
		for _, p := range o {
			if p != 4 {
				return false
			}
		}
		return len(o) == len(detect.Default.Names())
	}

	r1, stop1, wait1 := replica("r1")
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("server violations:\n%s\ndetector log:\n%s", strings.Join(n.Violations(), "\n"), logs.String())
		}
	})
	waitFor(t, ctx, "r1 to own every partition", func() bool { return all(r1) })
	subj, a := alerts.next(t, ctx)
	if subj != "netpulse.alerts.conn_leak.warning.web-1" || a.Status != alert.Firing || a.Labels["local_port"] != "9090" {
		t.Fatalf("alert on %s: %+v", subj, a)
	}
	publish(t, ctx, pjs, wire.EventSubject("web-1", wire.KindState), []byte("\xff\xffnot protobuf"))
	waitFor(t, ctx, "the bad batch dead-lettered", func() bool {
		return r1.Counters("conn_leak").DeadLettered.Load() > 0 || r1.Counters("slow_handshake").DeadLettered.Load() > 0
	})

	// A second replica: the partitions are shared, then r1 leaves and r2
	// holds them all.
	r2, _, _ := replica("r2")
	waitFor(t, ctx, "r1 and r2 to share the partitions", func() bool {
		o1, o2 := owned(r1), owned(r2)
		return all(r1, r2) && o1["conn_leak"] > 0 && o2["conn_leak"] > 0
	})
	stop1()
	if err := wait1(); err != nil {
		t.Fatalf("r1: %v", err)
	}
	waitFor(t, ctx, "r2 to own every partition", func() bool { return all(r2) })
	publish(t, ctx, pjs, wire.EventSubject("web-1", wire.KindSnapshot), leakSnapshot("web-1", 2))
	waitFor(t, ctx, "r2 to see the snapshot", func() bool { return r2.Counters("conn_leak").Messages.Load() > 0 })
	alerts.none(t, time.Second) // the alert moved with the host: not fired again

	if v := n.Violations(); len(v) > 0 {
		t.Errorf("the server refused the detector or the viewer:\n%s", strings.Join(v, "\n"))
	}
	if strings.Contains(logs.String(), "Permissions Violation") {
		t.Errorf("the detector's log reports a refusal:\n%s", logs.String())
	}
	if pw := n.Passwords[securetest.Detector]; strings.Contains(logs.String(), pw) {
		t.Error("the detector's password is in its log")
	}

	// The detector's user may not publish a probe's events.
	dnc, err := natsutil.Connect(n.Config(securetest.Detector), "detector", quiet)
	if err != nil {
		t.Fatal(err)
	}
	defer dnc.Close()
	if err := dnc.Publish(wire.EventSubject("web-1", wire.KindState), nil); err != nil {
		t.Fatal(err)
	}
	waitFor(t, ctx, "the server to refuse the detector a probe's subject", func() bool {
		_ = dnc.Flush()
		err := dnc.LastError()
		return err != nil && strings.Contains(err.Error(), `Permissions Violation for Publish to "netpulse.events.web-1.state"`)
	})
}
