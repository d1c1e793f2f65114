// Package amtest runs a real Prometheus Alertmanager (Debian's
// prometheus-alertmanager) for tests, on a free loopback port, with its
// storage in a temporary folder, and a webhook receiver inside the test
// that records every notification.
package amtest

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/netpulse/netpulse/lib/testutil/freeport"
	"github.com/netpulse/netpulse/lib/testutil/logbuf"
	"github.com/netpulse/netpulse/lib/testutil/priv"
)

// Binary is the Alertmanager executable Start looks for (Debian's name
// first, upstream's second).
func Binary() (string, bool) {
	for _, name := range []string{"prometheus-alertmanager", "alertmanager"} {
		if p, err := exec.LookPath(name); err == nil {
			return p, true
		}
	}
	return "", false
}

// Notification is one webhook notification (Alertmanager's webhook
// payload, version 4), the parts tests read.
type Notification struct {
	Status      string            `json:"status"`
	Receiver    string            `json:"receiver"`
	GroupLabels map[string]string `json:"groupLabels"`
	GroupKey    string            `json:"groupKey"`
	Alerts      []struct {
		Status string `json:"status"` // firing or resolved
		alertFields
	} `json:"alerts"`
}

// alertFields are what a notification and the API say of an alert alike.
type alertFields struct {
	Labels       map[string]string `json:"labels"`
	Annotations  map[string]string `json:"annotations"`
	StartsAt     time.Time         `json:"startsAt"`
	EndsAt       time.Time         `json:"endsAt"`
	GeneratorURL string            `json:"generatorURL"`
	Fingerprint  string            `json:"fingerprint"`
}

// Receiver is a webhook receiver: it records every notification.
type Receiver struct {
	URL string

	mu   sync.Mutex
	got  []Notification
	bell chan struct{} // closed and replaced at each notification
}

// NewReceiver serves a webhook receiver on a free loopback port until the
// test ends.
func NewReceiver(t testing.TB) *Receiver {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	r := &Receiver{URL: "http://" + ln.Addr().String() + "/hook", bell: make(chan struct{})}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		var n Notification
		if err := json.NewDecoder(req.Body).Decode(&n); err != nil {
			t.Errorf("webhook: undecodable notification: %v", err)
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		r.mu.Lock()
		r.got = append(r.got, n)
		close(r.bell)
		r.bell = make(chan struct{})
		r.mu.Unlock()
	})}
	go func() { _ = srv.Serve(ln) }()
	t.Cleanup(func() { _ = srv.Close() })
	return r
}

// Notifications is every notification so far.
func (r *Receiver) Notifications() []Notification {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]Notification(nil), r.got...)
}

// Wait waits until ok holds for a notification received (from the first
// on), and returns it.
func (r *Receiver) Wait(t testing.TB, ctx context.Context, what string, ok func(Notification) bool) Notification {
	t.Helper()
	seen := 0
	for {
		r.mu.Lock()
		got, bell := r.got, r.bell
		r.mu.Unlock()
		for ; seen < len(got); seen++ {
			if ok(got[seen]) {
				return got[seen]
			}
		}
		select {
		case <-bell:
		case <-ctx.Done():
			t.Fatalf("webhook: no notification with %s; got %d: %+v", what, len(got), got)
		}
	}
}

// Config is an Alertmanager configuration sending every group to the
// receiver at once, grouped by groupBy, resolved notifications included.
func Config(receiverURL string, groupBy ...string) string {
	return fmt.Sprintf(`route:
  receiver: test
  group_by: [%s]
  group_wait: 1s
  group_interval: 1s
  repeat_interval: 1h
receivers:
  - name: test
    webhook_configs:
      - url: %q
        send_resolved: true
`, strings.Join(groupBy, ", "), receiverURL)
}

// Alertmanager is a running Alertmanager.
type Alertmanager struct {
	URL string // http://127.0.0.1:<port>

	t    testing.TB
	bin  string
	dir  string
	port int
	cmd  *exec.Cmd
	log  *logbuf.Buffer
	done chan struct{}
}

// Start runs an Alertmanager with config until the test ends; without the
// binary the test is skipped (a failure when privileged tests are
// required, as in CI).
func Start(t testing.TB, config string) *Alertmanager {
	t.Helper()
	bin, ok := Binary()
	if !ok {
		priv.Skip(t, "Alertmanager is not installed (apt-get install prometheus-alertmanager)")
	}
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "alertmanager.yml"), []byte(config), 0o644); err != nil {
		t.Fatal(err)
	}
	a := &Alertmanager{t: t, bin: bin, dir: dir, log: &logbuf.Buffer{}}
	// A picked port can be taken before Alertmanager binds it: then it
	// exits at once, and gets another.
	for try := 1; ; try++ {
		a.port = freeport.Get(t)
		a.URL = "http://127.0.0.1:" + strconv.Itoa(a.port)
		err := a.start()
		if err == nil {
			break
		}
		if try == 3 || !strings.Contains(a.log.String(), "address already in use") {
			t.Fatalf("alertmanager: %v\n%s", err, a.log.String())
		}
	}
	t.Cleanup(func() {
		a.Kill()
		if t.Failed() {
			t.Logf("alertmanager log (last 30000 bytes):\n%s", tail(a.log.String(), 30000))
		}
	})
	return a
}

