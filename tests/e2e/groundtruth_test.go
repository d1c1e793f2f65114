package e2e

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"net"
	"os"
	"os/exec"
	"strconv"
	"syscall"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/netpulse/netpulse/lib/testutil/priv"
	"github.com/netpulse/netpulse/lib/wire"
)

// bpftraceCount counts sock:inet_sock_set_state TCP events on port until
// stop is called, like a person checking netpulse by hand would.
func bpftraceCount(t *testing.T, ctx context.Context, port int) (stop func() uint64) {
	t.Helper()
	if _, err := exec.LookPath("bpftrace"); err != nil {
		priv.Skip(t, "bpftrace is not installed (apt-get install bpftrace)")
	}
	// bpftrace reads tracepoint formats from tracefs; a fresh machine may
	// not have it mounted yet (the probe mounts it too).
	if _, err := os.Stat("/sys/kernel/tracing/events"); err != nil {
		if err := syscall.Mount("tracefs", "/sys/kernel/tracing", "tracefs", syscall.MS_NOSUID|syscall.MS_NODEV|syscall.MS_NOEXEC, ""); err != nil {
			t.Fatalf("mount tracefs for bpftrace: %v", err)
		}
	}
	prog := fmt.Sprintf(`tracepoint:sock:inet_sock_set_state /args->protocol == 6 && (args->sport == %d || args->dport == %d)/ { @n = count(); } BEGIN { printf("ready\n"); }`, port, port)
	cmd := exec.Command("bpftrace", "-e", prog)
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })
	lines := make(chan string, 16)
	go func() {
		sc := bufio.NewScanner(out)
		for sc.Scan() {
			lines <- sc.Text()
		}
		close(lines)
	}()
	// "Attaching N probes" comes before the attachment; BEGIN runs after it.
	for ready := false; !ready; {
		select {
		case l, ok := <-lines:
			if !ok {
				t.Fatal("bpftrace exited before attaching")
			}
			ready = l == "ready"
		case <-ctx.Done():
			t.Fatal("bpftrace did not attach in time")
		}
	}
	return func() uint64 {
		_ = cmd.Process.Signal(interruptSignal)
		// bpftrace prints its maps when it exits: "@n: 12345".
		for l := range lines {
			if v, ok := cutPrefix(l, "@n: "); ok {
				n, err := strconv.ParseUint(v, 10, 64)
				if err != nil {
					t.Fatalf("bpftrace printed %q", l)
				}
				return n
			}
		}
		return 0 // no event matched: bpftrace prints no map
	}
}

