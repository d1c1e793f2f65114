// Package e2e runs the real binaries end to end: kernel -> netpulse-probe ->
// NATS JetStream -> netpulse-sink -> ClickHouse, and checks the rows against
// what happened on the wire.
package e2e

import (
	"context"
	"fmt"
	"net"
	"os"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2/lib/driver"

	"github.com/netpulse/netpulse/lib/testutil/chtest"
	"github.com/netpulse/netpulse/lib/testutil/natstest"
	"github.com/netpulse/netpulse/lib/testutil/priv"
)

var srv *chtest.Server

func TestMain(m *testing.M) {
	dir, err := buildServices()
	if err != nil {
		fmt.Fprintln(os.Stderr, "e2e:", err)
		os.Exit(1)
	}
	binDir = dir
	defer os.RemoveAll(dir)
	chtest.Main(m, &srv)
}

// pipeline is one probe + sink (+ detector) on a private NATS server (or
// cluster) and ClickHouse database.
type pipeline struct {
	t        *testing.T
	url      string // nats.url: one server or a cluster's list
	replicas int    // of every stream and bucket the services make
	ch       driver.Conn
	db       string
	host     string
}

func newPipeline(t *testing.T) *pipeline {
	t.Helper()
	priv.RequireRoot(t)
	return newPipelineOn(t, natstest.Start(t).ClientURL(), 1)
}

// newPipelineOn is a pipeline on the NATS servers at url, its streams and
// buckets with replicas copies.
func newPipelineOn(t *testing.T, url string, replicas int) *pipeline {
	t.Helper()
	priv.RequireRoot(t)
	db := srv.NewDatabase(t)
	return &pipeline{t: t, url: url, replicas: replicas, ch: srv.Conn(t, db), db: db, host: "e2e-" + db}
}

// natsArgs are the flags every service takes for NATS: the servers and the
// replicas of the streams (and buckets) svc creates.
func (p *pipeline) natsArgs(svc string) []string {
	args := []string{"--nats.url=" + p.url}
	if p.replicas == 1 {
		return args
	}
	r := strconv.Itoa(p.replicas)
	args = append(args, "--stream.replicas="+r)
	if svc != "probe" {
		args = append(args, "--alerts_stream.replicas="+r)
	}
	if svc == "detector" {
		args = append(args, "--deadletter_stream.replicas="+r)
	}
	return args
}

func (p *pipeline) startProbe(ctx context.Context) *proc {
	pr := start(p.t, "probe", append(p.natsArgs("probe"), "--host="+p.host,
		"--batch.flush_interval=50ms", "--stats.interval=1s")...)
	pr.waitLog(ctx, "probe running")
	return pr
}

func (p *pipeline) startSink(ctx context.Context, args ...string) *proc {
	s := start(p.t, "sink", append(append(p.natsArgs("sink"), "--clickhouse.addr="+srv.Addr(),
		"--clickhouse.database="+p.db, "--batch.flush_interval=200ms", "--batch.max_rows=20000"), args...)...)
	s.waitLog(ctx, "consuming")
	return s
}

// query runs a one-value query.
func (p *pipeline) uint64(q string, args ...any) uint64 {
	p.t.Helper()
	var n uint64
	if err := p.ch.QueryRow(context.Background(), q, args...).Scan(&n); err != nil {
		p.t.Fatalf("%s: %v", q, err)
	}
	return n
}

// waitRows polls ClickHouse until q returns want (the pipeline is
// asynchronous by design; the deadline is the assertion).
func (p *pipeline) waitRows(ctx context.Context, want uint64, q string, args ...any) {
	p.t.Helper()
	if got, ok := p.awaitRows(ctx, want, q, args...); !ok {
		p.t.Fatalf("%s: %d rows, want %d: %v", q, got, want, ctx.Err())
	}
}

