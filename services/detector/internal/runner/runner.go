// Package runner runs one detector kind in one replica: it consumes the
// kind's share of NETPULSE_EVENTS through the kind's consumer group, keeps
// one detector instance per host it owns, evaluates them on the clock and
// turns their conditions into published alerts.
//
// Work is split by partition (a hash of the host): one goroutine per
// partition holds its hosts, so a host's batches are observed in stream
// order and a slow host holds back only its partition. When the group moves
// a partition here, the hosts are rebuilt from their latest snapshot and
// recent events; when it moves away, they are dropped at once.
package runner

import (
	"context"
	"errors"
	"log/slog"
	"maps"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/synadia-io/orbit.go/pcgroups"

	"github.com/netpulse/netpulse/lib/retry"
	"github.com/netpulse/netpulse/lib/wire"
	"github.com/netpulse/netpulse/services/detector/detect"
	"github.com/netpulse/netpulse/services/detector/internal/alertout"
	"github.com/netpulse/netpulse/services/detector/internal/clock"
	"github.com/netpulse/netpulse/services/detector/internal/group"
	"github.com/netpulse/netpulse/services/detector/internal/history"
)

// Settings are one kind's settings in one replica.
type Settings struct {
	Plugin detect.Plugin
	// PluginConfig is the validated config for Plugin.New.
	PluginConfig   any
	For            time.Duration
	RepeatInterval time.Duration
	// GeneratorURL is the alerts' generatorURL template (lifecycle.Settings).
	GeneratorURL string
	Severity     detect.Severity

	Group  group.Spec
	Member string
	// MemberTTL: a replica that stops beating this long loses its partitions.
	MemberTTL     time.Duration
	AckWait       time.Duration
	MaxAckPending int

	EvaluateInterval time.Duration
	// Warmup is how much history a takeover replays (and how old a
	// backlogged message may be and still be observed).
	Warmup time.Duration
	// IdleTimeout drops a host without events and without alerts.
	IdleTimeout time.Duration
	// DeadLetterSubject receives the messages this kind cannot use.
	DeadLetterSubject string
	StatsInterval     time.Duration
}

// Deps are what a runner works with.
type Deps struct {
	JS       jetstream.JetStream
	Replicas jetstream.KeyValue // heartbeat bucket
	Alerts   jetstream.KeyValue // active-alerts bucket
	Clock    clock.Clock
	Log      *slog.Logger
	// Counters receives the totals; nil makes new ones.
	Counters *Counters
	// Joined, when set, is called each time the runner has joined its
	// group and consumes (readiness).
	Joined func()
}

// Counters are a runner's running totals.
type Counters struct {
	Messages         atomic.Uint64 // delivered batches handled (not stale, not duplicate)
	Events           atomic.Uint64 // events, connections and snapshots observed live
	Replayed         atomic.Uint64 // batches observed during takeovers
	Evaluations      atomic.Uint64 // Evaluate calls (one per host per tick)
	Stale            atomic.Uint64 // backlogged batches older than warmup, skipped
	Duplicates       atomic.Uint64 // batches already observed (redelivery, replay overlap)
	Fired            atomic.Uint64
	Resolved         atomic.Uint64
	Reminders        atomic.Uint64 // reminders and severity changes
	DeadLettered     atomic.Uint64
	DeadLetterErrors atomic.Uint64
	Panics           atomic.Uint64
	Takeovers        atomic.Uint64
	Hosts            atomic.Int64
	Partitions       atomic.Int64
	// Pending is the group consumer's backlog as of the last delivery
	// (NumPending): the detector's lag.
	Pending atomic.Int64
	// ObserveLag, when set before Run, is told for every live batch how
	// old its newest record is as the detector observes it (seconds): the
	// kernel-to-detector lag, which bounds how late an alert can be after
	// its condition held (plus evaluate_interval and the condition's for).
	ObserveLag func(seconds float64)
	// pub is the runner's alert publisher, whose own counters these
	// are read from (Publisher).
	pub atomic.Pointer[alertout.Publisher]

	mu     sync.Mutex
	plugin map[string]uint64 // the plugin's own counters, as of the last stats line
}

// Published and PublishErrors are the alert publisher's totals (0 before
// the runner is made).
func (c *Counters) Published() uint64 {
	if p := c.pub.Load(); p != nil {
		return p.Published.Load()
	}
	return 0
}

