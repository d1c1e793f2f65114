// Package amforward sends netpulse's alerts to Prometheus Alertmanager
// (API v2). Transitions come from NETPULSE_ALERTS through a durable
// consumer and are acknowledged only once an Alertmanager took them, so an
// Alertmanager that is down, or a forwarder that dies, loses none; firing
// alerts are re-sent from the detectors' active-alerts bucket every
// ResendInterval, so an Alertmanager that restarted (it keeps alerts in
// memory only) or missed a transition learns them again.
package amforward

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/netpulse/netpulse/lib/alert"
	"github.com/netpulse/netpulse/lib/obs"
	"github.com/netpulse/netpulse/lib/retry"
	"github.com/netpulse/netpulse/lib/wire"
	"github.com/netpulse/netpulse/services/detector/internal/alertout"
)

// Settings are the forwarder's configuration.
type Settings struct {
	// URLs of every Alertmanager of the cluster (each gets every alert, as
	// Prometheus sends them; not a load balancer in front of them).
	URLs []string
	// HTTP is the client the posts go through (timeout, TLS).
	HTTP               *http.Client
	Username, Password string
	// Consumer is the durable consumer's name on NETPULSE_ALERTS: every
	// forwarder of a deployment shares it, so each transition is posted by
	// one of them.
	Consumer string
	// ResendInterval: how often firing alerts are sent again. A firing
	// alert is posted to end 4 intervals later unless sent again.
	ResendInterval time.Duration
	// BatchSize: transitions per request at most.
	BatchSize int
	// AckWait is the consumer's; the forwarder extends it while it retries.
	AckWait time.Duration
}

// lease is how long a firing alert lasts in Alertmanager unless sent again.
func (s *Settings) lease() time.Duration { return 4 * s.ResendInterval }

// Deps are what the forwarder reports to.
type Deps struct {
	Log *slog.Logger
	// Ready is told when the consumer exists and the bucket was read.
	Ready func()
}

// Counters are the forwarder's, for metrics.
type Counters struct {
	// Transitions read from the stream and delivered to an Alertmanager.
	Delivered atomic.Uint64
	// Resent: firing alerts sent again.
	Resent atomic.Uint64
	// Undeliverable: transitions given up on, each logged: not an alert
	// (bad JSON) or refused by every Alertmanager as invalid.
	Undeliverable atomic.Uint64
	// Pending: transitions in the stream not yet delivered to the
	// forwarders, as of the last fetch.
	Pending atomic.Int64
	// Firing: alerts held for re-sending.
	Firing atomic.Int64
}

// Forwarder is one detector process's forwarder.
type Forwarder struct {
	s       Settings
	d       Deps
	clients []*client
	firing  *firingSet
	c       Counters
	buf     bytes.Buffer

	// per Alertmanager
	sent, failed *prometheus.CounterVec
	postDuration *prometheus.HistogramVec
	lastResend   time.Time
}

// New makes a forwarder; Run runs it.
func New(s Settings, d Deps) *Forwarder {
	f := &Forwarder{s: s, d: d, firing: newFiringSet()}
	for _, u := range s.URLs {
		f.clients = append(f.clients, newClient(u, s.HTTP, s.Username, s.Password))
	}
	f.sent = prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: obs.Namespace,
		Name: "detector_alertmanager_alerts_sent_total", Help: "Alerts an Alertmanager accepted (transitions and re-sends), by Alertmanager."},
		[]string{"alertmanager"})
	f.failed = prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: obs.Namespace,
		Name: "detector_alertmanager_post_errors_total", Help: "Posts an Alertmanager failed or refused (retried), by Alertmanager."},
		[]string{"alertmanager"})
	f.postDuration = obs.Histogram("detector_alertmanager_post_duration_seconds", "Time of one post to an Alertmanager.", "alertmanager")
	for _, c := range f.clients {
		f.sent.WithLabelValues(c.name)
		f.failed.WithLabelValues(c.name)
	}
	return f
}

