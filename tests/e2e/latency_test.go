package e2e

import (
	"context"
	crand "crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"math/rand/v2"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"golang.org/x/sys/unix"

	"github.com/netpulse/netpulse/lib/alert"
	"github.com/netpulse/netpulse/lib/eventpb"
	"github.com/netpulse/netpulse/lib/testutil/natstest"
	"github.com/netpulse/netpulse/lib/testutil/netfault"
	"github.com/netpulse/netpulse/lib/testutil/priv"
	"github.com/netpulse/netpulse/lib/testutil/procstat"
	"github.com/netpulse/netpulse/lib/wire"
)

var (
	latencyRounds  = flag.Int("latency.rounds", 10, "BenchmarkAlertLatency: timed fault rounds (each fault once a round)")
	latencyWorkers = flag.Int("latency.workers", 8, "BenchmarkAlertLatency: threads connecting in the background load")
)

// The detector settings the faults are measured against: the moment a
// condition becomes true follows from them (see BenchmarkAlertLatency).
const (
	handshakesNeeded = 10              // slow_handshake.min_handshakes
	slowConnects     = 15              // connects made for it (see slowHandshakes)
	failuresNeeded   = 10              // conn_failure.min_failures
	leakSockets      = 10              // conn_leak.min_sockets
	leakMinAge       = 2 * time.Second // conn_leak.min_age
)

// latencyDetectorArgs: windows short enough for a benchmark and the
// thresholds above spelt out; conn_leak's growth rule is off so that only
// its age rule (whose moment is known) can fire. Deliberately not
// fastDetectors: everything else, evaluate_interval above all, stays as
// shipped (NETPULSE_EVALUATE_INTERVAL=... compares another value).
var latencyDetectorArgs = []string{
	"--detector.slow_handshake.window=6s",
	"--detector.slow_handshake.min_handshakes=" + strconv.Itoa(handshakesNeeded),
	"--detector.slow_handshake.for=0s",
	"--detector.conn_failure.window=6s",
	"--detector.conn_failure.min_failures=" + strconv.Itoa(failuresNeeded),
	"--detector.conn_failure.for=0s",
	"--detector.conn_leak.min_age=" + leakMinAge.String(),
	"--detector.conn_leak.min_sockets=" + strconv.Itoa(leakSockets),
	"--detector.conn_leak.growth_min=0",
	"--detector.conn_leak.for=0s",
}

