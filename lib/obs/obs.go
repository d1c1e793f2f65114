// Package obs is how a netpulse service is watched from outside: Prometheus
// metrics on /metrics, /healthz (the process serves) and /readyz (every
// readiness condition holds), on the address of its metrics.addr key.
//
// Each service registers collectors that read the counters it already
// keeps (the same numbers as its stats line), so the two never disagree,
// plus histograms where latency matters. Labels stay bounded: detector,
// table, tracepoint, reason — never a socket or a remote.
package obs

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"slices"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/netpulse/netpulse/lib/version"
)

// Namespace starts every netpulse series name.
const Namespace = "netpulse"

// Obs is one service's registry and readiness; a nil *Obs is valid and
// records nothing.
type Obs struct {
	Registry *prometheus.Registry

	mu      sync.Mutex
	pending map[string]bool // readiness conditions not yet met
}

// Starting is the readiness condition every Obs begins with: the service
// has not yet said what it waits for (Await).
const Starting = "starting"

// New makes the registry of service with the Go and process collectors
// and netpulse_build_info. /readyz fails until the service has called
// Await with its conditions and each was reported met with Ready.
func New(service string) *Obs {
	o := &Obs{Registry: prometheus.NewRegistry(), pending: map[string]bool{Starting: true}}
	in := version.Get()
	build := prometheus.NewGauge(prometheus.GaugeOpts{
		Namespace: Namespace, Name: "build_info",
		Help:        "Always 1; the labels say which build of which service runs.",
		ConstLabels: prometheus.Labels{"service": service, "version": in.Version, "commit": in.Commit, "goversion": in.GoVersion},
	})
	build.Set(1)
	o.Registry.MustRegister(build, collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return o
}

// Await sets the conditions /readyz waits for, replacing Starting.
func (o *Obs) Await(conditions ...string) {
	if o == nil {
		return
	}
	o.mu.Lock()
	defer o.mu.Unlock()
	delete(o.pending, Starting)
	for _, c := range conditions {
		o.pending[c] = true
	}
}

// Ready marks condition met (or, with ok false, unmet again: a lost
// connection).
func (o *Obs) Ready(condition string, ok bool) {
	if o == nil {
		return
	}
	o.mu.Lock()
	defer o.mu.Unlock()
	if ok {
		delete(o.pending, condition)
	} else {
		o.pending[condition] = true
	}
}

// Register adds collectors to the registry. A nil Obs (a service run by
// a test) takes and serves nothing; Await and Ready are no-ops on it too.
func (o *Obs) Register(cs ...prometheus.Collector) {
	if o == nil {
		return
	}
	o.Registry.MustRegister(cs...)
}

// Pending are the readiness conditions not met, sorted.
func (o *Obs) Pending() []string {
	o.mu.Lock()
	defer o.mu.Unlock()
	out := make([]string, 0, len(o.pending))
	for c := range o.pending {
		out = append(out, c)
	}
	sort.Strings(out)
	return out
}

// Handler serves /metrics, /healthz and /readyz.
func (o *Obs) Handler() http.Handler {
	mux := http.NewServeMux()
	mux.Handle("/metrics", promhttp.HandlerFor(o.Registry, promhttp.HandlerOpts{ErrorHandling: promhttp.ContinueOnError}))
	mux.HandleFunc("/healthz", func(w http.ResponseWriter, _ *http.Request) { fmt.Fprintln(w, "ok") })
	mux.HandleFunc("/readyz", func(w http.ResponseWriter, _ *http.Request) {
		if p := o.Pending(); len(p) > 0 {
			w.WriteHeader(http.StatusServiceUnavailable)
			fmt.Fprintln(w, "not ready: "+strings.Join(p, ", "))
			return
		}
		fmt.Fprintln(w, "ready")
	})
	return mux
}

// Serve listens on addr ("" serves nothing) until ctx ends. A listen error
// is returned at once, so that a service with a taken port stops at start.
func (o *Obs) Serve(ctx context.Context, addr string, log *slog.Logger) (stop func(), err error) {
	if addr == "" {
		return func() {}, nil
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("metrics.addr %s: %w", addr, err)
	}
	srv := &http.Server{Handler: o.Handler(), ReadHeaderTimeout: 5 * time.Second}
	done := make(chan struct{})
	go func() {
		defer close(done)
		if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			log.Error("metrics server stopped", "addr", addr, "err", err)
		}
	}()
	log.Info("serving metrics", "addr", ln.Addr().String(), "paths", "/metrics /healthz /readyz")
	return func() {
		sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 2*time.Second)
		defer cancel()
		_ = srv.Shutdown(sctx)
		<-done
	}, nil
}

// CounterFunc is a counter read from a running total the service keeps.
func CounterFunc(name, help string, read func() float64) prometheus.Collector {
	return prometheus.NewCounterFunc(prometheus.CounterOpts{Namespace: Namespace, Name: name, Help: help}, read)
}

// GaugeFunc is a gauge read from a value the service keeps.
func GaugeFunc(name, help string, read func() float64) prometheus.Collector {
	return prometheus.NewGaugeFunc(prometheus.GaugeOpts{Namespace: Namespace, Name: name, Help: help}, read)
}

// LatencyBuckets are histogram buckets (seconds) from 1 ms to about 65 s.
var LatencyBuckets = prometheus.ExponentialBuckets(0.001, 2, 17)

// Histogram is a latency histogram in seconds.
func Histogram(name, help string, labels ...string) *prometheus.HistogramVec {
	return prometheus.NewHistogramVec(prometheus.HistogramOpts{Namespace: Namespace, Name: name, Help: help, Buckets: LatencyBuckets}, labels)
}

// Labeled is a collector of one family whose values and label values are
// read at each scrape: counters kept per detector, table or reason.
type Labeled struct {
	desc  *prometheus.Desc
	kind  prometheus.ValueType
	read  func(emit func(v float64, labelValues ...string))
	names []string
}

// NewLabeled describes family name of kind (prometheus.CounterValue or
// GaugeValue) with labels; read emits each series at a scrape.
func NewLabeled(name, help string, kind prometheus.ValueType, labels []string, read func(emit func(v float64, labelValues ...string))) *Labeled {
	return &Labeled{desc: prometheus.NewDesc(Namespace+"_"+name, help, labels, nil), kind: kind, read: read, names: slices.Clone(labels)}
}

// Describe implements prometheus.Collector.
func (l *Labeled) Describe(ch chan<- *prometheus.Desc) { ch <- l.desc }

// Collect implements prometheus.Collector.
func (l *Labeled) Collect(ch chan<- prometheus.Metric) {
	l.read(func(v float64, lv ...string) {
		ch <- prometheus.MustNewConstMetric(l.desc, l.kind, v, lv...)
	})
}