// bindLoopback binds a TCP socket to 127.0.0.1 on a free port without
// listening yet (no state change happens until listen).
func bindLoopback(t *testing.T) (port int, listen func() net.Listener) {
	t.Helper()
	fd, err := syscall.Socket(syscall.AF_INET, syscall.SOCK_STREAM|syscall.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	if err := syscall.Bind(fd, &syscall.SockaddrInet4{Addr: [4]byte{127, 0, 0, 1}}); err != nil {
		t.Fatal(err)
	}
	sa, err := syscall.Getsockname(fd)
	if err != nil {
		t.Fatal(err)
	}
	return sa.(*syscall.SockaddrInet4).Port, func() net.Listener {
		if err := syscall.Listen(fd, 4096); err != nil {
			t.Fatal(err)
		}
		f := os.NewFile(uintptr(fd), "listener")
		defer f.Close()
		ln, err := net.FileListener(f)
		if err != nil {
			t.Fatal(err)
		}
		return ln
	}
}

func cutPrefix(s, p string) (string, bool) {
	if len(s) >= len(p) && s[:len(p)] == p {
		return s[len(p):], true
	}
	return "", false
}

// 1,000 short loopback connections: ClickHouse holds exactly the
// transitions bpftrace counts on the same tracepoint for that port.
func TestRowsMatchBpftrace(t *testing.T) {
	p := newPipeline(t)
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	p.startSink(ctx)
	probe := p.startProbe(ctx)
	// Bind first to learn the port, listen only once bpftrace watches it, so
	// that both see the listener's CLOSE->LISTEN.
	port, listen := bindLoopback(t)
	stopTrace := bpftraceCount(t, ctx, port)
	serve(t, listen(), 1000, 8)
	// The last transitions can run a little later in softirq context, so
	// first wait (at most 10 s) for all 10 per connection plus the
	// listener's 2, then stop bpftrace and compare exactly. Fewer than that
	// is no failure by itself: the kernel may skip a tracepoint's programs
	// (bpftrace's too; the probe counts it in kernel_misses).
	wctx, wcancel := context.WithTimeout(ctx, 10*time.Second)
	defer wcancel()
	q := "SELECT count() FROM tcp_events WHERE host = ? AND (sport = ? OR dport = ?)"
	p.awaitRows(wctx, 10*1000+2, q, p.host, uint16(port), uint16(port))
	want := stopTrace()
	wctx, wcancel = context.WithTimeout(ctx, 10*time.Second)
	defer wcancel()
	p.waitRows(wctx, want, q, p.host, uint16(port), uint16(port))
	probe.stop()
	if got := p.uint64(q, p.host, uint16(port), uint16(port)); got != want {
		t.Errorf("tcp_events holds %d rows for port %d, bpftrace counted %d", got, port, want)
	}
}

// statsWatcher subscribes to the probe's stats and returns a function that
// gives the last report received by the end of the next d.
func (p *pipeline) statsWatcher(t *testing.T) func(d time.Duration) map[string]any {
	t.Helper()
	nc, err := nats.Connect(p.url, nats.MaxReconnects(-1))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	ch := make(chan *nats.Msg, 1024)
	if _, err := nc.ChanSubscribe(wire.EventSubject(p.host, wire.KindStats), ch); err != nil {
		t.Fatal(err)
	}
	return func(d time.Duration) map[string]any {
		ctx, cancel := context.WithTimeout(context.Background(), d)
		defer cancel()
		var last map[string]any
		for {
			select {
			case m := <-ch:
				last = nil
				if err := json.Unmarshal(m.Data, &last); err != nil {
					t.Fatalf("stats are not JSON: %v: %s", err, m.Data)
				}
			case <-ctx.Done():
				if last == nil {
					t.Fatal("no probe stats received")
				}
				return last
			}
		}
	}
}

// SIGKILL the sink in the middle of a load, start it again: every event the
// probe published is in ClickHouse exactly once.
func TestSinkKilledMidLoad(t *testing.T) {
	p := newPipeline(t)
	// The dead sink's messages come back after consumer.ack_wait (15 s).
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	stats := p.statsWatcher(t)
	sink := p.startSink(ctx)
	probe := p.startProbe(ctx)

	loadDone := make(chan struct{})
	go func() {
		defer close(loadDone)
		connect(t, "tcp4", "127.0.0.1:0", 30000, 8)
	}()
	// Kill it once it has stored some rows and is in the middle of more.
	p.waitRows(ctx, 20000, "SELECT count() FROM tcp_events WHERE host = ?", p.host)
	sink.kill(killSignal)
	killedAt := p.uint64("SELECT count() FROM tcp_events WHERE host = ?", p.host)
	sink2 := p.startSink(ctx)
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("restarted sink's log:\n%s", sink2.log())
		}
	})
	<-loadDone
	probe.stop()
	last := stats(2 * time.Second)

	t.Logf("sink killed with %d rows stored", killedAt)
	p.storedOnce(ctx, last, 300000)
}

// storedOnce checks that every record the probe published (its last stats
// line) is in ClickHouse exactly once, and that there were at least min.
func (p *pipeline) storedOnce(ctx context.Context, last map[string]any, min uint64) {
	t := p.t
	t.Helper()
	published := uint64(last["events_published"].(float64))
	if drops := last["ringbuf_drops"].(float64); drops != 0 {
		t.Errorf("probe dropped %v records in the ring buffer", drops)
	}
	if published < min {
		t.Fatalf("probe published %d events, want at least %d", published, min)
	}
	// Every record the probe published is a row of tcp_events (events) or
	// tcp_connections (finished connections), one snapshot, or a row of
	// tcp_drops (a drop count); events and connections share the probe's
	// seq, a drop count is one by its interval and key.
	const records = `SELECT (SELECT count() FROM tcp_events WHERE host = ?) + (SELECT count() FROM tcp_connections WHERE host = ?)
		+ (SELECT uniqExact(probe_id, seq) FROM socket_snapshots WHERE host = ?) + (SELECT count() FROM tcp_drops WHERE host = ?)`
	p.waitRows(ctx, published, records, p.host, p.host, p.host, p.host)
	rows := p.uint64(records, p.host, p.host, p.host, p.host)
	snapshots := p.uint64("SELECT uniqExact(probe_id, seq) FROM socket_snapshots WHERE host = ?", p.host)
	drops := p.uint64(`SELECT uniqExact(probe_id, time_ns, source, reason, saddr, sport, daddr, dport, ingress)
		FROM tcp_drops WHERE host = ?`, p.host)
	distinct := p.uint64(`SELECT uniqExact(probe_id, seq) FROM (SELECT probe_id, seq FROM tcp_events WHERE host = ?
		UNION ALL SELECT probe_id, seq FROM tcp_connections WHERE host = ?)`, p.host, p.host) + snapshots + drops
	maxSeq := p.uint64(`SELECT max(seq) FROM (SELECT seq FROM tcp_events WHERE host = ?
		UNION ALL SELECT seq FROM tcp_connections WHERE host = ?)`, p.host, p.host) + snapshots + drops
	t.Logf("probe published %d records; %d stored, %d distinct, max seq + snapshots + drop counts %d", published, rows, distinct, maxSeq)
	if rows != published || distinct != published || maxSeq != published {
		t.Errorf("rows %d, distinct events %d, max seq %d: want all equal to the %d events published (none lost, none doubled)", rows, distinct, maxSeq, published)
	}
}