// BenchmarkAlertLatency measures issue 4's alert latency: from the moment a
// detector's condition becomes true on the host to the alert arriving on
// netpulse.alerts.<detector>.>, while the probe traces a background load of
// loopback connection churn (≥ 200k events/s wanted) and the detector
// (every built-in one, one replica) consumes it. Real NATS, real probe and
// detector binaries with their default batching and evaluate_interval; only
// the detectors' windows and thresholds are set (latencyDetectorArgs).
//
// The moment a condition becomes true, per detector (for: 0s everywhere):
//
//	slow_handshake  slowConnects concurrent connects to a fresh port whose
//	                first SYN nftables drops (each handshake ~1 s, above the
//	                500 ms ceiling): the moment the handshakesNeeded-th of
//	                them returned from connect(), i.e. the window holds
//	                min_handshakes slow ones.
//	conn_failure    failuresNeeded connects to a closed port: the moment the
//	                last refusal returned.
//	conn_leak       a server (this process) that never closes accepts
//	                leakSockets connections whose clients then close: the
//	                moment the last close returned, plus min_age (then
//	                min_sockets sockets are older than min_age).
//
// The kernel records each event a little before the syscall returns, so
// these moments are at most a few µs late: a latency is never overstated.
// retransmit_spike is left out: its rate over a sliding window has no
// sharp moment.
//
// One b.Loop iteration runs -latency.rounds rounds; each round starts at a
// random phase of the evaluation tick, injects the three faults one after
// the other on fresh ports and waits for the three alerts, which must name
// the culprit. An untimed round first warms the pipeline up. With few
// rounds p99 is the maximum (nearest rank).
func BenchmarkAlertLatency(b *testing.B) {
	priv.RequireRoot(b)
	ns := natstest.Start(b)
	host := "latency-" + randHex(4)
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Minute)
	defer cancel()

	alerts := watchLatencyAlerts(b, ns.ClientURL(), []string{"slow_handshake", "conn_failure", "conn_leak"})
	stats := watchProbeStats(b, ns.ClientURL(), host)
	det := start(b, "detector", append([]string{"--nats.url=" + ns.ClientURL()}, latencyDetectorArgs...)...)
	det.waitLog(ctx, "running")
	probe := start(b, "probe", "--nats.url="+ns.ClientURL(), "--host="+host, "--stats.interval=1s")
	probe.waitLog(ctx, "probe running")
	b.Cleanup(func() {
		if b.Failed() {
			b.Logf("probe log:\n%s\ndetector log:\n%s", tail(probe.log(), 3000), tail(det.log(), 3000))
		}
	})

	load := startChurn(b, *latencyWorkers)
	lat := map[string][]time.Duration{}
	// Warm-up, not timed: the consumers start, the detector takes the host
	// over and replays its history, which on a busy machine can take long
	// enough for the first faults' events to come late for the windows.
	for try := 1; !round(b, ctx, alerts, host, 0, nil, nil); try++ {
		if try == 3 {
			b.Fatal("three warm-up rounds raised not every alert")
		}
	}
	first := stats.last(b, ctx)
	cpu0 := processCPU(b, det.cmd.Process.Pid)
	var missed []string
	for b.Loop() {
		for r := 1; r <= *latencyRounds; r++ {
			round(b, ctx, alerts, host, r, lat, &missed)
		}
	}
	final := stats.last(b, ctx)
	// A missing alert is a failure, unless the probe counted a loss that
	// explains it: an overloaded probe (a busy machine) drops records when
	// its ring buffer is full and forgets sockets its LRU map evicts, and
	// says so. Then it is reported (missed_alerts), not hidden.
	losses := final.RingbufDrops - first.RingbufDrops + final.evictions() - first.evictions()
	for _, m := range missed {
		if losses == 0 {
			b.Error(m)
		} else {
			b.Log(m)
		}
	}
	detCPU := processCPU(b, det.cmd.Process.Pid) - cpu0
	conns, secs := load.stop()

	eventsPerSec := float64(final.EventsPublished-first.EventsPublished) / final.Time.Sub(first.Time).Seconds()
	b.Logf("background load: %.0f conn/s, probe published %.0f events/s over %.0f s (ringbuf drops %d, kernel map evictions %d); detector CPU %.1f s",
		float64(conns)/secs, eventsPerSec, final.Time.Sub(first.Time).Seconds(), final.RingbufDrops-first.RingbufDrops, final.evictions()-first.evictions(), detCPU)
	if eventsPerSec < 200000 {
		b.Logf("the background is below issue 4's 200k events/s: load, probe, NATS and detector share 2 cores here, and any other work on the machine takes from them")
	}
	for _, d := range []string{"slow_handshake", "conn_failure", "conn_leak"} {
		ls := lat[d]
		if len(ls) == 0 {
			continue
		}
		slices.Sort(ls)
		ms := func(x time.Duration) float64 { return float64(x.Microseconds()) / 1000 }
		b.ReportMetric(ms(quantile(ls, 0.5)), "p50_ms_"+d)
		b.ReportMetric(ms(quantile(ls, 0.99)), "p99_ms_"+d)
		b.ReportMetric(ms(ls[len(ls)-1]), "max_ms_"+d)
		pub := lat[d+" publish"]
		slices.Sort(pub)
		over := len(ls) - sort.Search(len(ls), func(i int) bool { return ls[i] >= time.Second })
		b.Logf("%s: %d alerts, latency min %v p50 %v max %v, %d of them ≥ 1 s; storing+publishing p50 %v max %v",
			d, len(ls), ls[0].Round(time.Millisecond), quantile(ls, 0.5).Round(time.Millisecond), ls[len(ls)-1].Round(time.Millisecond),
			over, quantile(pub, 0.5).Round(time.Millisecond), pub[len(pub)-1].Round(time.Millisecond))
	}
	b.ReportMetric(eventsPerSec, "events/s")
	// Share of one core the detector (all four built-in detectors) used.
	b.ReportMetric(100*detCPU/final.Time.Sub(first.Time).Seconds(), "detector_cpu%")
	b.ReportMetric(float64(len(missed)), "missed_alerts")
	b.ReportMetric(float64(final.RingbufDrops-first.RingbufDrops), "ringbuf_drops")
	b.ReportMetric(float64(final.evictions()-first.evictions()), "map_evictions")
	b.ReportMetric(0, "ns/op") // a round's wall time means nothing here
}

