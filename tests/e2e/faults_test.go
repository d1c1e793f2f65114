package e2e

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"net"
	"os"
	"os/exec"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/netpulse/netpulse/lib/alert"
	"github.com/netpulse/netpulse/lib/testutil/netfault"
)

// Detector settings for tests: the defaults, with windows short enough for
// a test (the thresholds stay as shipped).
var fastDetectors = []string{
	"--detector.conn_leak.min_age=2s",
	"--detector.slow_handshake.window=6s",
	"--detector.retransmit_spike.window=2s",
	"--detector.retransmit_spike.min_duration=2s",
	"--detector.retransmit_spike.baseline_windows=2",
	"--detector.conn_failure.window=6s",
	"--group.member_ttl=2s",
	"--stats.interval=1s", // evaluations show in the log: how far learning got
	"--evaluate_interval=500ms",
}

func (p *pipeline) startDetector(ctx context.Context, args ...string) *proc {
	d := start(p.t, "detector", append(p.natsArgs("detector"), args...)...)
	d.waitLog(ctx, "running")
	return d
}

// startAll starts sink, detector and probe, the probe last and with
// snapshots every second.
func (p *pipeline) startAll(ctx context.Context, probeArgs ...string) (sink, det, probe *proc) {
	return p.startAllWith(ctx, nil, probeArgs...)
}

// startAllWith is startAll with more detector arguments.
func (p *pipeline) startAllWith(ctx context.Context, detectorArgs []string, probeArgs ...string) (sink, det, probe *proc) {
	sink = p.startSink(ctx)
	det = p.startDetector(ctx, append(slices.Clone(fastDetectors), detectorArgs...)...)
	probe = start(p.t, "probe", append(append(p.natsArgs("probe"), "--host="+p.host,
		"--batch.flush_interval=50ms", "--stats.interval=1s", "--snapshot.interval=1s"), probeArgs...)...)
	probe.waitLog(ctx, "probe running")
	p.t.Cleanup(func() {
		if p.t.Failed() {
			for name, pr := range map[string]*proc{"probe": probe, "detector": det} {
				p.t.Logf("%s log (last 3000 bytes):\n%s", name, tail(pr.log(), 3000))
			}
		}
	})
	return sink, det, probe
}

// alerts subscribes to netpulse.alerts.> like a user would.
type alerts struct {
	t   *testing.T
	mu  sync.Mutex
	ch  chan alert.Alert
	all []alert.Alert
}

func (p *pipeline) watchAlerts() *alerts {
	nc, err := nats.Connect(p.url, nats.MaxReconnects(-1))
	if err != nil {
		p.t.Fatal(err)
	}
	p.t.Cleanup(nc.Close)
	a := &alerts{t: p.t, ch: make(chan alert.Alert, 1024)}
	if _, err := nc.Subscribe("netpulse.alerts.>", func(m *nats.Msg) {
		var al alert.Alert
		if err := json.Unmarshal(m.Data, &al); err != nil {
			p.t.Errorf("alert on %s is not JSON: %v", m.Subject, err)
			return
		}
		if want := fmt.Sprintf("netpulse.alerts.%s.%s.%s", al.Detector, al.Severity, al.Host); m.Subject != want {
			p.t.Errorf("alert on %s, want subject %s", m.Subject, want)
		}
		a.mu.Lock()
		a.all = append(a.all, al)
		a.mu.Unlock()
		a.ch <- al
	}); err != nil {
		p.t.Fatal(err)
	}
	if err := nc.Flush(); err != nil {
		p.t.Fatal(err)
	}
	return a
}

// wait returns the first alert for which match is true.
func (a *alerts) wait(ctx context.Context, what string, match func(alert.Alert) bool) alert.Alert {
	a.t.Helper()
	for {
		select {
		case al := <-a.ch:
			if match(al) {
				return al
			}
		case <-ctx.Done():
			a.mu.Lock()
			defer a.mu.Unlock()
			a.t.Fatalf("no alert %s; got %d others: %+v", what, len(a.all), a.all)
		}
	}
}

func (a *alerts) seen() []alert.Alert {
	a.mu.Lock()
	defer a.mu.Unlock()
	return append([]alert.Alert(nil), a.all...)
}

