package agent

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"golang.org/x/sys/unix"

	"github.com/netpulse/netpulse/lib/eventpb"
	"github.com/netpulse/netpulse/lib/testutil/natstest"
	"github.com/netpulse/netpulse/lib/testutil/priv"
	"github.com/netpulse/netpulse/lib/wire"
)

var benchRound = flag.Duration("bench.round", 4*time.Second, "BenchmarkOverhead: load duration of each mode in each round")

// BenchmarkOverhead measures what the whole probe costs this host at the
// highest loopback connection rate it makes (8 goroutines dial+close in a
// process of their own, see connectLoad), next to libbpf-tools tcpstates as
// a reference. One b.Loop iteration is one round of three load runs,
// interleaved so that drift on a noisy 2-core VM hits every mode alike:
//
//	none      no tracing
//	probe     agent.New(cfg).Run: tracer, decoder, batches, async JetStream
//	          publishing to an embedded server (file storage); both run in
//	          this process, so the server's work counts as overhead too
//	tcpstates libbpf-tools tcpstates writing to /dev/null
//
// Run with -benchtime=Nx for N rounds and -bench.round for their length.
// Besides the rates it reports, summed over the probe runs, the probe's own
// final counters and the events actually stored in the stream: every record
// the kernel program submitted should end up in JetStream (lost = 0).
func BenchmarkOverhead(b *testing.B) {
	priv.RequireRoot(b)
	ns := natstest.Start(b)
	nc, js := natstest.Connect(b, ns)

	type mode struct {
		name  string
		start func(round int) (stop func())
		conns uint64
		secs  float64
		cpu   float64 // seconds of this process's CPU time
	}
	var tot Stats     // the probe's final counters, summed over its runs
	var stored uint64 // events found in the stream, summed over the probe's runs
	var tcpstatesLost uint64
	var note string // the probe's counters of the round, for the log
	// CPU time of this process (probe + embedded NATS; the load runs in a
	// process of its own) per mode, to price the probe per event.
	modes := []*mode{
		{name: "none", start: func(int) func() { return func() {} }},
		{name: "probe", start: func(round int) func() {
			pr := startProbe(b, nc, js, fmt.Sprintf("bench-%d", round))
			return func() {
				s, n := pr.stop(b)
				note = fmt.Sprintf("probe events: kernel %d, seen %d, published %d, in stream %d, ringbuf drops %d",
					s.EventsKernel, s.EventsSeen, s.EventsPublished, n, s.RingbufDrops)
				tot.EventsKernel += s.EventsKernel
				tot.EventsSeen += s.EventsSeen
				tot.EventsPublished += s.EventsPublished
				tot.RingbufDrops += s.RingbufDrops
				tot.DecodeErrors += s.DecodeErrors
				tot.EventsDropped += s.EventsDropped
				tot.OwnerUnknown += s.OwnerUnknown
				tot.OwnerFilled += s.OwnerFilled
				stored += n
			}
		}},
	}
	if _, err := exec.LookPath("tcpstates"); err == nil {
		modes = append(modes, &mode{name: "tcpstates", start: func(int) func() {
			stop := startTcpstates(b)
			return func() { tcpstatesLost += stop() }
		}})
	} else {
		b.Log("tcpstates not installed (apt-get install libbpf-tools): its column is left out")
	}

	connectLoad(b, time.Second) // warm-up, not counted
	round := 0
	for b.Loop() {
		round++
		line := fmt.Sprintf("round %d conn/s:", round)
		for _, m := range modes {
			cpu0 := processCPU()
			stop := m.start(round)
			n, secs := connectLoad(b, *benchRound)
			stop()
			m.cpu += processCPU() - cpu0
			m.conns += n
			m.secs += secs
			line += fmt.Sprintf(" %s %.0f", m.name, float64(n)/secs)
		}
		b.Logf("%s; %s", line, note) // one line a round: testing keeps only 10
	}

	rate := func(m *mode) float64 { return float64(m.conns) / m.secs }
	base := rate(modes[0])
	for _, m := range modes {
		b.ReportMetric(rate(m), "conn/s_"+m.name)
		if m != modes[0] {
			b.ReportMetric(100*(1-rate(m)/base), "drop%_"+m.name)
		}
	}
	perConn := float64(tot.EventsKernel) / float64(modes[1].conns)
	b.ReportMetric(perConn, "events/conn")
	b.ReportMetric(perConn*rate(modes[1]), "events/s_probe")
	b.ReportMetric(float64(tot.EventsKernel), "events_kernel")
	b.ReportMetric(float64(tot.EventsPublished), "events_published")
	b.ReportMetric(float64(stored), "events_in_stream")
	b.ReportMetric(float64(tot.EventsKernel)-float64(stored), "lost")
	b.ReportMetric(float64(tot.RingbufDrops), "ringbuf_drops")
	b.ReportMetric(float64(tot.DecodeErrors), "decode_errors")
	b.ReportMetric(float64(tot.EventsDropped), "events_dropped")
	// Owner-unknown events of the load (every socket is the load process's own).
	b.ReportMetric(100*float64(tot.OwnerUnknown)/max(float64(tot.EventsKernel), 1), "owner_unknown%")
	// CPU seconds the probe (with the embedded NATS) used per second of
	// 100k events/s, net of what this process uses with no probe.
	probeEventsPerSec := float64(tot.EventsKernel) / modes[1].secs
	netCPU := (modes[1].cpu/modes[1].secs - modes[0].cpu/modes[0].secs)
	b.ReportMetric(100*netCPU/(probeEventsPerSec/100000), "cpu%_per_100k_events/s")
	if len(modes) == 3 {
		b.ReportMetric(float64(tcpstatesLost), "tcpstates_lost")
	}
	b.ReportMetric(0, "ns/op") // a round's wall time means nothing here
	if stored != tot.EventsPublished {
		b.Errorf("the stream holds %d events, the probe says it published %d", stored, tot.EventsPublished)
	}
}

