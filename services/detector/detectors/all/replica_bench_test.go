package all

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"net/http"
	"os/exec"
	"runtime/pprof"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/netpulse/netpulse/lib/eventpb"
	"github.com/netpulse/netpulse/lib/testutil/freeport"
	"github.com/netpulse/netpulse/lib/testutil/logbuf"
	"github.com/netpulse/netpulse/lib/testutil/natstest"
	"github.com/netpulse/netpulse/lib/testutil/procstat"
	"github.com/netpulse/netpulse/lib/wire"
	"github.com/netpulse/netpulse/services/detector/detect"
	"github.com/netpulse/netpulse/services/detector/detectors/internal/dtest"
	"github.com/netpulse/netpulse/services/detector/internal/clock"
	"github.com/netpulse/netpulse/services/detector/internal/runner"
	"github.com/netpulse/netpulse/services/detector/internal/supervisor"
)

var (
	replicaHosts = flag.Int("bench.hosts", 64, "BenchmarkReplica: hosts whose traffic one replica handles")
	replicaConns = flag.Float64("bench.conns", 300, "BenchmarkReplica: connections per second on each host (2/3 accepted, 1/3 opened)")
	natsServer   = flag.String("bench.nats-server", "", "BenchmarkReplica: run this nats-server binary as a process of its own "+
		"(events/cpu_s is then the replica's and the publisher's alone; server_cpus is the server's); empty: embedded")
)

// BenchmarkReplica: what one real replica (the framework, its consumer
// group on an embedded JetStream, the real detector with its defaults)
// handles, per detector. A fleet of -bench.hosts healthy hosts
// (dtest.Healthy at -bench.conns connections/s each, only the detector's
// kinds) publishes probe-encoded batches, one per kind at most every 200 ms
// (the probe's flush interval), while the replica consumes them. One op is
// one second of the whole fleet's traffic: -benchtime 20x is 20 s of it.
//
// The replica's clock is a fake one that moves by evaluate_interval each
// time the replica has handled every batch up to the new time: each host is
// evaluated once per evaluate_interval of its traffic, as in production,
// however fast the backlog goes. (Keep the fleet's seconds below warmup,
// 300: the fake clock would run so far ahead of the wall clock that the
// replica skips the early batches as stale, and the benchmark fails.)
//
// Figures: events/s from the first publish to the last batch handled;
// events/cpu_s per CPU second of the whole process (user+sys), which also
// runs the publisher and, unless -bench.nats-server runs it apart (as make
// bench does), the NATS server: conservative for the replica alone; x_realtime is how many times faster than real time the fleet's
// traffic went through (>1: one replica keeps up with that fleet);
// redelivered counts batches the server sent again (acked after ack_wait)
// and slow_consumers the connections it cut. A healthy fleet raises no
// alert, and every batch is observed exactly once: the benchmark fails
// otherwise (a stall of a minute fails with where the batches are).
func BenchmarkReplica(b *testing.B) {
	for _, name := range detect.Default.Names() {
		b.Run(name, func(b *testing.B) { benchReplica(b, name) })
	}
}

// flushInterval is the probe's default batch.flush_interval: a batch holds
// at most this long of one kind's records.
const flushInterval = 200 * time.Millisecond

// fleetMsg is one batch of one host's traffic, without its header.
type fleetMsg struct {
	kind int // index into the plugin's kinds
	body []byte
}