// start runs the binary on a.port and waits until it is ready.
func (a *Alertmanager) start() error {
	a.cmd = exec.Command(a.bin, "--config.file="+filepath.Join(a.dir, "alertmanager.yml"),
		"--storage.path="+filepath.Join(a.dir, "data"),
		"--web.listen-address=127.0.0.1:"+strconv.Itoa(a.port),
		"--cluster.listen-address=", // no gossip port: a single instance
		"--log.level=debug")
	a.cmd.Stdout, a.cmd.Stderr = a.log, a.log
	if err := a.cmd.Start(); err != nil {
		return err
	}
	a.done = make(chan struct{})
	go func() { _ = a.cmd.Wait(); close(a.done) }()
	deadline := time.Now().Add(30 * time.Second)
	for time.Now().Before(deadline) {
		select {
		case <-a.done:
			return fmt.Errorf("exited: %s", a.cmd.ProcessState)
		default:
		}
		if resp, err := http.Get(a.URL + "/-/ready"); err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return nil
			}
		}
		select {
		case <-a.done:
		case <-time.After(50 * time.Millisecond): // polling a process that has no readiness signal
		}
	}
	a.Kill()
	return fmt.Errorf("not ready within 30s")
}

// Settled waits until every notification Alertmanager sent so far is in
// its notification log: a group's flushes run one after the other, so once
// each group flushed again after the call, the flush before has recorded
// what it sent. (Alertmanager records a notification just after sending
// it: stopped in between, it forgets it sent it, and after a restart it
// does not send the resolution of an alert it does not know it notified.)
func (a *Alertmanager) Settled(t testing.TB, ctx context.Context) {
	t.Helper()
	before := flushes(a.log.String())
	for {
		now := flushes(a.log.String())
		settled := true
		for g, n := range before {
			if now[g] <= n {
				settled = false
			}
		}
		if settled {
			return
		}
		select {
		case <-ctx.Done():
			t.Fatalf("alertmanager groups did not flush again: %v, then %v", before, now)
		case <-time.After(20 * time.Millisecond): // its log is the only signal
		}
	}
}

var flushLine = regexp.MustCompile(`aggrGroup="((?:[^"\\]|\\.)*)" msg=flushing`)

// flushes counts the flushes of each group in an Alertmanager debug log.
func flushes(log string) map[string]int {
	n := map[string]int{}
	for _, m := range flushLine.FindAllStringSubmatch(log, -1) {
		n[m[1]]++
	}
	return n
}

// Stop ends Alertmanager as an operator does (SIGTERM: it saves its
// notification log and silences) and waits until it exited.
func (a *Alertmanager) Stop() {
	a.t.Helper()
	_ = a.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-a.done:
	case <-time.After(30 * time.Second):
		a.t.Fatal("alertmanager did not stop within 30s of SIGTERM")
	}
}

// Kill ends Alertmanager with SIGKILL (nothing saved).
func (a *Alertmanager) Kill() {
	if a.cmd == nil || a.cmd.Process == nil {
		return
	}
	_ = a.cmd.Process.Kill()
	<-a.done
}

// Restart starts Alertmanager again on the same port and storage.
func (a *Alertmanager) Restart() {
	a.t.Helper()
	var err error
	for try := 0; try < 50; try++ { // the old socket may linger a moment
		if err = a.start(); err == nil {
			return
		}
		if !strings.Contains(a.log.String(), "address already in use") {
			break
		}
		time.Sleep(100 * time.Millisecond) // waiting for the kernel to free the port
	}
	a.t.Fatalf("alertmanager restart: %v\n%s", err, a.log.String())
}

// Alert is an alert as Alertmanager's API v2 lists it.
type Alert struct {
	alertFields
	Status struct {
		State string `json:"state"` // active, suppressed, unprocessed
	} `json:"status"`
}

// Alerts lists the alerts Alertmanager holds (active ones; resolved ones
// it still keeps too when resolved is true).
func (a *Alertmanager) Alerts(t testing.TB) []Alert {
	t.Helper()
	resp, err := http.Get(a.URL + "/api/v2/alerts")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var out []Alert
	if err := json.NewDecoder(resp.Body).Decode(&out); err != nil {
		t.Fatal(err)
	}
	return out
}

// Log is Alertmanager's output so far.
func (a *Alertmanager) Log() string { return a.log.String() }

func tail(s string, n int) string {
	if len(s) > n {
		return s[len(s)-n:]
	}
	return s
}