// quantile of sorted ls, nearest rank.
func quantile(ls []time.Duration, q float64) time.Duration {
	i := int(q*float64(len(ls))+0.5) - 1
	return ls[min(max(i, 0), len(ls)-1)]
}

// round injects each fault once, on fresh ports, and waits for the alerts;
// it says whether all came. With lat nil (warm-up) it only logs a missing
// one. The faults are injected one
// after the other (each moment is its own); the alerts' arrival times are
// taken as they arrive, whatever order they are waited for in.
func round(b *testing.B, ctx context.Context, alerts *latencyAlerts, host string, r int, lat map[string][]time.Duration, missed *[]string) (all bool) {
	// Not synchronisation: a round starts just after the previous one's
	// last alert, i.e. just after an evaluation, and the faults' moments
	// are whole seconds apart (SYN timeout, min_age). A random pause puts
	// each round at a random phase of the detector's evaluation tick, so
	// that the figures cover every phase, not always the worst one.
	select {
	case <-time.After(rand.N(1500 * time.Millisecond)):
	case <-ctx.Done():
	}
	pid := strconv.Itoa(os.Getpid())
	roundStart := time.Now()
	type expect struct {
		detector string
		what     string
		moment   time.Time
		match    func(alert.Alert) bool // the culprit
	}
	remote, refused := refusedConnects(b)
	port, closed := leakSocketsHere(b)
	slow, handshaken := slowHandshakes(b)
	want := []expect{
		{"conn_failure", "remote " + remote, refused, func(a alert.Alert) bool {
			return a.Labels["remote"] == remote && a.Labels["reason"] == "refused" && a.Annotations["pid"] == pid
		}},
		{"conn_leak", "local_port " + port, closed.Add(leakMinAge), func(a alert.Alert) bool {
			return a.Labels["local_port"] == port && a.Labels["pid"] == pid && a.Annotations["count"] == strconv.Itoa(leakSockets)
		}},
		{"slow_handshake", "remote " + slow, handshaken, func(a alert.Alert) bool {
			return a.Labels["remote"] == slow && a.Labels["side"] == "client" && a.Annotations["pid"] == pid
		}},
	}
	rctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	all = true
	for _, w := range want {
		got, ok := alerts.wait(rctx, w.detector, func(a alert.Alert) bool {
			return a.Status == alert.Firing && a.Host == host && w.match(a)
		})
		if !ok {
			all = false
			why := alerts.of(w.detector)
			if w.detector == "slow_handshake" {
				why = handshakesInStream(ctx, alerts.url, host, slow, roundStart) + "; " + why
			}
			msg := fmt.Sprintf("round %d: no %s alert for %s pid %s: %s", r, w.detector, w.what, pid, why)
			if lat == nil {
				b.Log(msg)
			} else {
				*missed = append(*missed, msg)
			}
			continue
		}
		if lat == nil {
			continue
		}
		d := got.at.Sub(w.moment)
		if d < 0 {
			b.Errorf("round %d: %s alert came %v before its condition could hold: %v", r, w.detector, -d, got.a.Labels)
		}
		lat[w.detector] = append(lat[w.detector], d)
		// startsAt is the evaluation that found the condition: the rest is
		// storing and publishing the alert.
		lat[w.detector+" publish"] = append(lat[w.detector+" publish"], got.at.Sub(got.a.StartsAt))
	}
	return all
}

