package e2e

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"math"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2"

	"github.com/netpulse/netpulse/lib/testutil/freeport"
	"github.com/netpulse/netpulse/lib/testutil/priv"
	"github.com/netpulse/netpulse/lib/testutil/repofile"
)

// makeRun is deploy/run.sh (`make run`) on free ports, its data in a
// temporary folder, with this test run's binaries.
type makeRun struct {
	t       *testing.T
	cmd     *exec.Cmd
	state   string
	chPort  int
	mu      sync.Mutex
	console []string // its console lines
	bell    chan struct{}
}

func startMakeRun(t *testing.T, ctx context.Context) *makeRun {
	t.Helper()
	script, err := repofile.Find("deploy/run.sh")
	if err != nil {
		t.Fatal(err)
	}
	r := &makeRun{t: t, state: t.TempDir(), chPort: freeport.Get(t), bell: make(chan struct{})}
	metrics := fmt.Sprintf("%d %d %d", freeport.Get(t), freeport.Get(t), freeport.Get(t))
	r.cmd = exec.Command("bash", script)
	r.cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	r.cmd.Env = append(os.Environ(),
		"NETPULSE_RUN_STATE="+r.state, "NETPULSE_RUN_BIN="+binDir,
		"NETPULSE_RUN_NATS_PORT="+strconv.Itoa(freeport.Get(t)),
		"NETPULSE_RUN_CLICKHOUSE_PORT="+strconv.Itoa(r.chPort),
		"NETPULSE_RUN_METRICS_PORTS="+metrics,
		"NETPULSE_RUN_ALERTMANAGER_PORT="+strconv.Itoa(freeport.Get(t)))
	// A pipe of our own: Wait then waits for the script, not for every
	// process that inherited its output.
	out, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	r.cmd.Stdout, r.cmd.Stderr = w, w
	if err := r.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	w.Close()
	exited := make(chan struct{})
	go func() {
		_ = r.cmd.Wait()
		close(exited)
	}()
	go func() {
		defer out.Close()
		sc := bufio.NewScanner(out)
		for sc.Scan() {
			r.mu.Lock()
			r.console = append(r.console, sc.Text())
			close(r.bell)
			r.bell = make(chan struct{})
			r.mu.Unlock()
		}
	}()
	t.Cleanup(func() {
		_ = r.cmd.Process.Signal(syscall.SIGTERM)
		stopAt := time.Now()
		select {
		case <-exited:
			t.Logf("make run stopped %s after SIGTERM", time.Since(stopAt).Round(time.Millisecond))
		case <-time.After(90 * time.Second):
			t.Error("make run did not stop within 90 s of SIGTERM")
			_ = r.cmd.Process.Signal(syscall.SIGINT) // the second signal kills everything
			<-exited
		}
		_ = syscall.Kill(-r.cmd.Process.Pid, syscall.SIGKILL) // what of its group is left (waits, polls)
		for _, name := range []string{"probe", "sink", "detector", "alertmanager", "nats", "clickhouse"} {
			if b, err := os.ReadFile(filepath.Join(r.state, "pids", name)); err == nil {
				t.Errorf("make run left %s's pid file (%s) behind", name, strings.TrimSpace(string(b)))
			}
		}
		if t.Failed() {
			t.Logf("make run console:\n%s", strings.Join(r.lines(), "\n"))
		}
	})
	for _, s := range []string{"detector", "sink", "probe"} {
		r.waitLine(ctx, 0, "make run: "+s+" ready")
	}
	return r
}

func (r *makeRun) lines() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]string(nil), r.console...)
}

// waitLine waits for a console line after the first from holding substr
// (colours stripped) and returns the index after it.
func (r *makeRun) waitLine(ctx context.Context, from int, substr string) int {
	r.t.Helper()
	for {
		r.mu.Lock()
		lines, bell := r.console, r.bell
		r.mu.Unlock()
		for i := from; i < len(lines); i++ {
			if strings.Contains(strings.NewReplacer("\033[1m", "", "\033[0m", "").Replace(lines[i]), substr) {
				return i + 1
			}
		}
		select {
		case <-bell:
		case <-ctx.Done():
			r.t.Fatalf("make run printed no %q", substr)
		}
	}
}

// kill9 SIGKILLs the service's current process and waits until make run
// says it is ready again; it returns how long that took.
func (r *makeRun) kill9(ctx context.Context, name string) time.Duration {
	r.t.Helper()
	b, err := os.ReadFile(filepath.Join(r.state, "pids", name))
	if err != nil {
		r.t.Fatal(err)
	}
	pid, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil {
		r.t.Fatal(err)
	}
	from := len(r.lines())
	start := time.Now()
	if err := syscall.Kill(pid, syscall.SIGKILL); err != nil {
		r.t.Fatal(err)
	}
	from = r.waitLine(ctx, from, name+" exited")
	r.waitLine(ctx, from, "make run: "+name+" ready")
	return time.Since(start)
}