// probeRun is one probe.Run in a goroutine, publishing as host.
type probeRun struct {
	js     jetstream.JetStream
	host   string
	cancel context.CancelFunc
	done   chan error
	stats  *nats.Subscription
}

// startProbe runs the probe and returns once its first batch is in the
// stream, so that the load runs against a probe that is fully up.
func startProbe(b *testing.B, nc *nats.Conn, js jetstream.JetStream, host string) *probeRun {
	cfg := DefaultConfig()
	cfg.Host = host
	cfg.NATS = cfg.NATS.WithURL(nc.ConnectedUrl())
	cfg.Stats.Interval = time.Hour // only the final report, which Run always sends
	if err := cfg.Validate(); err != nil {
		b.Fatal(err)
	}
	// The final counters arrive on a core subject; subscribe before they can.
	sub, err := nc.SubscribeSync(wire.EventSubject(host, wire.KindStats))
	if err != nil {
		b.Fatal(err)
	}
	p, err := New(cfg, slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelError})))
	if err != nil {
		b.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	pr := &probeRun{js: js, host: host, cancel: cancel, done: make(chan error, 1), stats: sub}
	go func() { pr.done <- p.Run(ctx) }()

	state := wire.EventSubject(host, wire.KindState)
	deadline := time.Now().Add(15 * time.Second)
	for {
		// A connection of our own makes sure there is something to publish.
		if c, err := net.Dial("tcp", nc.ConnectedAddr()); err == nil {
			c.Close()
		}
		gctx, gcancel := context.WithTimeout(context.Background(), time.Second)
		st, err := js.Stream(gctx, wire.EventsStream)
		if err == nil {
			_, err = st.GetLastMsgForSubject(gctx, state)
		}
		gcancel()
		if err == nil {
			return pr
		}
		select {
		case err := <-pr.done:
			b.Fatalf("probe.Run ended before publishing: %v", err)
		case <-time.After(50 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			cancel()
			b.Fatalf("the probe published nothing within 15 s (last lookup: %v)", err)
		}
	}
}

// stop ends the probe (Run flushes and waits for every ack) and returns its
// final counters and the number of events of its host in the stream.
func (pr *probeRun) stop(b *testing.B) (Stats, uint64) {
	pr.cancel()
	if err := <-pr.done; err != nil {
		b.Fatalf("probe.Run: %v", err)
	}
	defer pr.stats.Unsubscribe()
	m, err := pr.stats.NextMsg(10 * time.Second)
	if err != nil {
		b.Fatalf("no final stats from the probe: %v", err)
	}
	var s Stats
	if err := json.Unmarshal(m.Data, &s); err != nil {
		b.Fatalf("final stats %q: %v", m.Data, err)
	}
	var n uint64
	for _, kind := range wire.DataKinds {
		var k uint64
		if k, err = countStored(pr.js, wire.EventSubject(pr.host, kind)); err != nil {
			break
		}
		n += k
	}
	if err != nil {
		b.Fatalf("counting the events in the stream: %v", err)
	}
	return s, n
}

// countStored decodes every batch stored on subject and counts its records.
func countStored(js jetstream.JetStream, subject string) (uint64, error) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	st, err := js.Stream(ctx, wire.EventsStream)
	if err != nil {
		return 0, err
	}
	info, err := st.Info(ctx, jetstream.WithSubjectFilter(subject))
	if err != nil {
		return 0, err
	}
	msgs := info.State.Subjects[subject]
	cons, err := st.OrderedConsumer(ctx, jetstream.OrderedConsumerConfig{FilterSubjects: []string{subject}})
	if err != nil {
		return 0, err
	}
	var events uint64
	for got := uint64(0); got < msgs; {
		mb, err := cons.Fetch(int(min(msgs-got, 256)), jetstream.FetchMaxWait(5*time.Second))
		if err != nil {
			return 0, err
		}
		n := 0
		for m := range mb.Messages() {
			var batch eventpb.Batch // UnmarshalVT appends to a used one
			if err := batch.UnmarshalVT(m.Data()); err != nil {
				return 0, fmt.Errorf("batch %d: %w", got, err)
			}
			events += uint64(len(batch.Events) + len(batch.Connections) + len(batch.Drops))
			if batch.Snapshot != nil {
				events++
			}
			n++
		}
		if err := mb.Error(); err != nil {
			return 0, err
		}
		if n == 0 {
			return 0, fmt.Errorf("read %d of %d messages, then nothing", got, msgs)
		}
		got += uint64(n)
	}
	return events, nil
}

