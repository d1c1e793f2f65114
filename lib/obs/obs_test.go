package obs

import (
	"context"
	"io"
	"log/slog"
	"net/http"
	"regexp"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
)

var quiet = slog.New(slog.NewTextHandler(io.Discard, nil))

func get(t *testing.T, url string) (int, string) {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// A real listener on a free port: /healthz at once, /readyz only once every
// awaited condition is met (and not again when one is lost), /metrics with
// build info, Go and process series and what the service registered.
func TestServe(t *testing.T) {
	o := New("sink")
	var n float64
	o.Register(CounterFunc("test_things_total", "Things.", func() float64 { return n }),
		NewLabeled("test_by_table_total", "Per table.", prometheus.CounterValue, []string{"table"}, func(emit func(float64, ...string)) {
			emit(3, "tcp_events")
			emit(4, "alerts")
		}))
	logs := &strings.Builder{}
	stop, err := o.Serve(context.Background(), "127.0.0.1:0", slog.New(slog.NewTextHandler(logs, nil)))
	if err != nil {
		t.Fatal(err)
	}
	defer stop()
	m := regexp.MustCompile(`addr=(\S+)`).FindStringSubmatch(logs.String())
	if m == nil {
		t.Fatalf("no address logged: %s", logs)
	}
	base := "http://" + m[1]

	if code, _ := get(t, base+"/healthz"); code != 200 {
		t.Errorf("/healthz = %d", code)
	}
	if code, body := get(t, base+"/readyz"); code != 503 || !strings.Contains(body, Starting) {
		t.Errorf("/readyz before Await = %d %q, want 503 naming %q", code, body, Starting)
	}
	o.Await("nats", "clickhouse")
	o.Ready("nats", true)
	if code, body := get(t, base+"/readyz"); code != 503 || !strings.Contains(body, "clickhouse") || strings.Contains(body, "nats") {
		t.Errorf("/readyz with clickhouse pending = %d %q", code, body)
	}
	o.Ready("clickhouse", true)
	if code, _ := get(t, base+"/readyz"); code != 200 {
		t.Errorf("/readyz when ready = %d", code)
	}
	o.Ready("nats", false)
	if code, _ := get(t, base+"/readyz"); code != 503 {
		t.Errorf("/readyz after losing nats = %d", code)
	}

	n = 7
	_, body := get(t, base+"/metrics")
	for _, want := range []string{
		`netpulse_build_info{commit="`, `service="sink"`, "go_goroutines ", "process_resident_memory_bytes ",
		"netpulse_test_things_total 7", `netpulse_test_by_table_total{table="alerts"} 4`, `netpulse_test_by_table_total{table="tcp_events"} 3`,
	} {
		if !strings.Contains(body, want) {
			t.Errorf("/metrics lacks %q", want)
		}
	}
}

func TestServeErrors(t *testing.T) {
	o := New("probe")
	stop, err := o.Serve(context.Background(), "127.0.0.1:0", quiet)
	if err != nil {
		t.Fatal(err)
	}
	defer stop()
	if _, err := o.Serve(context.Background(), "256.0.0.1:1", quiet); err == nil || !strings.Contains(err.Error(), "metrics.addr") {
		t.Errorf("Serve on a bad address = %v, want an error naming metrics.addr", err)
	}
	if stop, err := o.Serve(context.Background(), "", quiet); err != nil {
		t.Errorf("Serve(\"\") = %v", err)
	} else {
		stop()
	}
	var none *Obs // a service run by a test
	none.Await("x")
	none.Ready("x", true)
	none.Register(CounterFunc("x_total", "x", func() float64 { return 0 }))
}