// slowHandshakes makes slowConnects concurrent connects to a fresh listener
// whose first SYN is dropped; it returns the endpoint and when the
// handshakesNeeded-th connect returned. A few more connects than needed:
// under the churn the probe's socket LRU map can evict a socket waiting in
// SYN_SENT (see kernel_map_evictions), which loses its handshake time; the
// extra ones finish within milliseconds of the others.
func slowHandshakes(b *testing.B) (remote string, needed time.Time) {
	ln, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { ln.Close() })
	go acceptAndClose(ln)
	port := ln.Addr().(*net.TCPAddr).Port
	netfault.DropFirstSYN(b, "", port)
	var mu sync.Mutex
	var wg sync.WaitGroup
	var returned []time.Time
	for range slowConnects {
		wg.Go(func() {
			start := time.Now()
			c, err := net.DialTimeout("tcp4", ln.Addr().String(), 10*time.Second)
			done := time.Now()
			if err != nil {
				b.Error(err)
				return
			}
			c.Close()
			if took := done.Sub(start); took < 900*time.Millisecond {
				b.Errorf("connect to port %d took %v: the first SYN was not dropped", port, took)
			}
			mu.Lock()
			returned = append(returned, done)
			mu.Unlock()
		})
	}
	wg.Wait()
	if len(returned) < handshakesNeeded {
		b.Fatalf("%d of %d connects to port %d succeeded", len(returned), slowConnects, port)
	}
	slices.SortFunc(returned, time.Time.Compare)
	return ln.Addr().String(), returned[handshakesNeeded-1]
}

func acceptAndClose(ln net.Listener) {
	for {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		c.Close()
	}
}

// refusedConnects makes failuresNeeded connects to a port that is bound but
// not listening (so nothing else can take it): each is refused.
func refusedConnects(b *testing.B) (remote string, last time.Time) {
	fd, err := syscall.Socket(syscall.AF_INET, syscall.SOCK_STREAM|syscall.SOCK_CLOEXEC, 0)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { syscall.Close(fd) })
	if err := syscall.Bind(fd, &syscall.SockaddrInet4{Addr: [4]byte{127, 0, 0, 1}}); err != nil {
		b.Fatal(err)
	}
	sa, err := syscall.Getsockname(fd)
	if err != nil {
		b.Fatal(err)
	}
	remote = "127.0.0.1:" + strconv.Itoa(sa.(*syscall.SockaddrInet4).Port)
	for range failuresNeeded {
		c, err := net.Dial("tcp4", remote)
		last = time.Now()
		if err == nil {
			c.Close()
			b.Fatalf("connect to %s succeeded, want refused", remote)
		}
		if !errors.Is(err, syscall.ECONNREFUSED) {
			b.Fatalf("connect to %s: %v, want refused", remote, err)
		}
	}
	return remote, last
}

// leakSocketsHere accepts leakSockets connections on a fresh port and
// never closes them; the clients close, leaving the server side in
// CLOSE_WAIT. It returns the port and when the last client close returned.
func leakSocketsHere(b *testing.B) (port string, closed time.Time) {
	ln, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	accepted := make(chan net.Conn, leakSockets)
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			accepted <- c
		}
	}()
	var held []net.Conn
	b.Cleanup(func() {
		ln.Close()
		for _, c := range held {
			c.Close()
		}
	})
	clients := make([]net.Conn, 0, leakSockets)
	for range leakSockets {
		c, err := net.Dial("tcp4", ln.Addr().String())
		if err != nil {
			b.Fatal(err)
		}
		clients = append(clients, c)
	}
	// Close only once every connection is accepted: the leaked sockets
	// belong to this process from accept on.
	deadline := time.After(10 * time.Second)
	for len(held) < leakSockets {
		select {
		case c := <-accepted:
			held = append(held, c)
		case <-deadline:
			b.Fatalf("accepted %d of %d connections", len(held), leakSockets)
		}
	}
	for _, c := range clients {
		c.Close()
	}
	return strconv.Itoa(ln.Addr().(*net.TCPAddr).Port), time.Now()
}