func (c *Counters) PublishErrors() uint64 {
	if p := c.pub.Load(); p != nil {
		return p.Errors.Load()
	}
	return 0
}

// Plugin is a copy of the plugin's own counters as of the last stats line.
func (c *Counters) Plugin() map[string]uint64 {
	c.mu.Lock()
	defer c.mu.Unlock()
	return maps.Clone(c.plugin)
}

// Runner is one plugin in one replica.
type Runner struct {
	s   Settings
	d   Deps
	log *slog.Logger
	c   *Counters

	store *alertout.Store
	pub   *alertout.Publisher
	once  *onceLog
	// part[p] is epoch<<1 | owned: one load tells whether partition p is
	// ours and which ownership period a delivery belongs to.
	part    []atomic.Uint64
	workers []*worker
	// floor: messages below this NETPULSE_EVENTS sequence are older than
	// the warmup window.
	floor   atomic.Uint64
	history history.Reader
	// lastCounters are the plugin counters each worker reported last.
	lastCounters []map[string]uint64
	ctx          context.Context
}

// New makes a runner; it starts nothing.
func New(s Settings, d Deps) *Runner {
	log := d.Log.With("detector", s.Plugin.Name)
	store := &alertout.Store{KV: d.Alerts, Detector: s.Plugin.Name}
	if d.Counters == nil {
		d.Counters = &Counters{}
	}
	r := &Runner{
		s: s, d: d, log: log, c: d.Counters,
		store:   store,
		pub:     alertout.NewPublisher(d.JS, store, 1024, log),
		once:    &onceLog{log: log},
		history: history.Reader{JS: d.JS},
		part:    make([]atomic.Uint64, s.Group.Partitions),
	}
	r.c.pub.Store(r.pub)
	r.lastCounters = make([]map[string]uint64, s.Group.Partitions)
	dead := &deadLetters{js: d.JS, subject: s.DeadLetterSubject, detector: s.Plugin.Name, c: r.c, once: r.once}
	r.workers = make([]*worker, s.Group.Partitions)
	for p := range r.workers {
		r.workers[p] = &worker{
			owner: &r.part[p], floor: &r.floor, s: &r.s, clock: d.Clock, c: r.c,
			store: store, pub: r.pub, history: r.history, dead: dead, once: r.once,
			in: make(chan delivery, 256), ctrl: make(chan control, 4), countersReq: make(chan chan<- map[string]uint64, 1),
			hosts: map[string]*hostState{}, retired: map[string]uint64{},
		}
	}
	return r
}