// leaker is a process of its own that accepts connections and never closes
// them: once the clients leave, its sockets sit in CLOSE_WAIT.
func leaker(t *testing.T) (cmd *exec.Cmd, port int) {
	t.Helper()
	cmd = exec.Command("python3", "-c", `
import socket, sys
ls = socket.socket(); ls.bind(("127.0.0.1", 0)); ls.listen(128)
print(ls.getsockname()[1], flush=True)
held = []
while True:
    c, _ = ls.accept(); held.append(c)
`)
	return cmd, startServer(t, "leaker", cmd)
}

// startServer starts cmd, a server that prints its port on its first line
// once it listens, and returns that port; cmd is killed at cleanup.
func startServer(t *testing.T, what string, cmd *exec.Cmd) int {
	t.Helper()
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatalf("%s: %v", what, err)
	}
	t.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })
	line, err := bufio.NewReader(out).ReadString('\n')
	if err != nil {
		t.Fatalf("%s: %v", what, err)
	}
	port, err := strconv.Atoi(strings.TrimSpace(line))
	if err != nil {
		t.Fatalf("%s port %q: %v", what, line, err)
	}
	return port
}

// closeWaitOn counts the sockets in CLOSE_WAIT on local port, per ss.
func closeWaitOn(t *testing.T, port int) int {
	out, err := exec.Command("ss", "-tanH", "state", "close-wait", "sport", "= :"+strconv.Itoa(port)).Output()
	if err != nil {
		t.Fatal(err)
	}
	return len(strings.Fields(strings.TrimSpace(string(out)))) / 4 // Recv-Q Send-Q Local Peer
}

// A process leaked CLOSE_WAIT sockets an hour... well, seconds before the
// probe started: the probe finds them through sock_diag with their owner,
// snapshots carry them to ClickHouse and to conn_leak, which fires naming
// the process and port, and resolves once the sockets are gone.
func TestLeakFromBeforeTheProbe(t *testing.T) {
	p := newPipeline(t)
	ctx, cancel := context.WithTimeout(context.Background(), 45*time.Second)
	defer cancel()
	cmd, port := leaker(t)
	const leaked = 12
	for i := 0; i < leaked; i++ {
		c, err := net.Dial("tcp4", "127.0.0.1:"+strconv.Itoa(port))
		if err != nil {
			t.Fatal(err)
		}
		c.Close()
	}
	for closeWaitOn(t, port) != leaked {
		select {
		case <-ctx.Done():
			t.Fatalf("ss shows %d CLOSE_WAIT sockets on port %d, want %d", closeWaitOn(t, port), port, leaked)
		case <-time.After(20 * time.Millisecond):
		}
	}

	al := p.watchAlerts()
	sink, _, probe := p.startAll(ctx)
	// The snapshots in ClickHouse name the owner of every leaked socket,
	// found by the /proc scan at start.
	p.waitRows(ctx, leaked, `SELECT count() FROM socket_snapshots WHERE host = ? AND row_kind = 'close_wait' AND local_port = ?
		AND seq = (SELECT max(seq) FROM socket_snapshots WHERE host = ? AND row_kind = 'summary')
		AND pid = ? AND comm = 'python3' AND owner_source = 'scan' AND age_estimated = 1`,
		p.host, uint16(port), p.host, uint32(cmd.Process.Pid))

	pid := strconv.Itoa(cmd.Process.Pid)
	fired := al.wait(ctx, "conn_leak firing for the leaker", func(a alert.Alert) bool {
		return a.Detector == "conn_leak" && a.Status == alert.Firing && a.Labels["local_port"] == strconv.Itoa(port)
	})
	if fired.Labels["pid"] != pid || fired.Labels["comm"] != "python3" || fired.Annotations["count"] != strconv.Itoa(leaked) || fired.Host != p.host {
		t.Errorf("alert labels %v annotations %v (host %s), want pid %s comm python3 count %d", fired.Labels, fired.Annotations, fired.Host, pid, leaked)
	}
	if age, err := strconv.ParseFloat(fired.Annotations["oldest_age_seconds"], 64); err != nil || age < 2 {
		t.Errorf("oldest_age_seconds %q, want at least min_age 2s", fired.Annotations["oldest_age_seconds"])
	}
	if fired.SQL == "" || fired.Fingerprint == "" {
		t.Errorf("alert without SQL or fingerprint: %+v", fired)
	}

	// Gone: the alert resolves.
	_ = cmd.Process.Kill()
	_ = cmd.Wait()
	resolved := al.wait(ctx, "conn_leak resolved", func(a alert.Alert) bool {
		return a.Detector == "conn_leak" && a.Status == alert.Resolved && a.Fingerprint == fired.Fingerprint
	})
	if resolved.EndsAt == nil || resolved.EndsAt.Before(resolved.StartsAt) {
		t.Errorf("resolved alert without a proper endsAt: %+v", resolved)
	}
	probe.stop()
	// Both transitions are stored.
	p.waitRows(ctx, 2, "SELECT count() FROM alerts WHERE host = ? AND fingerprint = ?", p.host, fired.Fingerprint)
	sink.stop()
}

