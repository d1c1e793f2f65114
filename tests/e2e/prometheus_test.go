package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/netpulse/netpulse/lib/alert"
	"github.com/netpulse/netpulse/lib/testutil/freeport"
	"github.com/netpulse/netpulse/lib/testutil/priv"
	"github.com/netpulse/netpulse/lib/testutil/repofile"
)

// A real Prometheus (Debian's package) scrapes the probe, the sink and the
// detector while they handle real traffic and a real CLOSE_WAIT leak: each
// target is up and ready, and the counters that must have moved did, as
// Prometheus' own query API reports them.
func TestPrometheusScrapesEveryService(t *testing.T) {
	bin, err := exec.LookPath("prometheus")
	if err != nil {
		priv.Skip(t, "prometheus is not installed (apt-get install prometheus)")
	}
	p := newPipeline(t)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	al := p.watchAlerts()
	sink, det, probe := p.startAll(ctx)
	targets := map[string]string{}
	for name, pr := range map[string]*proc{"sink": sink, "detector": det, "probe": probe} {
		targets[name] = pr.metricsAddr(ctx)
		waitReady(t, ctx, targets[name])
	}
	prom := startPrometheus(t, ctx, bin, targets)
	for name, addr := range targets {
		names, missing := undocumentedSeries(t, addr)
		if len(names) < 5 || len(missing) > 0 {
			t.Errorf("%s serves %d netpulse series; not in README's metrics table: %v", name, len(names), missing)
		}
	}

	connect(t, "tcp4", "127.0.0.1:0", 200, 4)
	cmd, leakPort := leaker(t)
	for range 12 {
		c, err := net.Dial("tcp4", "127.0.0.1:"+strconv.Itoa(leakPort))
		if err != nil {
			t.Fatal(err)
		}
		c.Close()
	}
	al.wait(ctx, "conn_leak firing", func(a alert.Alert) bool {
		return a.Detector == "conn_leak" && a.Status == alert.Firing && a.Labels["pid"] == strconv.Itoa(cmd.Process.Pid)
	})

	for _, q := range []string{
		`up{job="probe"} == 1`, `up{job="sink"} == 1`, `up{job="detector"} == 1`,
		`netpulse_probe_events_published_total > 2000`,
		`netpulse_probe_publish_ack_duration_seconds_count > 0`,
		`netpulse_sink_rows_inserted_total{consumer="events"} > 2000`,
		`netpulse_sink_insert_duration_seconds_count{table="tcp_events"} > 0`,
		`netpulse_detector_alerts_total{detector="conn_leak",status="firing"} >= 1`,
		`netpulse_detector_event_lag_seconds_count{detector="conn_leak"} > 0`,
		`netpulse_detector_consumer_pending_messages{detector="conn_leak"} >= 0`,
		`histogram_quantile(0.99, sum by (le) (rate(netpulse_detector_event_lag_seconds_bucket[30s]))) < 5`,
		`netpulse_build_info{job="probe",service="probe"} == 1`,
	} {
		v := prom.waitQuery(ctx, q)
		t.Logf("%s: %s", q, v)
	}
}

// metricsAddr is the address a service logged it serves metrics on.
func (p *proc) metricsAddr(ctx context.Context) string {
	p.t.Helper()
	re := regexp.MustCompile(`msg="serving metrics" .*addr=(\S+)`)
	var addr string
	p.waitLine(ctx, "serving metrics", func(l string) bool {
		if m := re.FindStringSubmatch(l); m != nil {
			addr = m[1]
			return true
		}
		return false
	})
	return addr
}

// waitReady polls /readyz until it answers 200.
func waitReady(t *testing.T, ctx context.Context, addr string) {
	t.Helper()
	var last string
	for {
		resp, err := http.Get("http://" + addr + "/readyz")
		if err == nil {
			b, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return
			}
			last = fmt.Sprintf("%d %s", resp.StatusCode, b)
		} else {
			last = err.Error()
		}
		select {
		case <-ctx.Done():
			t.Fatalf("%s/readyz: %s", addr, last)
		case <-time.After(100 * time.Millisecond):
		}
	}
}

type prometheus struct {
	t    *testing.T
	base string
}