// `make run` under load: the sink, then the detector, then the probe are
// killed -9; make run brings each back within seconds, and every
// transition of the load is in ClickHouse exactly once (bpftrace's count).
// The probe is killed between two loads, once what it held was stored:
// what the kernel raises while no probe runs is nobody's to claim, and
// what a killed probe held unpublished is lost by definition.
func TestMakeRunKeepsThePipelineUp(t *testing.T) {
	priv.RequireRoot(t)
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	r := startMakeRun(t, ctx)
	ch, err := clickhouse.Open(&clickhouse.Options{Addr: []string{"127.0.0.1:" + strconv.Itoa(r.chPort)}})
	if err != nil {
		t.Fatal(err)
	}
	defer ch.Close()
	// Once a load's listener is closed, its port is free for any
	// connection's ephemeral port (a service reconnecting): rows count up
	// to when bpftrace stopped counting.
	cuts := map[int]uint64{}
	count := func(port int) (rows, distinct uint64) {
		t.Helper()
		cut, ok := cuts[port]
		if !ok {
			cut = math.MaxUint64
		}
		// State changes only: bpftrace counts inet_sock_set_state, and
		// a SYN retransmitted under the load is a row of another type.
		if err := ch.QueryRow(ctx, `SELECT count(), uniqExact(probe_id, seq) FROM netpulse.tcp_events
			WHERE type = 'state_change' AND (sport = ? OR dport = ?) AND time_ns <= ?`, uint16(port), uint16(port), cut).Scan(&rows, &distinct); err != nil {
			t.Fatal(err)
		}
		return rows, distinct
	}
	// stored waits until ClickHouse holds want rows for port (the pipeline
	// is asynchronous; the deadline is the assertion), then checks none
	// twice. misses is how many program runs the kernel skipped meanwhile,
	// all BPF programs together (the probe's and bpftrace's alike: their
	// counts may then differ by that much, no more).
	stored := func(port int, want, misses uint64) {
		t.Helper()
		if misses > 0 {
			t.Logf("port %d: the kernel skipped %d BPF program runs during the load", port, misses)
		}
		for {
			rows, distinct := count(port)
			if rows+misses >= want {
				if rows != distinct || rows > want+misses || rows+misses < want {
					t.Errorf("port %d: %d rows, %d distinct events; bpftrace counted %d", port, rows, distinct, want)
					res, err := ch.Query(ctx, `SELECT toString(type), toString(old_state), toString(new_state), count() FROM netpulse.tcp_events
						WHERE (sport = ? OR dport = ?) AND time_ns <= ? GROUP BY 1, 2, 3 ORDER BY 1, 2, 3`, uint16(port), uint16(port), cuts[port])
					if err != nil {
						t.Logf("  breakdown: %v", err)
					} else {
						for res.Next() {
							var ty, from, to string
							var n uint64
							_ = res.Scan(&ty, &from, &to, &n)
							t.Logf("  %s %s -> %s: %d", ty, from, to, n)
						}
						res.Close()
					}
				}
				return
			}
			select {
			case <-ctx.Done():
				t.Fatalf("port %d: %d rows, bpftrace counted %d", port, rows, want)
			case <-time.After(100 * time.Millisecond):
			}
		}
	}
	load := func(conns int, during func()) (port int, want, misses uint64) {
		port, listen := bindLoopback(t)
		stopTrace := bpftraceCount(t, ctx, port)
		missed := recursionMisses(t)
		done := make(chan struct{})
		go func() {
			defer close(done)
			serve(t, listen(), conns, 4)
		}()
		during()
		<-done
		// The last transitions can come a moment later (softirq): wait
		// for 10 per connection and the listener's 2, at most 10 s.
		wctx, wcancel := context.WithTimeout(ctx, 10*time.Second)
		defer wcancel()
		for rows, _ := count(port); rows < uint64(conns*10+2) && wctx.Err() == nil; rows, _ = count(port) {
			time.Sleep(100 * time.Millisecond) // ClickHouse has no change feed
		}
		cuts[port] = uint64(time.Now().UnixNano())
		misses = recursionMisses(t) - missed
		return port, stopTrace(), misses
	}

	var back []string
	port1, want1, misses1 := load(20000, func() {
		back = append(back, fmt.Sprintf("sink %s", r.kill9(ctx, "sink").Round(time.Millisecond)))
		back = append(back, fmt.Sprintf("detector %s", r.kill9(ctx, "detector").Round(time.Millisecond)))
	})
	stored(port1, want1, misses1)
	back = append(back, fmt.Sprintf("probe %s", r.kill9(ctx, "probe").Round(time.Millisecond)))
	port2, want2, misses2 := load(2000, func() {})
	stored(port2, want2, misses2)
	t.Logf("back (killed -9 to ready): %s; rows %d + %d, counted by bpftrace; the kernel skipped %d + %d BPF program runs", strings.Join(back, ", "), want1, want2, misses1, misses2)
	for _, b := range back {
		if d, _ := time.ParseDuration(strings.Fields(b)[1]); d > 15*time.Second {
			t.Errorf("%s: not back within 15 s", b)
		}
	}
}

// recursionMisses is the sum of every loaded BPF program's recursion
// misses (bpftool prints the field once it is not 0).
func recursionMisses(t *testing.T) uint64 {
	t.Helper()
	out, err := exec.Command("bpftool", "prog", "show", "-j").Output()
	if err != nil {
		t.Fatalf("bpftool prog show: %v", err)
	}
	var progs []struct {
		RecursionMisses uint64 `json:"recursion_misses"`
	}
	if err := json.Unmarshal(out, &progs); err != nil {
		t.Fatalf("bpftool prog show -j: %v", err)
	}
	var n uint64
	for _, p := range progs {
		n += p.RecursionMisses
	}
	return n
}