// latencyAlerts keeps every alert with the time it arrived here.
type latencyAlerts struct {
	url  string
	mu   sync.Mutex
	all  []timedAlert
	wake chan struct{}
}

type timedAlert struct {
	at time.Time
	a  alert.Alert
}

// watchLatencyAlerts subscribes to netpulse.alerts.<detector>.> for each
// detector, as a user waiting for that detector's alerts would.
func watchLatencyAlerts(b *testing.B, url string, detectors []string) *latencyAlerts {
	nc, err := nats.Connect(url)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(nc.Close)
	w := &latencyAlerts{url: url, wake: make(chan struct{})}
	for _, d := range detectors {
		if _, err := nc.Subscribe(wire.AlertsPrefix+"."+d+".>", func(m *nats.Msg) {
			at := time.Now()
			var a alert.Alert
			if err := json.Unmarshal(m.Data, &a); err != nil {
				b.Errorf("alert on %s is not JSON: %v", m.Subject, err)
				return
			}
			if a.Detector != d {
				b.Errorf("alert of %s on %s", a.Detector, m.Subject)
			}
			w.mu.Lock()
			w.all = append(w.all, timedAlert{at, a})
			close(w.wake)
			w.wake = make(chan struct{})
			w.mu.Unlock()
		}); err != nil {
			b.Fatal(err)
		}
	}
	if err := nc.Flush(); err != nil {
		b.Fatal(err)
	}
	return w
}

// wait returns the first alert of detector for which match holds, and
// false when ctx ends first.
func (w *latencyAlerts) wait(ctx context.Context, detector string, match func(alert.Alert) bool) (timedAlert, bool) {
	for seen := 0; ; {
		w.mu.Lock()
		for ; seen < len(w.all); seen++ {
			if t := w.all[seen]; t.a.Detector == detector && match(t.a) {
				w.mu.Unlock()
				return t, true
			}
		}
		wake := w.wake
		w.mu.Unlock()
		select {
		case <-wake:
		case <-ctx.Done():
			return timedAlert{}, false
		}
	}
}

// of describes detector's alerts so far, for a failure message.
func (w *latencyAlerts) of(detector string) string {
	w.mu.Lock()
	defer w.mu.Unlock()
	var got []string
	for _, t := range w.all {
		if t.a.Detector == detector {
			got = append(got, fmt.Sprintf("%s %v", t.a.Status, t.a.Labels))
		}
	}
	n := len(got)
	return fmt.Sprintf("%d alerts so far, the last: %s", n, strings.Join(got[max(n-3, 0):], "; "))
}