func benchReplica(b *testing.B, name string) {
	p, _ := detect.Default.Lookup(name)
	hosts, seconds := *replicaHosts, b.N
	start := time.Now().Truncate(time.Second)
	cfg, err := supervisor.DefaultConfigFor(detect.Default)
	if err != nil {
		b.Fatal(err)
	}
	// The clock moves by the configured evaluate_interval, so each host is
	// evaluated as often per second of traffic as in production.
	every := cfg.EvaluateInterval

	// One host's traffic, published under every host's name: each host has
	// its own detector instance, so identical content costs the same.
	tr := dtest.Healthy(11, time.Duration(seconds)*time.Second)
	tr.Start = start
	tr.ServerConns, tr.ClientConns = *replicaConns*2/3, *replicaConns/3
	// Drop counts every second rather than the probe's 10 s: each op (one
	// second of traffic) then carries some, and the drop detectors are
	// measured at ten times a fleet's drop-count volume.
	tr.DropEvery = time.Second
	// Cut into the probe's flush periods (a batch never spans two), not
	// into evaluation periods: batches as big as the probe makes them.
	end := start.Add(time.Duration(seconds) * time.Second)
	steps := tr.Stream().Steps(start, end, flushInterval, flushInterval, p.Kinds)
	perStep := make([][]fleetMsg, len(steps))
	// through[k]: batches of the whole fleet up to and including step k.
	through := make([]uint64, len(steps))
	var msgs uint64
	events := 0
	for k, st := range steps {
		for _, in := range st.Inputs {
			body, err := (&eventpb.Batch{Events: in.Batch.Events, Connections: in.Batch.Connections, Snapshot: in.Batch.Snapshot, Drops: in.Batch.Drops}).MarshalVT()
			if err != nil {
				b.Fatal(err)
			}
			n := wire.Records(in.Batch)
			perStep[k] = append(perStep[k], fleetMsg{kind: slices.Index(p.Kinds, in.Kind), body: body})
			events += n * hosts
		}
		msgs += uint64(len(st.Inputs) * hosts)
		through[k] = msgs
	}

	// Goroutines inherit profiler labels from the one that starts them:
	// with -cpuprofile, `go tool pprof -tags` splits the process's CPU into
	// part=nats-server, publisher and replica.
	var ns natsUnderTest
	inPart("nats-server", func() { ns = startNATS(b) })
	fake := clock.NewFake(start)
	cfg.NATS = cfg.NATS.WithURL(ns.url)
	cfg.Detectors = []string{name}
	cfg.Group.Replica = "bench"
	if err := cfg.Validate(); err != nil {
		b.Fatal(err)
	}
	// The replica's warnings go into the failure message, if there is one.
	logs := &logbuf.Buffer{}
	d, err := supervisor.New(cfg, detect.Default, slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelWarn})), supervisor.WithClock(fake))
	if err != nil {
		b.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	runCtx, stop := context.WithCancel(ctx)
	done := make(chan error, 1)
	go inPart("replica", func() { done <- d.Run(runCtx) })
	defer func() {
		stop()
		if err := <-done; err != nil {
			b.Errorf("Run: %v", err)
		}
	}()
	c := d.Counters(name)
	poll(b, ctx, "the replica to own every partition and start its workers", func() bool {
		return c.Partitions.Load() == int64(cfg.Group.Partitions) && fake.Tickers() >= cfg.Group.Partitions
	}, nil)

	var nc *nats.Conn
	inPart("publisher", func() {
		var err error
		if nc, err = nats.Connect(ns.url); err != nil {
			b.Fatal(err)
		}
	})
	defer nc.Close()
	js, err := jetstream.New(nc, jetstream.WithPublishAsyncMaxPending(1024))
	if err != nil {
		b.Fatal(err)
	}
	// Batches handled once each. A redelivered one (its ack came after
	// ack_wait, as happens when a backlog queues in the replica) counts as a
	// duplicate, not here.
	handled := func() uint64 {
		return c.Messages.Load() + c.Stale.Load() + c.DeadLettered.Load()
	}

	cpu0, serverCPU0 := cpuTime(b), ns.cpu(b)
	b.ResetTimer()
	pubErr := make(chan error, 1)
	go inPart("publisher", func() { pubErr <- publishFleet(ctx, js, p.Kinds, hosts, perStep) })
	// Move the replica's clock by evaluate_interval each time the batches
	// up to the new time are handled.
	ticks, k := 0, 0
	for now := start.Add(every); !now.After(end); now = now.Add(every) {
		for k+1 < len(steps) && !steps[k+1].Now.After(now) {
			k++
		}
		ticks++
		// An evaluation period of traffic takes far less: a minute means stuck.
		stepCtx, cancel := context.WithTimeout(ctx, time.Minute)
		poll(b, stepCtx, fmt.Sprintf("the batches up to %s handled (%d of %d)", now.Sub(start), handled(), through[k]), func() bool {
			return handled() >= through[k] || failed(b, pubErr)
		}, func() string { return stuck(ns, js, c) + "\nreplica warnings:\n" + logs.String() })
		cancel()
		fake.Advance(every)
	}
	poll(b, ctx, "every batch handled", func() bool { return handled() >= msgs || failed(b, pubErr) }, func() string { return stuck(ns, js, c) + "\nreplica warnings:\n" + logs.String() })
	b.StopTimer()
	cpu, serverCPU := cpuTime(b)-cpu0, ns.cpu(b)-serverCPU0
	if err := <-pubErr; err != nil {
		b.Fatal(err)
	}

	// One more evaluation of every host after the last batch, then count.
	evals := c.Evaluations.Load()
	fake.Advance(every)
	poll(b, ctx, "a last evaluation of every host", func() bool { return c.Evaluations.Load() >= evals+uint64(hosts) }, nil)
	alerts := c.Fired.Load() + c.Reminders.Load() + c.Resolved.Load()
	switch {
	case c.Events.Load() != uint64(events) || c.Messages.Load() != msgs:
		b.Fatalf("observed %d events in %d batches, published %d in %d (stale %d, duplicates %d, dead-lettered %d)",
			c.Events.Load(), c.Messages.Load(), events, msgs, c.Stale.Load(), c.Duplicates.Load(), c.DeadLettered.Load())
	case c.Hosts.Load() != int64(hosts):
		b.Fatalf("replica holds %d hosts, want %d", c.Hosts.Load(), hosts)
	case c.Panics.Load() != 0:
		b.Fatalf("%d panics", c.Panics.Load())
	case alerts != 0:
		b.Fatalf("a healthy fleet raised %d alerts (fired %d)", alerts, c.Fired.Load())
	}

	sec := b.Elapsed().Seconds()
	b.ReportMetric(float64(events)/sec, "events/s")
	b.ReportMetric(float64(events)/cpu.Seconds(), "events/cpu_s")
	b.ReportMetric(cpu.Seconds()/sec, "cpus")
	b.ReportMetric(float64(seconds)/sec, "x_realtime")
	b.ReportMetric(float64(msgs)/sec, "batches/s")
	b.ReportMetric(float64(events)/float64(msgs), "events/batch")
	// Evaluations done per evaluation due (a tick that finds its worker busy
	// with the previous one is dropped, as with a real ticker): about 1.
	b.ReportMetric(float64(c.Evaluations.Load())/float64(hosts*(ticks+1)), "eval_ratio")
	b.ReportMetric(float64(hosts), "hosts")
	b.ReportMetric(float64(alerts), "alerts")
	b.ReportMetric(float64(c.Duplicates.Load()), "redelivered")
	b.ReportMetric(float64(ns.slowConsumers(b)), "slow_consumers")
	if ns.external {
		b.ReportMetric(serverCPU.Seconds()/sec, "server_cpus")
	}
	b.ReportMetric(0, "ns/op") // per second of fleet traffic: x_realtime says it better
}

