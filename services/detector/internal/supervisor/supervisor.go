// Package supervisor is the netpulse-detector process: it runs the selected
// detector plugins (package detect) side by side. Each plugin is
// independent (package runner): its own connection and consumer group on
// NETPULSE_EVENTS, its own goroutines, its own publisher, so a slow plugin
// never holds back another, and each scales to N replicas on its own.
package supervisor

import (
	"context"
	"crypto/rand"
	"encoding/base32"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"os"
	"slices"
	"strings"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"golang.org/x/sync/errgroup"

	"github.com/netpulse/netpulse/lib/config"
	"github.com/netpulse/netpulse/lib/natsutil"
	"github.com/netpulse/netpulse/lib/obs"
	"github.com/netpulse/netpulse/lib/retry"
	"github.com/netpulse/netpulse/lib/wire"
	"github.com/netpulse/netpulse/services/detector/detect"
	"github.com/netpulse/netpulse/services/detector/internal/alertout"
	"github.com/netpulse/netpulse/services/detector/internal/amforward"
	"github.com/netpulse/netpulse/services/detector/internal/clock"
	"github.com/netpulse/netpulse/services/detector/internal/group"
	"github.com/netpulse/netpulse/services/detector/internal/pluginconf"
	"github.com/netpulse/netpulse/services/detector/internal/runner"
)

// Supervisor is one netpulse-detector process: it runs a runner for each
// selected plugin.
type Supervisor struct {
	cfg      Config
	reg      *detect.Registry
	log      *slog.Logger
	clock    clock.Clock
	dial     Dialer
	member   string
	counters map[string]*runner.Counters
	obs      *obs.Obs // see Observe
	// forwarder sends alerts to Alertmanager; nil when none is configured.
	forwarder *amforward.Forwarder
}

// Dialer opens a NATS connection called name.
type Dialer func(cfg config.NATS, name string, log *slog.Logger) (*nats.Conn, error)

// Option changes how New builds a Supervisor.
type Option func(*Supervisor)

// WithClock drives evaluation with c instead of the wall clock (tests).
func WithClock(c clock.Clock) Option { return func(s *Supervisor) { s.clock = c } }

// WithDialer opens the NATS connections with dial instead of
// natsutil.Connect (tests cut them to crash a replica).
func WithDialer(dial Dialer) Option { return func(s *Supervisor) { s.dial = dial } }

// New prepares the plugins cfg selects from reg; it starts nothing. cfg
// must have been validated and built from DefaultConfigFor(reg).
func New(cfg Config, reg *detect.Registry, log *slog.Logger, opts ...Option) (*Supervisor, error) {
	d := &Supervisor{cfg: cfg, reg: reg, log: log.With("component", "detector"), clock: clock.Real{}, dial: natsutil.Connect, counters: map[string]*runner.Counters{}}
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
	if am := cfg.Alertmanager; len(am.URLs()) > 0 {
		f, err := d.newForwarder(am)
		if err != nil {
			return nil, err
		}
		d.forwarder = f
	}
	return d, nil
}

// newForwarder makes the Alertmanager forwarder am describes.
func (d *Supervisor) newForwarder(am AlertmanagerConfig) (*amforward.Forwarder, error) {
	password, err := am.PasswordValue()
	if err != nil {
		return nil, err
	}
	tlsConf, err := am.TLS.ConfigKey("alertmanager.tls")
	if err != nil {
		return nil, err
	}
	tr := http.DefaultTransport.(*http.Transport).Clone()
	tr.TLSClientConfig = tlsConf
	return amforward.New(amforward.Settings{
		URLs: am.URLs(), HTTP: &http.Client{Timeout: am.Timeout, Transport: tr},
		Username: am.Username, Password: password,
		Consumer:       d.cfg.Group.Prefix + "-alertmanager",
		ResendInterval: am.ResendInterval, BatchSize: am.BatchSize, AckWait: am.AckWait,
	}, amforward.Deps{Log: d.log.With("component", "alertmanager"), Ready: func() { d.obs.Ready(readyAlertmanager, true) }}), nil
}

// Counters gives the running totals of detector name (nil if not running).
func (d *Supervisor) Counters(name string) *runner.Counters { return d.counters[name] }

// replicaName is the host name (as a token) and a random suffix: unique per
// process, recognisable in `nats consumer ls`.
func replicaName() string {
	host, _ := os.Hostname()
	var b [5]byte
	_, _ = rand.Read(b[:])
	return wire.SanitizeToken(strings.NewReplacer("/", "_", "\\", "_").Replace(host), "_") + "-" +
		strings.ToLower(base32.StdEncoding.WithPadding(base32.NoPadding).EncodeToString(b[:]))
}

