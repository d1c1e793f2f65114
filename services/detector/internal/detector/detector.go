// Package detector runs the selected detector kinds in one process. Each
// kind is independent (package runner): its own consumer group on
// NETPULSE_EVENTS, its own goroutines, its own publisher, so a slow kind
// never holds back another, and each kind scales to N replicas on its own.
package detector

import (
	"context"
	"crypto/rand"
	"encoding/base32"
	"fmt"
	"log/slog"
	"os"
	"slices"
	"strings"
	"sync"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/netpulse/netpulse/lib/config"
	"github.com/netpulse/netpulse/lib/natsutil"
	"github.com/netpulse/netpulse/lib/retry"
	"github.com/netpulse/netpulse/lib/wire"
	"github.com/netpulse/netpulse/services/detector/detect"
	"github.com/netpulse/netpulse/services/detector/internal/alertout"
	"github.com/netpulse/netpulse/services/detector/internal/clock"
	"github.com/netpulse/netpulse/services/detector/internal/group"
	"github.com/netpulse/netpulse/services/detector/internal/pluginconf"
	"github.com/netpulse/netpulse/services/detector/internal/runner"
)

// Detector is one detector process.
type Detector struct {
	cfg      Config
	reg      *detect.Registry
	log      *slog.Logger
	clock    clock.Clock
	member   string
	counters map[string]*runner.Counters
	// conn is the live connection (tests close it to kill a replica).
	connMu sync.Mutex
	conns  []*nats.Conn // the shared one and one per kind (tests cut them to crash a replica)
}

// Option changes how New builds a Detector.
type Option func(*Detector)

// WithClock drives evaluation with c instead of the wall clock (tests).
func WithClock(c clock.Clock) Option { return func(d *Detector) { d.clock = c } }

// New prepares the detectors cfg selects from reg; it starts nothing. cfg
// must have been validated and built from DefaultConfigFor(reg).
func New(cfg Config, reg *detect.Registry, log *slog.Logger, opts ...Option) (*Detector, error) {
	d := &Detector{cfg: cfg, reg: reg, log: log.With("component", "detector"), clock: clock.Real{}, counters: map[string]*runner.Counters{}}
	for _, o := range opts {
		o(d)
	}
	d.member = cfg.Group.Replica
	if d.member == "" {
		d.member = replicaName()
	}
	d.log = d.log.With("replica", d.member)
	if len(cfg.Selected()) == 0 {
		var names []string
		for _, s := range pluginconf.List(cfg.Detector) {
			names = append(names, s.Name)
		}
		return nil, fmt.Errorf("detectors: nothing to run (registered: %s; the enabled ones run when detectors is empty)", strings.Join(names, ", "))
	}
	for _, s := range cfg.Selected() {
		p, ok := reg.Lookup(s.Name)
		if !ok {
			return nil, fmt.Errorf("detector %s: not registered", s.Name)
		}
		for _, k := range p.Kinds {
			if !slices.Contains(wire.DataKinds, k) {
				return nil, fmt.Errorf("detector %s: consumes kind %q, which is not an event batch kind (%s)", p.Name, k, strings.Join(wire.DataKinds, ", "))
			}
		}
		d.counters[s.Name] = &runner.Counters{}
	}
	return d, nil
}

func (d *Detector) addConn(nc *nats.Conn) {
	d.connMu.Lock()
	d.conns = append(d.conns, nc)
	d.connMu.Unlock()
}

// Member is this replica's name in the consumer groups.
func (d *Detector) Member() string { return d.member }

// Counters gives the running totals of detector name (nil if not running).
func (d *Detector) Counters(name string) *runner.Counters { return d.counters[name] }

// replicaName is the host name (as a token) and a random suffix: unique per
// process, recognisable in `nats consumer ls`.
func replicaName() string {
	host, _ := os.Hostname()
	var b [5]byte
	_, _ = rand.Read(b[:])
	return wire.SanitizeToken(strings.NewReplacer("/", "_", "\\", "_").Replace(host), "_") + "-" +
		strings.ToLower(base32.StdEncoding.WithPadding(base32.NoPadding).EncodeToString(b[:]))
}