// Collectors are the forwarder's Prometheus series.
func (f *Forwarder) Collectors() []prometheus.Collector {
	return []prometheus.Collector{
		f.sent, f.failed, f.postDuration,
		obs.CounterFunc("detector_alertmanager_delivered_total", "Alert transitions from NETPULSE_ALERTS delivered to an Alertmanager.", func() float64 { return float64(f.c.Delivered.Load()) }),
		obs.CounterFunc("detector_alertmanager_resent_total", "Firing alerts sent to the Alertmanagers again.", func() float64 { return float64(f.c.Resent.Load()) }),
		obs.CounterFunc("detector_alertmanager_undeliverable_total", "Alert transitions given up on: not an alert, or refused by every Alertmanager as invalid (each logged).", func() float64 { return float64(f.c.Undeliverable.Load()) }),
		obs.GaugeFunc("detector_alertmanager_pending_messages", "Alert transitions not yet delivered to the forwarders, as of the last fetch.", func() float64 { return float64(f.c.Pending.Load()) }),
		obs.GaugeFunc("detector_alertmanager_firing_alerts", "Firing alerts the forwarder re-sends.", func() float64 { return float64(f.c.Firing.Load()) }),
	}
}

// retryWaits bound the waits between attempts to reach an Alertmanager.
var retryWaits = retry.Backoff{First: 250 * time.Millisecond, Max: 10 * time.Second}

// Run forwards through js until ctx ends; bucket is the detectors'
// active-alerts bucket (alertout.EnsureBucket). Every failure is waited
// out and retried.
func (f *Forwarder) Run(ctx context.Context, js jetstream.JetStream, bucket jetstream.KeyValue) error {
	cons, err := retry.Logged(ctx, f.d.Log, "create consumer "+f.s.Consumer, func(ctx context.Context) (jetstream.Consumer, error) {
		return js.CreateOrUpdateConsumer(ctx, wire.AlertsStream, jetstream.ConsumerConfig{
			Durable:     f.s.Consumer,
			Description: "netpulse detectors: alert transitions to Alertmanager",
			// A new consumer starts at the next transition, not at a month
			// of history; what fires already comes from the bucket.
			DeliverPolicy: jetstream.DeliverNewPolicy,
			FilterSubject: wire.AllAlerts,
			AckPolicy:     jetstream.AckExplicitPolicy,
			AckWait:       f.s.AckWait,
			MaxDeliver:    -1,
			MaxAckPending: 4 * f.s.BatchSize,
		})
	})
	if err != nil {
		return nil // ctx ended
	}
	watchDone := make(chan struct{})
	loaded := make(chan struct{})
	go func() {
		defer close(watchDone)
		f.watch(ctx, bucket, loaded)
	}()
	select {
	case <-loaded:
	case <-ctx.Done():
		<-watchDone
		return nil
	}
	if f.d.Ready != nil {
		f.d.Ready()
	}
	f.d.Log.Info("forwarding alerts to alertmanager", "urls", f.s.URLs, "consumer", f.s.Consumer, "firing", f.firing.len())
	for ctx.Err() == nil {
		f.resendIfDue(ctx)
		batch, err := retry.Do(ctx, retry.Default, func() (jetstream.MessageBatch, error) {
			return cons.Fetch(f.s.BatchSize, jetstream.FetchMaxWait(time.Second))
		}, f.warnEvery("fetching alert transitions failed; retrying"))
		if err != nil {
			break // ctx ended
		}
		var msgs []jetstream.Msg
		for m := range batch.Messages() {
			msgs = append(msgs, m)
		}
		if err := batch.Error(); err != nil && !errors.Is(err, jetstream.ErrNoMessages) && ctx.Err() == nil {
			f.d.Log.Debug("fetch ended early", "err", err)
		}
		if len(msgs) > 0 {
			f.forward(ctx, msgs)
		}
	}
	<-watchDone
	return nil
}