// publishFleet publishes every host's batches of each step in time order
// and the hosts interleaved, each with the probe's header (schema version,
// host, probe id, batch_seq) and message ID, then waits for the acks.
func publishFleet(ctx context.Context, js jetstream.JetStream, kinds []string, hosts int, perStep [][]fleetMsg) error {
	names := make([]string, hosts)
	seqs := make([][]uint64, hosts)
	for h := range names {
		names[h] = "host-" + strconv.Itoa(h)
		seqs[h] = make([]uint64, len(kinds))
	}
	for _, step := range perStep {
		for _, m := range step {
			for h, host := range names {
				seqs[h][m.kind]++
				seq := seqs[h][m.kind]
				// A batch's fields may come in any order: the header
				// marshalled on its own, then the records, decode as one.
				head, err := (&eventpb.Batch{SchemaVersion: eventpb.SchemaVersion, Host: host, ProbeId: host, BatchSeq: seq}).MarshalVT()
				if err != nil {
					return err
				}
				msg := nats.NewMsg(wire.EventSubject(host, kinds[m.kind]))
				msg.Data = append(append(make([]byte, 0, len(head)+len(m.body)), head...), m.body...)
				msg.Header.Set(jetstream.MsgIDHeader, host+"-"+kinds[m.kind]+"-"+strconv.FormatUint(seq, 10))
				for {
					_, err := js.PublishMsgAsync(msg)
					if err == nil {
						break
					}
					if !errors.Is(err, jetstream.ErrTooManyStalledMsgs) {
						return fmt.Errorf("publish %s: %w", msg.Subject, err)
					}
					// The server is behind: let it catch up, then retry.
					select {
					case <-js.PublishAsyncComplete():
					case <-ctx.Done():
						return ctx.Err()
					}
				}
			}
		}
	}
	select {
	case <-js.PublishAsyncComplete():
	case <-ctx.Done():
		return ctx.Err()
	}
	if n := js.PublishAsyncPending(); n != 0 {
		return fmt.Errorf("%d publishes still pending", n)
	}
	return nil
}

// failed reports whether the publisher ended with an error (and fails b).
func failed(b *testing.B, pubErr chan error) bool {
	select {
	case err := <-pubErr:
		if err != nil {
			b.Fatal(err)
		}
		pubErr <- nil // it ended well: leave that for the final check
	default:
	}
	return false
}