// handshakesInStream says what the probe published about the client
// handshakes to remote since start: whether a missing slow_handshake alert
// lacks its events or the detector missed them.
func handshakesInStream(ctx context.Context, url, host, remote string, start time.Time) string {
	ap, err := netip.ParseAddrPort(remote)
	if err != nil {
		return err.Error()
	}
	nc, err := nats.Connect(url)
	if err != nil {
		return err.Error()
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		return err.Error()
	}
	ctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	subject := wire.EventSubject(host, wire.KindState)
	st, err := js.Stream(ctx, wire.EventsStream)
	if err != nil {
		return err.Error()
	}
	last, err := st.GetLastMsgForSubject(ctx, subject)
	if err != nil {
		return err.Error()
	}
	cons, err := st.OrderedConsumer(ctx, jetstream.OrderedConsumerConfig{
		FilterSubjects: []string{subject}, DeliverPolicy: jetstream.DeliverByStartTimePolicy, OptStartTime: &start})
	if err != nil {
		return err.Error()
	}
	// Read up to what the stream held when this began (a busy server can
	// take seconds to deliver: a short wait is no end).
	var established, timed, slow int
	var batch eventpb.Batch
	for seq := uint64(0); seq < last.Sequence; {
		mb, err := cons.Fetch(256, jetstream.FetchMaxWait(5*time.Second))
		if err != nil {
			return err.Error()
		}
		for m := range mb.Messages() {
			if meta, err := m.Metadata(); err == nil {
				seq = meta.Sequence.Stream
			}
			batch.ResetVT()
			if err := batch.UnmarshalVT(m.Data()); err != nil {
				return err.Error()
			}
			for _, ev := range batch.Events {
				if ev.Dport != uint32(ap.Port()) || ev.OldState != eventpb.TcpState_TCP_STATE_SYN_SENT || ev.NewState != eventpb.TcpState_TCP_STATE_ESTABLISHED {
					continue
				}
				established++
				if ev.HandshakeUs > 0 {
					timed++
				}
				if ev.HandshakeUs >= 500000 {
					slow++
				}
			}
		}
		if ctx.Err() != nil {
			return fmt.Sprintf("reading the stream: %v after %d SYN_SENT->ESTABLISHED events to port %d", ctx.Err(), established, ap.Port())
		}
	}
	return fmt.Sprintf("the stream holds %d SYN_SENT->ESTABLISHED events to port %d since the round began, %d with handshake_us, %d of them ≥ 500 ms",
		established, ap.Port(), timed, slow)
}

// probeStats follows the probe's stats reports.
type probeStats struct {
	ch chan probeReport
}

type probeReport struct {
	Time            time.Time `json:"time"`
	EventsPublished uint64    `json:"events_published"`
	RingbufDrops    uint64    `json:"ringbuf_drops"`
	Maps            []struct {
		Name      string
		Evictions uint64
	} `json:"maps"`
}

// evictions is how many entries the kernel LRU maps pushed out.
func (r probeReport) evictions() uint64 {
	var n uint64
	for _, m := range r.Maps {
		n += m.Evictions
	}
	return n
}

func watchProbeStats(b *testing.B, url, host string) *probeStats {
	nc, err := nats.Connect(url)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(nc.Close)
	s := &probeStats{ch: make(chan probeReport, 4096)}
	if _, err := nc.Subscribe(wire.EventSubject(host, wire.KindStats), func(m *nats.Msg) {
		var r probeReport
		if err := json.Unmarshal(m.Data, &r); err != nil {
			b.Errorf("probe stats are not JSON: %v", err)
			return
		}
		s.ch <- r
	}); err != nil {
		b.Fatal(err)
	}
	if err := nc.Flush(); err != nil {
		b.Fatal(err)
	}
	return s
}

// next waits for the next report.
func (s *probeStats) next(b *testing.B, ctx context.Context) probeReport {
	select {
	case r := <-s.ch:
		return r
	case <-ctx.Done():
		b.Fatal("no probe stats")
		return probeReport{}
	}
}

// last drains what arrived and returns the newest report (waiting for one
// when none did).
func (s *probeStats) last(b *testing.B, ctx context.Context) probeReport {
	r := s.next(b, ctx)
	for {
		select {
		case r = <-s.ch:
		default:
			return r
		}
	}
}

// churn is the background load: threads that connect to and close a
// loopback listener as fast as they can, in a network namespace of their
// own so that its TIME_WAIT sockets and ports do not touch the faults on
// the host's loopback. The probe traces every namespace. Plain blocking
// syscalls on locked threads: a loopback connect completes within the
// call, and the Go netpoller would only add work the load does not need.
type churn struct {
	stopped atomic.Bool
	conns   atomic.Uint64
	wg      sync.WaitGroup
	start   time.Time
	secs    float64 // from start to stop
	lfd     int
}