// startTcpstates runs libbpf-tools tcpstates with its output on /dev/null.
// stop returns the events tcpstates reported lost (perf buffer overruns).
func startTcpstates(b *testing.B) (stop func() uint64) {
	var stderr bytes.Buffer
	cmd := exec.Command("tcpstates") // nil Stdout: /dev/null
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		b.Fatalf("tcpstates: %v", err)
	}
	exited := make(chan struct{})
	go func() { _ = cmd.Wait(); close(exited) }()
	// tcpstates gives no readiness signal; it attaches well within a second.
	select {
	case <-exited:
		b.Fatalf("tcpstates exited at start: %s", stderr.String())
	case <-time.After(time.Second):
	}
	return func() uint64 {
		_ = cmd.Process.Signal(syscall.SIGINT)
		select {
		case <-exited:
		case <-time.After(5 * time.Second):
			_ = cmd.Process.Kill()
			<-exited
		}
		var lost uint64
		for line := range strings.Lines(stderr.String()) {
			var n, cpu uint64
			if _, err := fmt.Sscanf(line, "lost %d events on CPU #%d", &n, &cpu); err == nil {
				lost += n
			}
		}
		return lost
	}
}

// loadEnv makes the test binary a connection-load process (see TestMain)
// that runs for the duration it holds.
const loadEnv = "NETPULSE_BENCH_CONNECT_LOAD"