// Run runs every selected plugin until ctx ends; it returns nil then, or
// the first plugin's error that cannot be retried.
func (d *Supervisor) Run(ctx context.Context) error {
	nc, err := d.dial(d.cfg.NATS, "netpulse-detector "+d.member, d.log)
	if err != nil {
		return err
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		return fmt.Errorf("jetstream: %w", err)
	}
	if err := natsutil.EnsureEventsAndAlerts(ctx, js, d.cfg.Stream, d.cfg.AlertsStream, d.log); err != nil {
		return nilIfDone(ctx, err)
	}
	if _, err := natsutil.EnsureStream(ctx, js, deadLetterStreamConfig(d.cfg.DeadLetterStream), d.log); err != nil {
		return nilIfDone(ctx, err)
	}
	gc := d.cfg.Group
	replicas, err := retry.Logged(ctx, d.log, "create bucket "+gc.Prefix+"-replicas", func(ctx context.Context) (jetstream.KeyValue, error) {
		return group.EnsureReplicasBucket(ctx, js, gc.Prefix+"-replicas", gc.MemberTTL, d.cfg.Stream.Replicas)
	})
	if err != nil {
		return nilIfDone(ctx, err)
	}
	alerts, err := retry.Logged(ctx, d.log, "create bucket "+gc.Prefix+"-alerts", func(ctx context.Context) (jetstream.KeyValue, error) {
		return alertout.EnsureBucket(ctx, js, gc.Prefix+"-alerts", d.cfg.AlertsStream.Replicas)
	})
	if err != nil {
		return nilIfDone(ctx, err)
	}
	d.obs.Ready(readyStreams, true)

	// The first runner that fails for good stops the others.
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	g, ctx := errgroup.WithContext(ctx)
	selected := d.cfg.Selected()
	names := make([]string, len(selected))
	for i, s := range selected {
		names[i] = s.Name
		p, _ := d.reg.Lookup(s.Name)
		// Each plugin has a connection of its own: one whose batches pile
		// up (a backlog, a slow plugin) can at worst be cut off by the
		// server as a slow consumer alone, never the others with it.
		knc, err := d.dial(d.cfg.NATS, "netpulse-detector "+d.member+" "+p.Name, d.log)
		if err != nil {
			cancel()
			return errors.Join(err, g.Wait())
		}
		defer knc.Close()
		r, err := d.newRunner(ctx, knc, p, s, replicas.Bucket(), alerts.Bucket())
		if err != nil {
			cancel()
			return errors.Join(nilIfDone(ctx, err), g.Wait())
		}
		g.Go(func() error {
			if err := r.Run(ctx); err != nil {
				return fmt.Errorf("detector %s: %w", p.Name, err)
			}
			return nil
		})
	}
	if f := d.forwarder; f != nil {
		anc, err := d.dial(d.cfg.NATS, "netpulse-detector "+d.member+" alertmanager", d.log)
		if err != nil {
			cancel()
			return errors.Join(err, g.Wait())
		}
		defer anc.Close()
		ajs, err := jetstream.New(anc)
		if err != nil {
			cancel()
			return errors.Join(err, g.Wait())
		}
		akv, err := ajs.KeyValue(ctx, alerts.Bucket())
		if err != nil {
			cancel()
			return errors.Join(fmt.Errorf("bucket %s: %w", alerts.Bucket(), err), g.Wait())
		}
		g.Go(func() error { return f.Run(ctx, ajs, akv) })
	}
	d.log.Info("running", "detectors", strings.Join(names, ","))
	return g.Wait()
}

// newRunner makes the runner of plugin p on its own connection nc.
func (d *Supervisor) newRunner(ctx context.Context, nc *nats.Conn, p detect.Plugin, s pluginconf.Named, replicasBucket, alertsBucket string) (*runner.Runner, error) {
	js, err := jetstream.New(nc)
	if err != nil {
		return nil, fmt.Errorf("jetstream: %w", err)
	}
	replicas, err := js.KeyValue(ctx, replicasBucket)
	if err != nil {
		return nil, fmt.Errorf("bucket %s: %w", replicasBucket, err)
	}
	alerts, err := js.KeyValue(ctx, alertsBucket)
	if err != nil {
		return nil, fmt.Errorf("bucket %s: %w", alertsBucket, err)
	}
	g := d.cfg.Group
	return runner.New(runner.Settings{
		Plugin: p, PluginConfig: s.Section.PluginConfig(p),
		For: s.Section.For, RepeatInterval: s.Section.RepeatInterval, Severity: detect.Severity(s.Section.Severity),
		GeneratorURL: d.cfg.GeneratorURL,
		Group:        group.Spec{Name: g.Prefix + "-" + p.Name, Kinds: p.Kinds, Partitions: g.Partitions, MaxBufferedBytes: g.MaxBufferedBytes},
		Member:       d.member, MemberTTL: g.MemberTTL, AckWait: g.AckWait, MaxAckPending: g.MaxAckPending,
		EvaluateInterval: d.cfg.EvaluateInterval, Warmup: d.cfg.Warmup, IdleTimeout: d.cfg.IdleTimeout,
		DeadLetterSubject: wire.DetectorDeadLetterSubject(p.Name),
		StatsInterval:     d.cfg.Stats.Interval,
	}, runner.Deps{JS: js, Replicas: replicas, Alerts: alerts, Clock: d.clock, Log: d.log, Counters: d.counters[s.Name],
		Joined: func() { d.obs.Ready(readyGroup(s.Name), true) }}), nil
}

func nilIfDone(ctx context.Context, err error) error {
	if ctx.Err() != nil {
		return nil
	}
	return err
}

func deadLetterStreamConfig(s config.Stream) jetstream.StreamConfig {
	return natsutil.StreamConfig(s, wire.DeadLetterStream,
		"messages netpulse services could not use, with the reason in header "+wire.HeaderReason, wire.DeadLetterPrefix+".>")
}
