package amforward

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"net/http"
	"os"
	"slices"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/netpulse/netpulse/lib/alert"
	"github.com/netpulse/netpulse/lib/config"
	"github.com/netpulse/netpulse/lib/natsutil"
	"github.com/netpulse/netpulse/lib/testutil/amtest"
	"github.com/netpulse/netpulse/lib/testutil/natstest"
	"github.com/netpulse/netpulse/lib/wire"
	"github.com/netpulse/netpulse/services/detector/detect"
	"github.com/netpulse/netpulse/services/detector/internal/alertout"
	"github.com/netpulse/netpulse/services/detector/internal/lifecycle"
)

// env is a detector's alert path without the detector: lifecycle trackers
// make the transitions, the real store and publisher put them in the
// bucket and on NETPULSE_ALERTS, and a forwarder sends them to a real
// Alertmanager, which notifies a webhook receiver.
type env struct {
	t     *testing.T
	ctx   context.Context
	js    jetstream.JetStream
	kv    jetstream.KeyValue
	store *alertout.Store
	pub   *alertout.Publisher
	am    *amtest.Alertmanager
	hook  *amtest.Receiver
	fwd   *Forwarder
	now   time.Time
	hosts map[string]*lifecycle.Tracker
}

func newEnv(t *testing.T, resend time.Duration) *env {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	t.Cleanup(cancel)
	s := natstest.Start(t)
	_, js := natstest.Connect(t, s)
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	if testing.Verbose() {
		log = slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	if _, err := natsutil.EnsureAlertsStream(ctx, js, config.DefaultAlertsStream(), log); err != nil {
		t.Fatal(err)
	}
	kv, err := alertout.EnsureBucket(ctx, js, "test-alerts", 1)
	if err != nil {
		t.Fatal(err)
	}
	e := &env{t: t, ctx: ctx, js: js, kv: kv, store: &alertout.Store{KV: kv, Detector: "conn_leak"},
		now: time.Now().Truncate(time.Millisecond), hosts: map[string]*lifecycle.Tracker{}}
	e.pub = alertout.NewPublisher(js, e.store, 64, log)
	go e.pub.Run(ctx)
	e.hook = amtest.NewReceiver(t)
	e.am = amtest.Start(t, amtest.Config(e.hook.URL, "alertname", "host"))
	ready := make(chan struct{})
	e.fwd = New(Settings{URLs: []string{e.am.URL}, HTTP: &http.Client{Timeout: 2 * time.Second},
		Consumer: "test-alertmanager", ResendInterval: resend, BatchSize: 16, AckWait: 10 * time.Second},
		Deps{Log: log, Ready: func() { close(ready) }})
	done := make(chan struct{})
	go func() {
		defer close(done)
		_ = e.fwd.Run(ctx, js, kv)
	}()
	t.Cleanup(func() { cancel(); <-done })
	select {
	case <-ready:
	case <-ctx.Done():
		t.Fatal("forwarder never ready")
	}
	return e
}

// eval has host's detector say which leaks (pids) hold, one second after
// the last evaluation, and publishes the transitions as a detector does.
func (e *env) eval(host string, sev detect.Severity, pids ...string) []alert.Alert {
	e.t.Helper()
	tr := e.hosts[host]
	if tr == nil {
		tr = lifecycle.New(lifecycle.Settings{Detector: "conn_leak", Host: host, GeneratorURL: "http://grafana.example/d/x?var-host={host}"})
		e.hosts[host] = tr
	}
	e.now = time.Now() // Alertmanager judges endsAt by its own clock
	var conds []detect.Condition
	for _, pid := range pids {
		conds = append(conds, detect.Condition{
			Labels:   map[string]string{"pid": pid, "comm": "app", "local_port": "8080"},
			Details:  map[string]string{"count": fmt.Sprint(e.now.Unix() % 1000)},
			Severity: sev, Value: 12, Threshold: 10, Summary: "app (pid " + pid + ") leaks",
		})
	}
	out, _ := tr.Update(e.now, conds)
	for _, a := range out {
		st := alertout.Stored{Record: alertout.Record{Alert: a}}
		var err error
		if st.Key, st.Revision, err = e.store.Put(e.ctx, st.Record); err != nil {
			e.t.Fatal(err)
		}
		e.pub.Enqueue(e.ctx, st)
	}
	return out
}

// waitPublished waits until the stream holds n messages.
func (e *env) waitPublished(n uint64) {
	e.t.Helper()
	for e.pub.Published.Load() < n {
		select {
		case <-e.ctx.Done():
			e.t.Fatalf("published %d alert messages, want %d", e.pub.Published.Load(), n)
		case <-time.After(10 * time.Millisecond): // the publisher has no completion signal
		}
	}
}

// hasAlert says whether n reports the alert of pid with status.
func hasAlert(n amtest.Notification, pid, status string) bool {
	for _, a := range n.Alerts {
		if a.Labels["pid"] == pid && a.Status == status {
			return true
		}
	}
	return false
}

// Transitions reach a real Alertmanager grouped by alertname and host,
// with exactly the routing and identity labels; an Alertmanager that is
// stopped for a while gets every transition made meanwhile once it is
// back, and one killed (it forgets every alert) learns the firing ones
// again from the re-send.
func TestForwardsToRealAlertmanager(t *testing.T) {
	e := newEnv(t, 2*time.Second)
	e.eval("web-1", detect.Warning, "1", "2")
	e.eval("web-2", detect.Warning, "3")
	n := e.hook.Wait(t, e.ctx, "web-1's two leaks firing", func(n amtest.Notification) bool {
		return n.GroupLabels["host"] == "web-1" && hasAlert(n, "1", "firing") && hasAlert(n, "2", "firing")
	})
	if want := map[string]string{"alertname": "conn_leak", "host": "web-1"}; !maps.Equal(n.GroupLabels, want) {
		t.Errorf("group labels %v, want %v", n.GroupLabels, want)
	}
	for _, a := range n.Alerts {
		want := map[string]string{"alertname": "conn_leak", "severity": "warning", "host": "web-1", "pid": a.Labels["pid"], "comm": "app", "local_port": "8080"}
		if !maps.Equal(a.Labels, want) {
			t.Errorf("labels %v, want %v", a.Labels, want)
		}
		if a.Annotations["summary"] != "app (pid "+a.Labels["pid"]+") leaks" || a.Annotations["count"] == "" ||
			a.GeneratorURL != "http://grafana.example/d/x?var-host=web-1" {
			t.Errorf("annotations %v generatorURL %q", a.Annotations, a.GeneratorURL)
		}
	}
	e.hook.Wait(t, e.ctx, "web-2's leak firing", func(n amtest.Notification) bool {
		return n.GroupLabels["host"] == "web-2" && hasAlert(n, "3", "firing") && len(n.Alerts) == 1
	})

	// Stopped: pid 1's leak ends, pid 4's starts, web-2's goes critical.
	e.am.Settled(t, e.ctx)
	e.am.Stop()
	e.eval("web-1", detect.Warning, "2", "4")
	e.eval("web-2", detect.Critical, "3")
	e.waitPublished(3 + 2 + 2)
	e.am.Restart()
	e.hook.Wait(t, e.ctx, "pid 1 resolved and pid 4 firing", func(n amtest.Notification) bool {
		return n.GroupLabels["host"] == "web-1" && hasAlert(n, "1", "resolved") && hasAlert(n, "4", "firing")
	})
	e.hook.Wait(t, e.ctx, "web-2's leak critical", func(n amtest.Notification) bool {
		for _, a := range n.Alerts {
			if a.Labels["pid"] == "3" && a.Labels["severity"] == "critical" && a.Status == "firing" {
				return true
			}
		}
		return false
	})
	// It keeps alerts in memory only: pid 2's, which did not change
	// while it was stopped, comes back with the next re-send.
	e.waitFiring("after its restart", "2 warning", "3 critical", "4 warning")

	// Killed: it forgets every alert; the re-send brings the firing ones.
	resent := e.fwd.c.Resent.Load()
	e.am.Kill()
	e.am.Restart()
	e.waitFiring("after it was killed", "2 warning", "3 critical", "4 warning")
	if e.fwd.c.Resent.Load() <= resent {
		t.Error("resent counter did not move")
	}
	if d, u := e.fwd.c.Delivered.Load(), e.fwd.c.Undeliverable.Load(); d != 7 || u != 0 {
		t.Errorf("delivered %d undeliverable %d, want 7 and 0", d, u)
	}
}

// waitFiring waits until Alertmanager holds exactly these alerts as
// firing ("<pid> <severity>", sorted).
func (e *env) waitFiring(when string, want ...string) {
	e.t.Helper()
	for {
		got := firingPids(e.t, e.am)
		if slices.Equal(got, want) {
			return
		}
		select {
		case <-e.ctx.Done():
			e.t.Fatalf("%s alertmanager fires %v, want %v", when, got, want)
		case <-time.After(100 * time.Millisecond): // Alertmanager has no change feed
		}
	}
}

// firingPids lists "<pid> <severity>" of the alerts Alertmanager holds as
// active (not resolved), sorted.
func firingPids(t *testing.T, am *amtest.Alertmanager) []string {
	var out []string
	for _, a := range am.Alerts(t) {
		if a.EndsAt.After(time.Now()) {
			out = append(out, a.Labels["pid"]+" "+a.Labels["severity"])
		}
	}
	sort.Strings(out)
	return out
}

// What is not an alert, and an alert Alertmanager refuses, are counted
// and given up on; the alerts around them are delivered.
func TestUndeliverableAreCountedOthersDelivered(t *testing.T) {
	e := newEnv(t, time.Hour)
	if _, err := e.js.Publish(e.ctx, wire.AlertSubject("conn_leak", "warning", "web-1"), []byte("{not json")); err != nil {
		t.Fatal(err)
	}
	bad := alert.Alert{Fingerprint: "00000000000000aa", Detector: "conn_leak", Status: alert.Firing, Severity: "warning",
		Host: "web-1", StartsAt: e.now, SentAt: e.now, Labels: map[string]string{"bad-name": "x"}}
	m, err := alertout.Message(bad)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := e.js.PublishMsg(e.ctx, m); err != nil {
		t.Fatal(err)
	}
	e.eval("web-1", detect.Warning, "9")
	e.hook.Wait(t, e.ctx, "pid 9 firing", func(n amtest.Notification) bool { return hasAlert(n, "9", "firing") })
	for e.fwd.c.Delivered.Load()+e.fwd.c.Undeliverable.Load() < 3 {
		select {
		case <-e.ctx.Done():
			t.Fatalf("delivered %d undeliverable %d", e.fwd.c.Delivered.Load(), e.fwd.c.Undeliverable.Load())
		case <-time.After(10 * time.Millisecond): // counters have no change signal
		}
	}
	if d, u := e.fwd.c.Delivered.Load(), e.fwd.c.Undeliverable.Load(); d != 1 || u != 2 {
		t.Errorf("delivered %d undeliverable %d, want 1 and 2 (bad JSON, bad label name)", d, u)
	}
	for _, n := range e.hook.Notifications() {
		for _, a := range n.Alerts {
			if _, refused := a.Labels["bad-name"]; refused {
				t.Errorf("alertmanager notified the refused alert: %v", a.Labels)
			}
		}
	}
}

// The contract's payload is JSON an Alertmanager takes as it is: the
// message as published on NETPULSE_ALERTS, posted raw, is accepted.
func TestPublishedPayloadIsAnAlertmanagerAlert(t *testing.T) {
	e := newEnv(t, time.Hour)
	a := e.eval("web-1", detect.Critical, "5")[0]
	m, err := alertout.Message(a)
	if err != nil {
		t.Fatal(err)
	}
	resp, err := http.Post(e.am.URL+"/api/v2/alerts", "application/json", strings.NewReader("["+string(m.Data)+"]"))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("alertmanager answered %s to the published payload %s", resp.Status, m.Data)
	}
}