// poll waits for cond, checking every millisecond (the clock above must
// follow the replica closely), until ctx ends.
func poll(b *testing.B, ctx context.Context, what string, cond func() bool, state func() string) {
	b.Helper()
	t := time.NewTicker(time.Millisecond)
	defer t.Stop()
	for !cond() {
		select {
		case <-ctx.Done():
			if state != nil {
				b.Fatalf("timed out waiting for %s; %s", what, state())
			}
			b.Fatalf("timed out waiting for %s", what)
		case <-t.C:
		}
	}
}

// stuck says where the batches are when the replica stops making progress:
// the server's slow-consumer disconnects, the publisher's unacknowledged
// publishes, the replica's counters, and every stream with its consumers.
func stuck(ns natsUnderTest, js jetstream.JetStream, c *runner.Counters) string {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	var sb strings.Builder
	fmt.Fprintf(&sb, "server: %d slow consumer clients disconnected; publishes pending %d; replica: messages %d, duplicates %d, stale %d, dead-lettered %d, hosts %d, partitions %d, takeovers %d",
		ns.slowConsumers(nil), js.PublishAsyncPending(), c.Messages.Load(), c.Duplicates.Load(), c.Stale.Load(), c.DeadLettered.Load(),
		c.Hosts.Load(), c.Partitions.Load(), c.Takeovers.Load())
	streams := js.ListStreams(ctx)
	for si := range streams.Info() {
		fmt.Fprintf(&sb, "\n  stream %s: %d msgs, seq %d..%d", si.Config.Name, si.State.Msgs, si.State.FirstSeq, si.State.LastSeq)
		st, err := js.Stream(ctx, si.Config.Name)
		if err != nil {
			continue
		}
		consumers := st.ListConsumers(ctx)
		for ci := range consumers.Info() {
			fmt.Fprintf(&sb, "\n    consumer %s: pending %d, ack pending %d, redelivered %d, waiting %d, delivered %d, ack floor %d",
				ci.Name, ci.NumPending, ci.NumAckPending, ci.NumRedelivered, ci.NumWaiting, ci.Delivered.Stream, ci.AckFloor.Stream)
		}
	}
	if err := streams.Err(); err != nil {
		fmt.Fprintf(&sb, "\n  listing streams: %v", err)
	}
	return sb.String()
}

// inPart runs fn with the profiler label part=name.
func inPart(name string, fn func()) {
	pprof.Do(context.Background(), pprof.Labels("part", name), func(context.Context) { fn() })
}

// cpuTime is the user+sys CPU time of the whole process so far.
func cpuTime(b *testing.B) time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		b.Fatal(err)
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// natsUnderTest is the benchmark's NATS server: embedded, or a process of
// its own (-bench.nats-server) whose CPU is then measured apart.
type natsUnderTest struct {
	url      string
	external bool
	embedded *server.Server
	pid      int
	monitor  string // http://host:port of the external server's monitoring
}

func startNATS(b *testing.B) natsUnderTest {
	if *natsServer == "" {
		ns := natstest.Start(b)
		return natsUnderTest{url: ns.ClientURL(), embedded: ns}
	}
	port, mport := freeport.Get(b), freeport.Get(b)
	cmd := exec.Command(*natsServer, "-js", "-sd", b.TempDir(), "-a", "127.0.0.1", "-p", strconv.Itoa(port), "-m", strconv.Itoa(mport))
	if err := cmd.Start(); err != nil {
		b.Fatalf("start %s: %v", *natsServer, err)
	}
	b.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })
	n := natsUnderTest{url: fmt.Sprintf("nats://127.0.0.1:%d", port), external: true, pid: cmd.Process.Pid,
		monitor: fmt.Sprintf("http://127.0.0.1:%d", mport)}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	poll(b, ctx, "the NATS server to accept connections", func() bool {
		nc, err := nats.Connect(n.url)
		if err == nil {
			nc.Close()
		}
		return err == nil
	}, nil)
	return n
}

// cpu is the external server's user+sys CPU time so far (0 when embedded:
// the process's own counts it).
func (n natsUnderTest) cpu(b *testing.B) time.Duration {
	if !n.external {
		return 0
	}
	cpu, err := procstat.CPU(n.pid)
	if err != nil {
		b.Fatal(err)
	}
	return cpu
}

// slowConsumers is how many clients the server cut off as slow consumers.
func (n natsUnderTest) slowConsumers(b *testing.B) int64 {
	if !n.external {
		return int64(n.embedded.NumSlowConsumersClients())
	}
	resp, err := http.Get(n.monitor + "/varz")
	if err != nil {
		if b != nil {
			b.Fatal(err)
		}
		return -1
	}
	defer resp.Body.Close()
	var v struct {
		SlowConsumers int64 `json:"slow_consumers"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&v); err != nil && b != nil {
		b.Fatal(err)
	}
	return v.SlowConsumers
}