// connectLoad runs the connection load for d in a separate process, in a
// network namespace of its own, and returns how many connections it made in
// how many seconds.
//
// A process of its own: the probe and tcpstates then run beside the
// workload, as on a real host. A fresh namespace: every run starts from the
// same kernel state. The load leaves ~100k sockets in TIME_WAIT, and the
// connection rate depends on how full that table is (it speeds up once
// tcp_max_tw_buckets overflows), so runs sharing one namespace are not
// comparable. The probe and tcpstates trace every namespace.
func connectLoad(b *testing.B, d time.Duration) (uint64, float64) {
	// The kernel tears the previous run's namespace (and its TIME_WAIT
	// sockets) down in the background: not during this run.
	time.Sleep(500 * time.Millisecond)
	var out, stderr bytes.Buffer
	cmd := exec.Command("unshare", "--net", os.Args[0])
	cmd.Env = append(os.Environ(), loadEnv+"="+d.String())
	cmd.Stdout, cmd.Stderr = &out, &stderr
	if err := cmd.Run(); err != nil {
		b.Fatalf("connection load: %v\n%s%s", err, out.String(), stderr.String())
	}
	var n uint64
	var secs float64
	for line := range strings.Lines(out.String()) {
		if _, err := fmt.Sscanf(line, "connect-load: %d %g", &n, &secs); err == nil {
			return n, secs
		}
	}
	b.Fatalf("connection load printed no result:\n%s%s", out.String(), stderr.String())
	return 0, 0
}

// TestMain turns the test binary into the connection-load process of
// BenchmarkOverhead when loadEnv is set; otherwise it runs the tests.
func TestMain(m *testing.M) {
	if v := os.Getenv(loadEnv); v != "" {
		os.Exit(runConnectLoad(v))
	}
	os.Exit(m.Run())
}

func runConnectLoad(duration string) int {
	d, err := time.ParseDuration(duration)
	if err == nil {
		err = loopbackUp()
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "connect-load:", err)
		return 1
	}
	var tb loadTB
	n, secs := connectRate(&tb, d)
	if tb.failed {
		return 1
	}
	fmt.Printf("connect-load: %d %g\n", n, secs)
	return 0
}

// loadTB is the testing.TB of the load process: it prints failures and
// remembers them.
type loadTB struct {
	testing.TB
	failed bool
}

func (l *loadTB) Errorf(format string, args ...any) {
	fmt.Fprintf(os.Stderr, "connect-load: "+format+"\n", args...)
	l.failed = true
}

func (l *loadTB) Fatal(args ...any) {
	fmt.Fprintln(os.Stderr, append([]any{"connect-load:"}, args...)...)
	os.Exit(1)
}

// loopbackUp brings up lo, which starts down in a new network namespace.
func loopbackUp() error {
	fd, err := unix.Socket(unix.AF_INET, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return err
	}
	defer unix.Close(fd)
	ifr, err := unix.NewIfreq("lo")
	if err != nil {
		return err
	}
	if err := unix.IoctlIfreq(fd, unix.SIOCGIFFLAGS, ifr); err != nil {
		return fmt.Errorf("get lo flags: %w", err)
	}
	ifr.SetUint16(ifr.Uint16() | unix.IFF_UP)
	if err := unix.IoctlIfreq(fd, unix.SIOCSIFFLAGS, ifr); err != nil {
		return fmt.Errorf("bring lo up: %w", err)
	}
	return nil
}

// connectRate runs 8 goroutines that dial and close loopback connections
// for d and returns how many connections they made in how many seconds.
func connectRate(t testing.TB, d time.Duration) (uint64, float64) {
	ln, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			c.Close()
		}
	}()
	ctx, cancel := context.WithTimeout(context.Background(), d)
	defer cancel()
	var total atomic.Uint64
	var wg sync.WaitGroup
	var dialer net.Dialer
	start := time.Now()
	for range 8 {
		wg.Go(func() {
			for ctx.Err() == nil {
				c, err := dialer.DialContext(ctx, "tcp4", ln.Addr().String())
				if err != nil {
					// A dial cut short by the deadline is the end of the run.
					if !errors.Is(err, os.ErrDeadlineExceeded) && !errors.Is(err, context.DeadlineExceeded) {
						t.Errorf("dial: %v", err)
					}
					return
				}
				c.Close()
				total.Add(1)
			}
		})
	}
	wg.Wait()
	secs := time.Since(start).Seconds()
	ln.Close()
	return total.Load(), secs
}

// processCPU is this process's user+system CPU time in seconds.
func processCPU() float64 {
	var ru unix.Rusage
	if err := unix.Getrusage(unix.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return float64(ru.Utime.Nano()+ru.Stime.Nano()) / 1e9
}