// watch keeps the firing set in step with the bucket; loaded is closed once
// the bucket's current records are in.
func (f *Forwarder) watch(ctx context.Context, bucket jetstream.KeyValue, loaded chan struct{}) {
	first := true
	for ctx.Err() == nil {
		w, err := retry.Do(ctx, retry.Default, func() (jetstream.KeyWatcher, error) { return bucket.WatchAll(ctx) },
			f.warnEvery("watching the active alerts failed; retrying"))
		if err != nil {
			return // ctx ended
		}
		for e := range w.Updates() {
			if e == nil {
				if first {
					first = false
					close(loaded)
				}
				continue
			}
			var a *alert.Alert
			if e.Operation() == jetstream.KeyValuePut {
				var r alertout.Record
				if err := json.Unmarshal(e.Value(), &r); err != nil {
					f.d.Log.Warn("active alert record is not JSON; not re-sent", "key", e.Key(), "err", err)
				} else {
					a = &r.Alert
				}
			}
			f.firing.stored(e.Key(), a)
			f.c.Firing.Store(int64(f.firing.len()))
		}
		_ = w.Stop()
		// The channel closes when the watch's connection is lost (it
		// is made again, and the full set comes again with it).
	}
}

// forward delivers one batch of transitions in stream order and
// acknowledges them; the ones that are not alerts are terminated.
func (f *Forwarder) forward(ctx context.Context, msgs []jetstream.Msg) {
	alerts := make([]alert.Alert, 0, len(msgs))
	held := make([]jetstream.Msg, 0, len(msgs))
	for _, m := range msgs {
		if md, err := m.Metadata(); err == nil {
			f.c.Pending.Store(int64(md.NumPending))
		}
		var a alert.Alert
		if err := json.Unmarshal(m.Data(), &a); err != nil || a.Fingerprint == "" || a.Detector == "" ||
			(a.Status != alert.Firing && a.Status != alert.Resolved) {
			f.c.Undeliverable.Add(1)
			f.d.Log.Error("not an alert; not sent to alertmanager", "subject", m.Subject(), "err", errOr(err, "no fingerprint, detector or status"))
			_ = m.TermWithReason("not an alert")
			continue
		}
		if a.Status == alert.Resolved {
			f.firing.resolved(&a)
		}
		alerts = append(alerts, a)
		held = append(held, m)
	}
	if len(alerts) == 0 {
		return
	}
	rejected, err := f.send(ctx, alerts, func() {
		for _, m := range held {
			_ = m.InProgress()
		}
	})
	if err != nil {
		return // ctx ended: redelivered to the next forwarder
	}
	for i, m := range held {
		if rejected[i] {
			f.c.Undeliverable.Add(1)
			_ = m.TermWithReason("refused by alertmanager")
			continue
		}
		if err := m.Ack(); err != nil {
			// Redelivered and sent again: Alertmanager takes a repeat.
			f.d.Log.Debug("ack failed", "err", err)
		}
		f.c.Delivered.Add(1)
	}
}

// resendIfDue sends every firing alert again once ResendInterval has passed.
func (f *Forwarder) resendIfDue(ctx context.Context) {
	now := time.Now()
	if now.Sub(f.lastResend) < f.s.ResendInterval {
		return
	}
	f.lastResend = now
	f.firing.prune(now.Add(-10 * f.s.ResendInterval))
	all := f.firing.snapshot()
	f.c.Firing.Store(int64(len(all)))
	for len(all) > 0 && ctx.Err() == nil {
		n := min(len(all), f.s.BatchSize)
		rejected, err := f.send(ctx, all[:n], nil)
		if err != nil {
			return
		}
		for i := range n {
			if !rejected[i] {
				f.c.Resent.Add(1)
			}
		}
		all = all[n:]
	}
}