// startPrometheus runs Prometheus on a free port scraping targets (job
// name -> host:port) every second, and waits until it is ready.
func startPrometheus(t *testing.T, ctx context.Context, bin string, targets map[string]string) *prometheus {
	t.Helper()
	dir := t.TempDir()
	var conf strings.Builder
	conf.WriteString("global:\n  scrape_interval: 1s\n  scrape_timeout: 900ms\nscrape_configs:\n")
	for job, addr := range targets {
		fmt.Fprintf(&conf, "  - job_name: %s\n    static_configs:\n      - targets: ['%s']\n", job, addr)
	}
	confFile := filepath.Join(dir, "prometheus.yml")
	if err := os.WriteFile(confFile, []byte(conf.String()), 0o644); err != nil {
		t.Fatal(err)
	}
	// A picked port can be taken before Prometheus binds it: then it
	// exits at once, and gets another.
	for try := 1; ; try++ {
		port := freeport.Get(t)
		cmd := exec.Command(bin, "--config.file="+confFile, "--storage.tsdb.path="+filepath.Join(dir, "data"),
			"--web.listen-address=127.0.0.1:"+strconv.Itoa(port))
		pr := startProc(t, "prometheus", cmd)
		t.Cleanup(func() {
			if t.Failed() {
				t.Logf("prometheus log (last 3000 bytes):\n%s", tail(pr.log(), 3000))
			}
		})
		prom := &prometheus{t: t, base: "http://127.0.0.1:" + strconv.Itoa(port)}
		if prom.waitReady(ctx, pr) {
			return prom
		}
		if try == 3 || !strings.Contains(pr.log(), "address already in use") {
			t.Fatalf("prometheus exited:\n%s", pr.log())
		}
	}
}

// waitReady polls /-/ready until Prometheus is ready (true) or exited
// (false).
func (p *prometheus) waitReady(ctx context.Context, pr *proc) bool {
	p.t.Helper()
	for {
		if resp, err := http.Get(p.base + "/-/ready"); err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return true
			}
		}
		select {
		case <-ctx.Done():
			p.t.Fatalf("prometheus not ready: %v\n%s", ctx.Err(), pr.log())
		case <-pr.done:
			return false
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// waitQuery polls the query API until q (a filter expression) returns a
// series, and returns the first one's value.
func (p *prometheus) waitQuery(ctx context.Context, q string) string {
	p.t.Helper()
	var last string
	for {
		resp, err := http.Get(p.base + "/api/v1/query?query=" + url.QueryEscape(q))
		if err == nil {
			var r struct {
				Status string
				Data   struct {
					Result []struct {
						Value [2]any
					}
				}
			}
			err = json.NewDecoder(resp.Body).Decode(&r)
			resp.Body.Close()
			if err == nil && r.Status == "success" && len(r.Data.Result) > 0 {
				return fmt.Sprint(r.Data.Result[0].Value[1])
			}
			last = fmt.Sprintf("status %s, %d series, %v", r.Status, len(r.Data.Result), err)
		} else {
			last = err.Error()
		}
		select {
		case <-ctx.Done():
			p.t.Fatalf("Prometheus query %s: %s: %v", q, last, ctx.Err())
		case <-time.After(250 * time.Millisecond):
		}
	}
}

// --version prints the service and its build, needs no configuration and
// connects to nothing.
func TestVersionFlag(t *testing.T) {
	for _, svc := range []string{"probe", "sink", "detector"} {
		out, err := exec.Command(filepath.Join(binDir, "netpulse-"+svc), "--version").CombinedOutput()
		if err != nil || !regexp.MustCompile(`^netpulse-`+svc+` \S+ \(commit \S+, go\S+\)\n$`).Match(out) {
			t.Errorf("netpulse-%s --version: %v, %q", svc, err, out)
		}
	}
}

// undocumentedSeries lists the netpulse_* series the service at addr serves
// that README.md's metrics table does not name, either in full or as a
// `_suffix` on a row that names a series with the same head (the table's
// shorthand: `netpulse_detector_messages_total`, `_events_total`).
func undocumentedSeries(t *testing.T, addr string) (names, missing []string) {
	t.Helper()
	path, err := repofile.Find("README.md")
	if err != nil {
		t.Fatal(err)
	}
	readme, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var rows []string
	for _, l := range strings.Split(string(readme), "\n") {
		if strings.HasPrefix(l, "| `netpulse_") {
			rows = append(rows, strings.SplitN(l, "|", 3)[1])
		}
	}
	for _, l := range metricsLines(t, addr) {
		name, ok := strings.CutPrefix(l, "# TYPE netpulse_")
		if !ok {
			continue
		}
		name = "netpulse_" + strings.Fields(name)[0]
		names = append(names, name)
		if !documented(rows, name) {
			missing = append(missing, name)
		}
	}
	return names, missing
}

func documented(rows []string, name string) bool {
	for _, r := range rows {
		if strings.Contains(r, "`"+name+"`") {
			return true
		}
		for i := strings.IndexByte(name, '_'); i > 0; i = nextUnderscore(name, i) {
			if strings.Contains(r, "`"+name[:i]) && strings.Contains(r, "`"+name[i:]+"`") {
				return true
			}
		}
	}
	return false
}

func nextUnderscore(s string, i int) int {
	j := strings.IndexByte(s[i+1:], '_')
	if j < 0 {
		return -1
	}
	return i + 1 + j
}

// metricsLines is what a service's /metrics serves, line by line.
func metricsLines(t *testing.T, addr string) []string {
	t.Helper()
	resp, err := http.Get("http://" + addr + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return strings.Split(string(body), "\n")
}