// Run runs every selected detector until ctx ends; it returns nil then, or
// the first detector's error that cannot be retried.
func (d *Detector) Run(ctx context.Context) error {
	nc, err := natsutil.Connect(d.cfg.NATS, "netpulse-detector "+d.member, d.log)
	if err != nil {
		return err
	}
	defer nc.Close()
	d.addConn(nc)
	js, err := jetstream.New(nc)
	if err != nil {
		return fmt.Errorf("jetstream: %w", err)
	}
	if _, err := natsutil.EnsureEventsStream(ctx, js, d.cfg.Stream, d.log); err != nil {
		return nilIfDone(ctx, err)
	}
	if _, err := natsutil.EnsureAlertsStream(ctx, js, d.cfg.AlertsStream, d.log); err != nil {
		return nilIfDone(ctx, err)
	}
	if _, err := retry.Logged(ctx, d.log, "create stream "+DeadLetterStream, func(ctx context.Context) (jetstream.Stream, error) {
		return js.CreateOrUpdateStream(ctx, deadLetterStreamConfig(d.cfg.DeadLetterStream))
	}); err != nil {
		return nilIfDone(ctx, err)
	}
	g := d.cfg.Group
	replicas, err := retry.Logged(ctx, d.log, "create bucket "+g.Prefix+"-replicas", func(ctx context.Context) (jetstream.KeyValue, error) {
		return group.EnsureReplicasBucket(ctx, js, g.Prefix+"-replicas", g.MemberTTL, d.cfg.Stream.Replicas)
	})
	if err != nil {
		return nilIfDone(ctx, err)
	}
	alerts, err := retry.Logged(ctx, d.log, "create bucket "+g.Prefix+"-alerts", func(ctx context.Context) (jetstream.KeyValue, error) {
		return alertout.EnsureBucket(ctx, js, g.Prefix+"-alerts", d.cfg.AlertsStream.Replicas)
	})
	if err != nil {
		return nilIfDone(ctx, err)
	}

	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var (
		wg       sync.WaitGroup
		mu       sync.Mutex
		firstErr error
	)
	selected := d.cfg.Selected()
	names := make([]string, len(selected))
	for i, s := range selected {
		names[i] = s.Name
		p, _ := d.reg.Lookup(s.Name)
		// Each kind has a connection of its own: a kind whose batches pile
		// up (a backlog, a slow detector) can at worst be cut off by the
		// server as a slow consumer alone, never the other kinds with it.
		knc, err := natsutil.Connect(d.cfg.NATS, "netpulse-detector "+d.member+" "+p.Name, d.log)
		if err != nil {
			return err
		}
		defer knc.Close()
		d.addConn(knc)
		kjs, err := jetstream.New(knc)
		if err != nil {
			return fmt.Errorf("jetstream: %w", err)
		}
		kReplicas, err := kjs.KeyValue(ctx, replicas.Bucket())
		if err != nil {
			return nilIfDone(ctx, fmt.Errorf("bucket %s: %w", replicas.Bucket(), err))
		}
		kAlerts, err := kjs.KeyValue(ctx, alerts.Bucket())
		if err != nil {
			return nilIfDone(ctx, fmt.Errorf("bucket %s: %w", alerts.Bucket(), err))
		}
		r := runner.New(runner.Settings{
			Plugin: p, PluginConfig: s.Section.PluginConfig(p),
			For: s.Section.For, RepeatInterval: s.Section.RepeatInterval, Severity: detect.Severity(s.Section.Severity),
			Group:  group.Spec{Name: g.Prefix + "-" + p.Name, Kinds: p.Kinds, Partitions: g.Partitions, MaxBufferedBytes: g.MaxBufferedBytes},
			Member: d.member, MemberTTL: g.MemberTTL, AckWait: g.AckWait, MaxAckPending: g.MaxAckPending,
			EvaluateInterval: d.cfg.EvaluateInterval, Warmup: d.cfg.Warmup, IdleTimeout: d.cfg.IdleTimeout,
			DeadLetterSubject: DeadLetterPrefix + ".detector." + p.Name,
			StatsInterval:     d.cfg.Stats.Interval,
		}, runner.Deps{JS: kjs, Replicas: kReplicas, Alerts: kAlerts, Clock: d.clock, Log: d.log, Counters: d.counters[s.Name]})
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := r.Run(ctx); err != nil {
				mu.Lock()
				if firstErr == nil {
					firstErr = fmt.Errorf("detector %s: %w", p.Name, err)
				}
				mu.Unlock()
				cancel()
			}
		}()
	}
	d.log.Info("running", "detectors", strings.Join(names, ","))
	wg.Wait()
	return firstErr
}

func nilIfDone(ctx context.Context, err error) error {
	if ctx.Err() != nil {
		return nil
	}
	return err
}

func deadLetterStreamConfig(s config.Stream) jetstream.StreamConfig {
	return natsutil.StreamConfig(s, wire.DeadLetterStream,
		"messages netpulse services could not use, with the reason in header Netpulse-Reason", DeadLetterPrefix+".>")
}