// send posts alerts to every Alertmanager until at least one took them,
// retrying; when every Alertmanager that answered refused them as invalid,
// it finds which ones by posting them one by one, and reports those in
// rejected (each logged). keepAlive, when set, is called between attempts.
// The error is ctx's.
func (f *Forwarder) send(ctx context.Context, alerts []alert.Alert, keepAlive func()) (rejected []bool, err error) {
	rejected = make([]bool, len(alerts))
	_, err = retry.Do(ctx, retryWaits, func() (struct{}, error) {
		body, err := f.body(alerts)
		if err != nil {
			return struct{}{}, retry.Permanent(err)
		}
		// In parallel: one Alertmanager that hangs until the timeout
		// delays the others by nothing.
		results := make([]error, len(f.clients))
		var wg sync.WaitGroup
		for i, c := range f.clients {
			wg.Add(1)
			go func() {
				defer wg.Done()
				results[i] = f.post(ctx, c, body, len(alerts))
			}()
		}
		wg.Wait()
		var errs []error
		var refusing *client
		ok := false
		for i, c := range f.clients {
			err := results[i]
			switch {
			case err == nil:
				ok = true
			case errors.Is(err, errRejected):
				refusing = c
				errs = append(errs, fmt.Errorf("%s: %w", c.name, err))
			default:
				errs = append(errs, fmt.Errorf("%s: %w", c.name, err))
			}
		}
		if ok {
			if len(errs) > 0 {
				f.d.Log.Warn("an alertmanager did not take alerts others took; it gets the firing ones with the next re-send", "err", errors.Join(errs...))
			}
			return struct{}{}, nil
		}
		if refusing != nil {
			f.oneByOne(ctx, refusing, alerts, rejected)
			return struct{}{}, nil
		}
		return struct{}{}, errors.Join(errs...)
	}, func(attempt int, err error, wait time.Duration) {
		if keepAlive != nil {
			keepAlive()
		}
		if attempt == 1 || attempt%10 == 0 {
			f.d.Log.Warn("no alertmanager took the alerts; retrying", "alerts", len(alerts), "attempt", attempt, "wait", wait.Round(time.Millisecond), "err", err)
		}
	})
	if err != nil && ctx.Err() == nil {
		// Only an alert that cannot be encoded fails for good.
		f.d.Log.Error("alerts not encodable; not sent", "alerts", len(alerts), "err", err)
		for i := range rejected {
			rejected[i] = true
		}
		return rejected, nil
	}
	return rejected, err
}

// oneByOne posts each alert alone to c, which refused them together, and
// marks the ones it refuses again. One that fails otherwise (c went away
// meanwhile) counts as taken: the next re-send brings it if it still fires.
func (f *Forwarder) oneByOne(ctx context.Context, c *client, alerts []alert.Alert, rejected []bool) {
	for i := range alerts {
		body, err := f.body(alerts[i : i+1])
		if err == nil {
			if err = f.post(ctx, c, body, 1); !errors.Is(err, errRejected) {
				continue
			}
		}
		rejected[i] = true
		a := &alerts[i]
		f.d.Log.Error("alertmanager refused an alert; it is not sent again", "alertmanager", c.name,
			"detector", a.Detector, "host", a.Host, "fingerprint", a.Fingerprint, "status", a.Status, "err", err)
	}
}

func (f *Forwarder) body(alerts []alert.Alert) ([]byte, error) {
	now := time.Now()
	ps := make([]postable, len(alerts))
	for i := range alerts {
		ps[i] = toPostable(&alerts[i], now, f.s.lease())
	}
	return encode(&f.buf, ps)
}

func (f *Forwarder) post(ctx context.Context, c *client, body []byte, n int) error {
	start := time.Now()
	err := c.post(ctx, body)
	f.postDuration.WithLabelValues(c.name).Observe(time.Since(start).Seconds())
	if err != nil {
		f.failed.WithLabelValues(c.name).Inc()
		return err
	}
	f.sent.WithLabelValues(c.name).Add(float64(n))
	return nil
}

func errOr(err error, msg string) any {
	if err != nil {
		return err
	}
	return msg
}

// warnEvery logs the first failed attempt and every 20th after it.
func (f *Forwarder) warnEvery(msg string) retry.Notify {
	return func(attempt int, err error, _ time.Duration) {
		if attempt == 1 || attempt%20 == 0 {
			f.d.Log.Warn(msg, "attempt", attempt, "err", err)
		}
	}
}