// awaitRows is waitRows that says whether want was reached before ctx
// ended, and what q last returned.
func (p *pipeline) awaitRows(ctx context.Context, want uint64, q string, args ...any) (uint64, bool) {
	p.t.Helper()
	for {
		got := p.uint64(q, args...)
		if got >= want {
			return got, true
		}
		select {
		case <-ctx.Done():
			return got, false
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// connect makes n short loopback connections to a fresh listener and
// returns its port. The client writes a byte and closes first; the server
// reads to EOF and closes.
func connect(t *testing.T, network, addr string, n, parallel int) int {
	t.Helper()
	ln, err := net.Listen(network, addr)
	if err != nil {
		t.Fatal(err)
	}
	serve(t, ln, n, parallel)
	return ln.Addr().(*net.TCPAddr).Port
}

// serve makes n connections to ln from parallel dialers, then closes ln.
func serve(t *testing.T, ln net.Listener, n, parallel int) {
	t.Helper()
	var served sync.WaitGroup
	served.Add(n)
	go func() {
		for i := 0; i < n; i++ {
			c, err := ln.Accept()
			if err != nil {
				t.Errorf("accept: %v", err)
				return
			}
			go func() {
				defer served.Done()
				buf := make([]byte, 8)
				for {
					if _, err := c.Read(buf); err != nil {
						break
					}
				}
				c.Close()
			}()
		}
	}()
	var wg sync.WaitGroup
	errs := make(chan error, parallel)
	for w := 0; w < parallel; w++ {
		wg.Add(1)
		go func(w int) {
			defer wg.Done()
			for i := w; i < n; i += parallel {
				c, err := net.Dial(ln.Addr().Network(), ln.Addr().String())
				if err != nil {
					errs <- err
					return
				}
				_, _ = c.Write([]byte{1})
				c.Close()
			}
		}(w)
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatalf("dial: %v", err)
	}
	served.Wait()
	ln.Close()
}

// Expected transitions on 6.18 of one loopback connection whose client
// closes first (see services/probe/internal/tracer/tracer_test.go).
const (
	wantClient   = "CLOSE>SYN_SENT,SYN_SENT>ESTABLISHED,ESTABLISHED>FIN_WAIT1,FIN_WAIT1>FIN_WAIT2,FIN_WAIT2>CLOSE"
	wantServer   = "LISTEN>SYN_RECV,SYN_RECV>ESTABLISHED,ESTABLISHED>CLOSE_WAIT,CLOSE_WAIT>LAST_ACK,LAST_ACK>CLOSE"
	wantListener = "CLOSE>LISTEN,LISTEN>CLOSE"
)

// pathsQuery groups the rows of every socket that touched port into its
// ordered path of transitions, and counts sockets per path.
const pathsQuery = `
SELECT path, count() AS sockets FROM (
  SELECT sock_id, arrayStringConcat(arrayMap(x -> x.2, arraySort(x -> x.1, groupArray((time_ns, concat(toString(old_state), '>', toString(new_state)))))), ',') AS path
  FROM tcp_events
  WHERE host = ? AND sock_id IN (SELECT sock_id FROM tcp_events WHERE host = ? AND (sport = ? OR dport = ?))
  GROUP BY sock_id
) GROUP BY path ORDER BY path`

func (p *pipeline) paths(port int) map[string]uint64 {
	p.t.Helper()
	rows, err := p.ch.Query(context.Background(), pathsQuery, p.host, p.host, uint16(port), uint16(port))
	if err != nil {
		p.t.Fatal(err)
	}
	defer rows.Close()
	got := map[string]uint64{}
	for rows.Next() {
		var path string
		var n uint64
		if err := rows.Scan(&path, &n); err != nil {
			p.t.Fatal(err)
		}
		got[path] = n
	}
	return got
}

// The rows for a test's own connections are exactly the transitions that
// happened: none missing, none doubled, attributed to the connecting process.
func TestProbeToClickHouse(t *testing.T) {
	for _, tc := range []struct{ name, network, addr string }{
		{"ipv4", "tcp4", "127.0.0.1:0"},
		{"ipv6", "tcp6", "[::1]:0"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p := newPipeline(t)
			ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
			defer cancel()
			sink := p.startSink(ctx)
			probe := p.startProbe(ctx)
			const n = 300
			port := connect(t, tc.network, tc.addr, n, 4)
			// 10 transitions per connection + 2 of the listener.
			p.waitRows(ctx, 10*n+2, "SELECT count() FROM tcp_events WHERE host = ? AND (sport = ? OR dport = ?)", p.host, uint16(port), uint16(port))
			probe.stop()
			sink.stop()

			got := p.paths(port)
			want := map[string]uint64{wantClient: n, wantServer: n, wantListener: 1}
			comparePaths(t, got, want)
			if dups := p.uint64("SELECT toUInt64(count() - uniqExact(probe_id, seq)) FROM tcp_events WHERE host = ?", p.host); dups != 0 {
				t.Errorf("%d events stored more than once", dups)
			}
			// The connect() runs in the test's own process context.
			comm, _ := os.ReadFile("/proc/self/comm")
			wrong := p.uint64(`SELECT count() FROM tcp_events WHERE host = ? AND dport = ? AND old_state = 'CLOSE' AND new_state = 'SYN_SENT'
				AND NOT (pid = ? AND comm = ?)`, p.host, uint16(port), uint32(os.Getpid()), strings.TrimSpace(string(comm)))
			if wrong != 0 {
				t.Errorf("%d of %d connects are not attributed to pid %d (%s)", wrong, n, os.Getpid(), strings.TrimSpace(string(comm)))
			}
			family := map[string]string{"ipv4": "ipv4", "ipv6": "ipv6"}[tc.name]
			if bad := p.uint64("SELECT count() FROM tcp_events WHERE host = ? AND dport = ? AND family != ?", p.host, uint16(port), family); bad != 0 {
				t.Errorf("%d rows of the %s connections have another family", bad, family)
			}
		})
	}
}

// comparePaths reports, briefly, how the sockets' transition paths differ.
func comparePaths(t *testing.T, got, want map[string]uint64) {
	t.Helper()
	shown := 0
	for path, n := range got {
		if want[path] != n && shown < 5 {
			shown++
			t.Errorf("%d sockets took path %.300s, want %d", n, path, want[path])
		}
	}
	for path, n := range want {
		if _, ok := got[path]; !ok {
			t.Errorf("no socket took path %s, want %d", path, n)
		}
	}
}
