package e2e

import (
	"context"
	"maps"
	"net"
	"os/exec"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/netpulse/netpulse/lib/alert"
	"github.com/netpulse/netpulse/lib/testutil/amtest"
)

// A real CLOSE_WAIT leak reaches a real Alertmanager through the
// detector's forwarder: the webhook receiver gets the firing and then the
// resolved notification of the same alert, grouped by alertname and host,
// with exactly the routing and identity labels. Alertmanager is stopped
// while that leak ends and another one starts: once it is back, both
// transitions reach the receiver. ClickHouse holds the annotations.
func TestAlertmanagerNotifiedOfRealLeak(t *testing.T) {
	hook := amtest.NewReceiver(t)
	am := amtest.Start(t, amtest.Config(hook.URL, "alertname", "host"))
	p := newPipeline(t)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	al := p.watchAlerts()
	_, det, _ := p.startAllWith(ctx, []string{"--alertmanager.url=" + am.URL, "--alertmanager.resend_interval=2s"})

	const leaked = 12
	leak := func() (*exec.Cmd, string) {
		cmd, port := leaker(t)
		for range leaked {
			c, err := net.Dial("tcp4", "127.0.0.1:"+strconv.Itoa(port))
			if err != nil {
				t.Fatal(err)
			}
			c.Close()
		}
		return cmd, strconv.Itoa(cmd.Process.Pid)
	}
	inGroup := func(n amtest.Notification, pid, status string) bool {
		if !maps.Equal(n.GroupLabels, map[string]string{"alertname": "conn_leak", "host": p.host}) {
			return false
		}
		for _, a := range n.Alerts {
			if a.Labels["pid"] == pid && a.Status == status {
				return true
			}
		}
		return false
	}

	first, pidA := leak()
	n := hook.Wait(t, ctx, "leak A firing", func(n amtest.Notification) bool { return inGroup(n, pidA, "firing") })
	for _, a := range n.Alerts {
		if a.Labels["pid"] != pidA {
			continue
		}
		want := map[string]string{"alertname": "conn_leak", "severity": "warning", "host": p.host,
			"pid": pidA, "comm": "python3", "local_port": a.Labels["local_port"]}
		if !maps.Equal(a.Labels, want) || a.Labels["local_port"] == "" {
			t.Errorf("labels %v, want %v", a.Labels, want)
		}
		if a.Annotations["count"] != strconv.Itoa(leaked) || a.Annotations["summary"] == "" || a.GeneratorURL == "" {
			t.Errorf("annotations %v generatorURL %q: want count %d, a summary and a generatorURL", a.Annotations, a.GeneratorURL, leaked)
		}
	}

	am.Settled(t, ctx)
	am.Stop()
	_ = first.Process.Kill() // its sockets close: leak A ends
	al.wait(ctx, "leak A resolved", func(a alert.Alert) bool {
		return a.Detector == "conn_leak" && a.Status == alert.Resolved && a.Labels["pid"] == pidA
	})
	_, pidB := leak()
	al.wait(ctx, "leak B firing", func(a alert.Alert) bool {
		return a.Detector == "conn_leak" && a.Status == alert.Firing && a.Labels["pid"] == pidB
	})
	stoppedFor := time.Now()
	am.Restart()
	hook.Wait(t, ctx, "leak A resolved after the restart", func(n amtest.Notification) bool { return inGroup(n, pidA, "resolved") })
	hook.Wait(t, ctx, "leak B firing after the restart", func(n amtest.Notification) bool { return inGroup(n, pidB, "firing") })
	t.Logf("both transitions made while alertmanager was stopped notified %s after its restart", time.Since(stoppedFor).Round(time.Millisecond))

	// Its metrics say so, and README's table names them.
	metrics := det.metricsAddr(ctx)
	waitReady(t, ctx, metrics)
	if _, missing := undocumentedSeries(t, metrics); len(missing) > 0 {
		t.Errorf("detector series not in README's metrics table: %v", missing)
	}
	// The webhook may hear of the last two before the detector has read
	// Alertmanager's answer to them and counted them: poll.
	for v := scrape(t, metrics, "netpulse_detector_alertmanager_delivered_total"); v < 3; v = scrape(t, metrics, "netpulse_detector_alertmanager_delivered_total") {
		select {
		case <-ctx.Done():
			t.Fatalf("netpulse_detector_alertmanager_delivered_total %g, want at least 3 (A fired, A resolved, B fired)", v)
		case <-time.After(50 * time.Millisecond):
		}
	}

	// The sink stored the changing values as annotations.
	p.waitRows(ctx, 1, `SELECT count() FROM alerts WHERE host = ? AND status = 'resolved'
		AND label_values[indexOf(label_names, 'pid')] = ? AND annotation_values[indexOf(annotation_names, 'count')] = ?
		AND has(label_names, 'alertname') AND NOT has(label_names, 'count') AND generator_url != ''`,
		p.host, pidA, strconv.Itoa(leaked))
}

// scrape reads one unlabelled series from a service's /metrics.
func scrape(t *testing.T, addr, name string) float64 {
	t.Helper()
	for _, l := range metricsLines(t, addr) {
		if v, ok := strings.CutPrefix(l, name+" "); ok {
			f, err := strconv.ParseFloat(v, 64)
			if err != nil {
				t.Fatalf("%s: %v", l, err)
			}
			return f
		}
	}
	t.Fatalf("%s serves no %s", addr, name)
	return 0
}