// Run consumes until ctx ends; it returns nil then, and an error only when
// the group cannot be used as configured.
func (r *Runner) Run(ctx context.Context) error {
	workCtx, stopWork := context.WithCancel(ctx)
	defer stopWork()
	r.ctx = workCtx
	if err := retryUntilDone(ctx, r.log, "create consumer group "+r.s.Group.Name, func(ctx context.Context) error {
		return group.Ensure(ctx, r.d.JS, r.s.Group)
	}); err != nil {
		return err
	}
	if err := retryUntilDone(ctx, r.log, "find the warmup window", r.refreshFloor); err != nil {
		return err
	}

	var wg sync.WaitGroup
	for _, w := range r.workers {
		wg.Add(1)
		go func() { defer wg.Done(); w.run(workCtx) }()
	}
	pubDone := make(chan struct{})
	pubCtx, stopPub := context.WithCancel(context.Background())
	defer stopPub()
	go func() { defer close(pubDone); r.pub.Run(pubCtx) }()
	m := &group.Membership{JS: r.d.JS, Replicas: r.d.Replicas, Group: r.s.Group.Name, Detector: r.s.Plugin.Name,
		Member: r.s.Member, TTL: r.s.MemberTTL, Log: r.log}
	var cc pcgroups.ConsumerGroupConsumeContext

	// stop ends consumption first (nothing new arrives), then the workers,
	// then leaves the group so the partitions move at once, and lets the
	// publisher drain for a few seconds.
	stop := func(err error) error {
		if cc != nil {
			cc.Stop()
		}
		stopWork()
		wg.Wait()
		leave, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		m.Leave(leave)
		cancel()
		r.pub.Close()
		select {
		case <-pubDone:
		case <-time.After(5 * time.Second):
			stopPub() // what is left stays unpublished in the store for the next owner
			<-pubDone
		}
		r.logStats("detector stopped", false)
		return err
	}
	consume := func(context.Context) error {
		// pcgroups watches the group config with this context for as long as
		// it consumes: not the retry's short-lived one.
		c, err := pcgroups.ElasticConsume(workCtx, r.d.JS, wire.EventsStream, r.s.Group.Name, r.s.Member, r.onMsg, jetstream.ConsumerConfig{
			Description:   "netpulse detector " + r.s.Plugin.Name,
			AckPolicy:     jetstream.AckExplicitPolicy,
			AckWait:       r.s.AckWait,
			MaxAckPending: r.s.MaxAckPending,
		})
		if err == nil {
			cc = c
		}
		return err
	}
	join := func(ctx context.Context) error {
		if err := group.Ensure(ctx, r.d.JS, r.s.Group); err != nil {
			return err
		}
		if err := m.Reconcile(ctx); err != nil {
			return err
		}
		return consume(ctx)
	}
	if err := retryUntilDone(ctx, r.log, "watch group "+r.s.Group.Name, func(ctx context.Context) error {
		return group.WatchOwnership(workCtx, r.d.JS, r.s.Group.Name, r.s.Member, r.s.Group.Partitions, r.log, r.setOwned)
	}); err != nil || ctx.Err() != nil {
		return stop(err)
	}
	if err := retryUntilDone(ctx, r.log, "join group "+r.s.Group.Name, join); err != nil || ctx.Err() != nil {
		return stop(err)
	}
	go m.Run(workCtx)
	r.log.Info("consuming", "group", r.s.Group.Name, "member", r.s.Member, "partitions", r.s.Group.Partitions)
	if r.d.Joined != nil {
		r.d.Joined()
	}

	stats := time.NewTicker(r.s.StatsInterval)
	defer stats.Stop()
	floor := time.NewTicker(max(r.s.Warmup/20, time.Second))
	defer floor.Stop()
	// Whether our group consumer exists, twice a second (see below).
	health := time.NewTicker(500 * time.Millisecond)
	defer health.Stop()
	missing := 0
	for {
		select {
		case <-ctx.Done():
			return stop(nil)
		case err := <-cc.Done():
			// The group config was deleted or broke: make it again and rejoin.
			r.log.Error("consumer group stopped; rejoining", "group", r.s.Group.Name, "err", err)
			cc = nil
			select {
			case <-ctx.Done():
				return stop(nil)
			case <-time.After(time.Second):
			}
			if err := retryUntilDone(ctx, r.log, "rejoin group "+r.s.Group.Name, join); err != nil || ctx.Err() != nil {
				return stop(err)
			}
		case <-health.C:
			// pcgroups makes our consumer when we join, but gives up until
			// ack_wait+0.5s later when the previous owner's consumer still
			// holds a partition; and the server deletes a consumer that
			// stops pulling for ack_wait (a long stall here), which pcgroups
			// does not notice. Either way partitions we own go unread: when
			// the consumer is missing for a second, consume again.
			if r.c.Partitions.Load() == 0 {
				missing = 0
				continue
			}
			cctx, cancel := context.WithTimeout(ctx, 5*time.Second)
			_, err := r.d.JS.Consumer(cctx, group.StreamName(r.s.Group.Name), r.s.Member)
			cancel()
			if !errors.Is(err, jetstream.ErrConsumerNotFound) {
				missing = 0
				continue
			}
			if missing++; missing < 2 {
				continue // pcgroups recreates it on a membership change: look again
			}
			missing = 0
			r.log.Warn("group consumer gone; consuming again", "group", r.s.Group.Name)
			cc.Stop()
			cc = nil
			if err := retryUntilDone(ctx, r.log, "consume group "+r.s.Group.Name, consume); err != nil || ctx.Err() != nil {
				return stop(err)
			}
		case <-floor.C:
			if err := r.refreshFloor(ctx); err != nil && ctx.Err() == nil {
				r.log.Warn("finding the warmup window", "err", err)
			}
		case <-stats.C:
			r.logStats("detector stats", true)
		}
	}
}