// startChurn runs workers connecting threads and two accepting ones in a
// fresh namespace (netfault's, with its loopback up). Each moves its OS
// thread into the namespace and never gives it back (the thread exits with
// the goroutine), so the sockets it makes live there.
func startChurn(b testing.TB, workers int) *churn {
	link := netfault.NewLink(b)
	nsFile, err := os.Open(filepath.Join("/var/run/netns", link.NS))
	if err != nil {
		b.Fatal(err)
	}
	defer nsFile.Close()
	enter := func() error {
		runtime.LockOSThread() // never unlocked: the thread dies with the goroutine
		if err := unix.Setns(int(nsFile.Fd()), unix.CLONE_NEWNET); err != nil {
			return fmt.Errorf("setns %s: %w", link.NS, err)
		}
		return nil
	}
	c := &churn{lfd: -1}
	ready := make(chan error, 1)
	var addr unix.SockaddrInet4
	go func() {
		err := enter()
		if err == nil {
			c.lfd, addr, err = rawListen()
		}
		ready <- err
	}()
	if err := <-ready; err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { c.stop() })
	c.start = time.Now()
	for range 2 {
		c.wg.Go(func() {
			for {
				fd, _, err := unix.Accept4(c.lfd, unix.SOCK_CLOEXEC)
				switch {
				case err == nil:
					unix.Close(fd)
				case c.stopped.Load():
					return
				case err == unix.EINTR || err == unix.ECONNABORTED:
				default:
					b.Errorf("churn accept: %v", err)
					return
				}
			}
		})
	}
	started := make(chan error, workers)
	for range workers {
		c.wg.Go(func() {
			err := enter()
			started <- err
			if err != nil {
				return
			}
			for !c.stopped.Load() {
				fd, err := unix.Socket(unix.AF_INET, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
				if err == nil {
					err = unix.Connect(fd, &addr)
					unix.Close(fd)
				}
				if err != nil {
					if err == unix.EINTR {
						continue
					}
					if !c.stopped.Load() {
						b.Errorf("churn: %v", err)
					}
					return
				}
				c.conns.Add(1)
			}
		})
	}
	for range workers {
		if err := <-started; err != nil {
			b.Fatal(err)
		}
	}
	return c
}

// rawListen listens on 127.0.0.1 on a free port (in the calling thread's
// namespace), blocking.
func rawListen() (int, unix.SockaddrInet4, error) {
	addr := unix.SockaddrInet4{Addr: [4]byte{127, 0, 0, 1}}
	fd, err := unix.Socket(unix.AF_INET, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return -1, addr, err
	}
	if err = unix.Bind(fd, &addr); err == nil {
		err = unix.Listen(fd, 4096)
	}
	var sa unix.Sockaddr
	if err == nil {
		sa, err = unix.Getsockname(fd)
	}
	if err != nil {
		unix.Close(fd)
		return -1, addr, err
	}
	addr.Port = sa.(*unix.SockaddrInet4).Port
	return fd, addr, nil
}

// stop ends the load and says how many connections it made in how long.
func (c *churn) stop() (conns uint64, secs float64) {
	if !c.stopped.Swap(true) {
		// Shutting the listener down wakes the blocked accepts (EINVAL);
		// the connectors see the flag after their current connection.
		_ = unix.Shutdown(c.lfd, unix.SHUT_RDWR)
		c.secs = time.Since(c.start).Seconds()
		c.wg.Wait()
		unix.Close(c.lfd)
	}
	return c.conns.Load(), c.secs
}

// processCPU is the user+system CPU time of process pid in seconds.
func processCPU(b *testing.B, pid int) float64 {
	cpu, err := procstat.CPU(pid)
	if err != nil {
		b.Fatal(err)
	}
	return cpu.Seconds()
}

func randHex(n int) string {
	p := make([]byte, n)
	_, _ = crand.Read(p)
	return hex.EncodeToString(p)
}