// nftables drops the first SYN of every connection to a port: handshakes
// take about a second, and slow_handshake names the endpoint and the
// connecting process.
func TestSlowHandshakeAlert(t *testing.T) {
	p := newPipeline(t)
	ctx, cancel := context.WithTimeout(context.Background(), 45*time.Second)
	defer cancel()
	ln, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			c.Close()
		}
	}()
	port := ln.Addr().(*net.TCPAddr).Port
	al := p.watchAlerts()
	p.startAll(ctx)
	netfault.DropFirstSYN(t, "", port)
	var wg sync.WaitGroup
	for i := 0; i < 15; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			c, err := net.DialTimeout("tcp4", ln.Addr().String(), 10*time.Second)
			if err != nil {
				t.Error(err)
				return
			}
			c.Close()
		}()
	}
	wg.Wait()
	remote := "127.0.0.1:" + strconv.Itoa(port)
	a := al.wait(ctx, "slow_handshake for "+remote, func(a alert.Alert) bool {
		return a.Detector == "slow_handshake" && a.Status == alert.Firing && a.Labels["remote"] == remote
	})
	if a.Labels["side"] != "client" || a.Annotations["pid"] != strconv.Itoa(os.Getpid()) || a.Value < 900 || a.Value > 3500 {
		t.Errorf("alert %v %v value %.0f ms: want side client, pid %d, about 1000 ms", a.Labels, a.Annotations, a.Value, os.Getpid())
	}
}

// A healthy mixed load (short IPv4 and IPv6 connections to servers that
// close properly, bulk transfers over a veth link) raises nothing at all on
// the host: the end-to-end tests run on their own (see the Makefile), so
// every alert would be a false one.
func TestHealthyLoadRaisesNothing(t *testing.T) {
	p := newPipeline(t)
	ctx, cancel := context.WithTimeout(context.Background(), 45*time.Second)
	defer cancel()
	link := netfault.NewLink(t)
	bulkPort := discardServer(t, link)
	al := p.watchAlerts()
	_, det, _ := p.startAll(ctx)
	stats := p.statsWatcher(t)

	sendCtx, stopSend := context.WithCancel(ctx)
	defer stopSend()
	sent := make(chan error, 2)
	for range 2 {
		c, err := net.Dial("tcp4", net.JoinHostPort(link.PeerAddr, strconv.Itoa(bulkPort)))
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		go func() { sent <- sendUntil(sendCtx, c) }()
	}
	connect(t, "tcp4", "127.0.0.1:0", 3000, 4)
	connect(t, "tcp6", "[::1]:0", 1000, 2)
	// Let every detector evaluate windows that hold the load: the longest
	// test window is 6 s, evaluated every 500 ms.
	last := stats(10 * time.Second)
	stopSend()
	for range 2 {
		if err := <-sent; err != nil {
			t.Errorf("bulk transfer: %v", err)
		}
	}
	if last["events_published"].(float64) < 3000*10 {
		t.Fatalf("probe published %v events for 4000 connections", last["events_published"])
	}
	for _, a := range al.seen() {
		t.Errorf("healthy load raised %s %s: %s %v", a.Detector, a.Status, a.Summary(), a.Labels)
	}
	if !strings.Contains(det.log(), "detector stats") {
		t.Logf("detector log:\n%s", det.log())
	}
}

func tail(s string, n int) string {
	if len(s) > n {
		return s[len(s)-n:]
	}
	return s
}