// logStats logs the runner's counters and the plugin's, named
// <plugin>.<counter>.
func (r *Runner) logStats(msg string, workersRunning bool) {
	c := r.c
	args := []any{"messages", c.Messages.Load(), "events", c.Events.Load(), "replayed", c.Replayed.Load(), "evaluations", c.Evaluations.Load(),
		"fired", c.Fired.Load(), "resolved", c.Resolved.Load(), "reminders", c.Reminders.Load(),
		"published", r.pub.Published.Load(), "publish_errors", r.pub.Errors.Load(),
		"dead_lettered", c.DeadLettered.Load(), "dead_letter_errors", c.DeadLetterErrors.Load(),
		"stale", c.Stale.Load(), "duplicates", c.Duplicates.Load(), "panics", c.Panics.Load(),
		"takeovers", c.Takeovers.Load(), "hosts", c.Hosts.Load(), "partitions", c.Partitions.Load()}
	plugin := r.pluginCounters(workersRunning)
	c.mu.Lock()
	c.plugin = plugin
	c.mu.Unlock()
	for _, name := range slices.Sorted(maps.Keys(plugin)) {
		args = append(args, r.s.Plugin.Name+"."+name, plugin[name])
	}
	r.log.Info(msg, args...)
}

// pluginCounters adds up the counters of the plugin's instances, live and
// dropped, over every partition. An instance is only touched on its
// worker's goroutine, so running workers are asked; one too busy to answer
// within a second (a long replay, a NATS outage) counts with what it said
// last time, so the stats line is never held up and never goes down. Once
// the workers stopped, their counters are read directly.
func (r *Runner) pluginCounters(workersRunning bool) map[string]uint64 {
	if workersRunning {
		replies := make([]chan map[string]uint64, len(r.workers))
		for p, w := range r.workers {
			ch := make(chan map[string]uint64, 1)
			select {
			case w.countersReq <- ch:
				replies[p] = ch
			default: // still busy with the last request
			}
		}
		deadline := time.NewTimer(time.Second)
		defer deadline.Stop()
	collect:
		for p, ch := range replies {
			if ch == nil {
				continue
			}
			select {
			case r.lastCounters[p] = <-ch:
			case <-deadline.C:
				break collect
			}
		}
	} else {
		for p, w := range r.workers {
			r.lastCounters[p] = w.pluginCounters()
		}
	}
	total := map[string]uint64{}
	for _, part := range r.lastCounters {
		for k, v := range part {
			total[k] += v
		}
	}
	return total
}

func (r *Runner) refreshFloor(ctx context.Context) error {
	cctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	seq, err := r.history.SeqAt(cctx, r.d.Clock.Now().Add(-r.s.Warmup))
	if err != nil {
		return err
	}
	r.floor.Store(seq)
	return nil
}

// setOwned applies a membership change: lost partitions are dropped before
// the new owner can start on them (it needs a consumer round trip and
// usually waits ~0.5 s), gained ones adopt the hosts with firing alerts.
func (r *Runner) setOwned(owned []bool) {
	var gained []int
	n := int64(0)
	for p, want := range owned {
		st := r.part[p].Load()
		have := st&1 == 1
		if want {
			n++
		}
		switch {
		case have && !want:
			r.part[p].Store((st>>1 + 1) << 1)
			r.control(r.workers[p], control{evict: true})
		case !have && want:
			r.part[p].Store((st>>1+1)<<1 | 1)
			gained = append(gained, p)
		}
	}
	r.c.Partitions.Store(n)
	if len(gained) == 0 {
		return
	}
	r.log.Info("partitions changed", "owned", n, "gained", gained)
	// Hosts whose alerts fire but which send nothing would never be taken
	// over by a message: adopt them, so their alerts resolve when due.
	ctx, cancel := context.WithTimeout(r.ctx, 10*time.Second)
	defer cancel()
	hosts, err := r.store.Hosts(ctx)
	if err != nil {
		r.log.Warn("listing hosts with firing alerts", "err", err)
		return
	}
	byPart := map[int][]string{}
	for _, h := range hosts {
		p := group.Partition(h, len(r.part))
		byPart[p] = append(byPart[p], h)
	}
	for _, p := range gained {
		if len(byPart[p]) > 0 {
			r.control(r.workers[p], control{adopt: byPart[p]})
		}
	}
}

// onMsg runs on the group consumer's goroutine: route the message to its
// partition's worker. A message of a partition that is not ours (any more)
// is left unacknowledged: the group redelivers it to the owner.
func (r *Runner) onMsg(m jetstream.Msg) {
	if meta, err := m.Metadata(); err == nil {
		r.c.Pending.Store(int64(meta.NumPending))
	}
	subject := m.Subject()
	host, kind, ok := wire.ParseEventSubject(subject)
	if !ok {
		// Cannot happen with the group's filters; never block on it.
		r.once.Error("message on an unexpected subject acknowledged", "subject", subject)
		_ = m.Ack()
		return
	}
	p := group.Partition(host, len(r.part))
	st := r.part[p].Load()
	if st&1 == 0 {
		return
	}
	d := delivery{msg: m, subject: subject, host: host, kind: kind, seq: sourceSeq(m.Headers()), state: st, data: m.Data()}
	select {
	case r.workers[p].in <- d:
	case <-r.ctx.Done():
	}
}

// sourceSeq is the NETPULSE_EVENTS sequence of a message the group's
// work-queue stream sourced: the second field of its Nats-Stream-Source
// header ("<stream> <seq> <filter> <transform> <subject> ..."). 0 when
// absent.
func sourceSeq(h nats.Header) uint64 {
	v := h.Get("Nats-Stream-Source")
	if v == "" {
		return 0
	}
	_, rest, _ := strings.Cut(v, " ")
	f, _, _ := strings.Cut(rest, " ")
	seq, err := strconv.ParseUint(f, 10, 64)
	if err != nil {
		return 0
	}
	return seq
}

// control hands c to worker w, unless the runner stops first.
func (r *Runner) control(w *worker, c control) {
	select {
	case w.ctrl <- c:
	case <-r.ctx.Done():
	}
}

// onceLog logs the first occurrence of each message as an error; the
// counters in the stats lines tell the rest.
type onceLog struct {
	log  *slog.Logger
	seen sync.Map
}

func (o *onceLog) Error(what string, args ...any) {
	if _, seen := o.seen.LoadOrStore(what, true); !seen {
		o.log.Error(what+" (logged once; see the counters in the stats lines)", args...)
	}
}

// deadLetters moves the messages a plugin cannot use to its dead-letter
// subject.
type deadLetters struct {
	js       jetstream.JetStream
	subject  string
	detector string
	c        *Counters
	once     *onceLog
}

// move publishes d on the dead-letter subject with the reason, then
// acknowledges it. When the publish fails the message is handed back (nak)
// to be tried again.
func (dl *deadLetters) move(ctx context.Context, d delivery, reason string) {
	m := nats.NewMsg(dl.subject)
	m.Data = d.data
	m.Header.Set(wire.HeaderReason, reason)
	m.Header.Set(wire.HeaderSubject, d.subject)
	m.Header.Set(wire.HeaderDetector, dl.detector)
	if d.seq != 0 {
		m.Header.Set(wire.HeaderStreamSeq, strconv.FormatUint(d.seq, 10))
		m.Header.Set(jetstream.MsgIDHeader, wire.DeadLetterMsgID(dl.detector, d.seq))
	}
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	if _, err := dl.js.PublishMsg(ctx, m); err != nil {
		dl.c.DeadLetterErrors.Add(1)
		dl.once.Error("dead-letter publish failed", "subject", dl.subject, "err", err)
		if d.msg != nil {
			_ = d.msg.NakWithDelay(time.Second)
		}
		return
	}
	dl.c.DeadLettered.Add(1)
	dl.once.Error("bad input moved to the dead-letter subject", "subject", d.subject, "dead_letter", dl.subject, "reason", reason)
	if d.msg != nil {
		_ = d.msg.Ack()
	}
}

// retryUntilDone calls fn (each attempt bounded by retry.AttemptTimeout)
// until it succeeds, ctx ends (nil) or the configuration is at fault
// (group.ErrMismatch, returned).
func retryUntilDone(ctx context.Context, log *slog.Logger, what string, fn func(context.Context) error) error {
	_, err := retry.Logged(ctx, log, what, func(ctx context.Context) (struct{}, error) {
		err := fn(ctx)
		if errors.Is(err, group.ErrMismatch) {
			return struct{}{}, retry.Permanent(err)
		}
		return struct{}{}, err
	})
	if ctx.Err() != nil {
		return nil
	}
	return err
}
