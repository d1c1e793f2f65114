package runner

import (
	"context"
	"fmt"
	"maps"
	"runtime/debug"
	"sync/atomic"
	"time"

	"github.com/netpulse/netpulse/lib/alert"
	"github.com/netpulse/netpulse/lib/eventpb"
	"github.com/netpulse/netpulse/lib/wire"
	"github.com/netpulse/netpulse/services/detector/detect"
	"github.com/netpulse/netpulse/services/detector/internal/alertout"
	"github.com/netpulse/netpulse/services/detector/internal/clock"
	"github.com/netpulse/netpulse/services/detector/internal/history"
	"github.com/netpulse/netpulse/services/detector/internal/lifecycle"
)

// acker is what a worker does with a delivered message: jetstream.Msg.
type acker interface {
	Ack() error
	NakWithDelay(time.Duration) error
}

// delivery is one message routed to a partition's worker.
type delivery struct {
	msg     acker
	subject string
	host    string
	kind    string
	// seq is the message's NETPULSE_EVENTS sequence (0 when unknown): it
	// orders live messages against replayed ones.
	seq  uint64
	data []byte
	// state is the partition's epoch<<1|owned when the message arrived.
	state uint64
}

// control changes what a worker owns.
type control struct {
	evict bool     // the partition moved away: drop every host
	adopt []string // hosts with firing alerts in a partition that arrived
}

// hostState is one host's detector instance and alerts.
type hostState struct {
	host string
	inst detect.Instance
	tr   *lifecycle.Tracker
	// lastSeq is the highest NETPULSE_EVENTS sequence observed.
	lastSeq uint64
	// replayedTo: every batch of the host up to this sequence was observed
	// by a replay.
	replayedTo uint64
	// seen are the sequences observed live lately. Redeliveries come out of
	// order (a batch lost on a dropped connection returns after ack_wait,
	// behind later ones), so "at most lastSeq" does not mean "observed".
	seen seqRing
	// lastEvent is when (framework clock) the host last sent something.
	lastEvent time.Time
}

// worker owns the hosts of one partition: every method runs on its
// goroutine. What it shares with the runner is read-only or safe for
// concurrent use.
type worker struct {
	owner   *atomic.Uint64 // the partition's epoch<<1|owned (the runner writes it)
	floor   *atomic.Uint64 // batches below this sequence are older than the warmup
	s       *Settings
	clock   clock.Clock
	c       *Counters
	store   *alertout.Store
	pub     *alertout.Publisher
	history history.Reader
	dead    *deadLetters
	once    *onceLog
	ctx     context.Context // the runner's work context, from run

	in   chan delivery
	ctrl chan control
	// countersReq asks for pluginCounters: a queue of its own, so that
	// stats requests never hold up an ownership change.
	countersReq chan chan<- map[string]uint64
	hosts       map[string]*hostState
	batch       eventpb.Batch // the live batch being handled
	old         eventpb.Batch // a replayed one
	// retired adds up the plugin counters of the instances dropped, so
	// the totals in the stats lines never go down.
	retired map[string]uint64
}

func (w *worker) run(ctx context.Context) {
	w.ctx = ctx
	t := w.clock.NewTicker(w.s.EvaluateInterval)
	defer t.Stop()
	defer func() { w.c.Hosts.Add(-int64(len(w.hosts))) }()
	for {
		select {
		case <-ctx.Done():
			return
		case c := <-w.ctrl:
			w.control(c)
		case reply := <-w.countersReq:
			reply <- w.pluginCounters()
		case d := <-w.in:
			w.handle(d)
		case now := <-t.C():
			w.evaluate(now)
		}
	}
}

func (w *worker) control(c control) {
	if c.evict {
		for _, h := range w.hosts {
			w.retire(h.inst)
		}
		w.c.Hosts.Add(-int64(len(w.hosts)))
		clear(w.hosts)
		// Deliveries queued before the move are dropped by their epoch.
		return
	}
	if w.owner.Load()&1 == 0 {
		return // the partition moved on again before this ran
	}
	for _, h := range c.adopt {
		if _, ok := w.hosts[h]; !ok {
			w.takeover(h, ^uint64(0))
		}
	}
}

// handle observes one live batch.
func (w *worker) handle(d delivery) {
	if d.state != w.owner.Load() {
		return // the partition moved while this waited: its new owner gets it
	}
	if d.seq != 0 && d.seq < w.floor.Load() {
		// A backlog older than the warmup window (the group buffered it
		// while no replica ran): not news any more.
		w.c.Stale.Add(1)
		w.once.Error("skipping batches older than warmup (a backlog)", "subject", d.subject, "warmup", w.s.Warmup)
		_ = d.msg.Ack()
		return
	}
	b := &w.batch
	b.ResetVT()
	if rej := wire.DecodeBatch(b, d.data, d.host, "detector"); rej != nil {
		w.dead.move(w.ctx, d, rej.Error())
		return
	}
	h := w.hosts[d.host]
	if h == nil {
		if h = w.takeover(d.host, d.seq); h == nil {
			_ = d.msg.Ack() // counted and logged by takeover
			return
		}
	}
	if d.seq != 0 && (d.seq <= h.replayedTo || h.seen.covers(d.seq)) {
		w.c.Duplicates.Add(1)
		_ = d.msg.Ack()
		return
	}
	w.c.Messages.Add(1)
	w.c.Events.Add(uint64(wire.Records(b)))
	if w.c.ObserveLag != nil {
		if ns := newestNs(b); ns > 0 {
			w.c.ObserveLag(time.Since(time.Unix(0, int64(ns))).Seconds())
		}
	}
	if perr := w.observe(h, detect.Input{Host: d.host, Kind: d.kind, Batch: b}); perr != "" {
		w.dead.move(w.ctx, d, "detector panicked on this batch: "+perr)
		w.rebuild(d.host, h, d.seq) // without the batch that made it panic
		h.lastSeq = max(h.lastSeq, d.seq)
		h.seen.add(d.seq)
		return
	}
	if d.seq != 0 {
		h.lastSeq = max(h.lastSeq, d.seq)
		h.seen.add(d.seq)
	}
	h.lastEvent = w.clock.Now()
	_ = d.msg.Ack()
}

// newestNs is the kernel time of b's newest record (0: none).
func newestNs(b *eventpb.Batch) uint64 {
	var ns uint64
	for _, ev := range b.Events {
		ns = max(ns, ev.TimeUnixNano)
	}
	for _, c := range b.Connections {
		ns = max(ns, c.TimeUnixNano)
	}
	if b.Snapshot != nil {
		ns = max(ns, b.Snapshot.TimeUnixNano)
	}
	return ns
}

// observe calls Observe, turning a panic into its message.
func (w *worker) observe(h *hostState, in detect.Input) (panicked string) {
	defer func() {
		if p := recover(); p != nil {
			panicked = w.panicked("Observe", in.Host, p)
		}
	}()
	h.inst.Observe(in)
	return ""
}

func (w *worker) panicked(where, host string, p any) string {
	w.c.Panics.Add(1)
	msg := fmt.Sprint(p)
	w.once.Error("detector panicked; its instance for the host is rebuilt", "in", where, "host", host, "panic", msg, "stack", string(debug.Stack()))
	return msg
}

// newInstance calls Plugin.New, turning a panic into an error.
func (w *worker) newInstance(host string) (inst detect.Instance, err error) {
	defer func() {
		if p := recover(); p != nil {
			err = fmt.Errorf("panic: %s", w.panicked("New", host, p))
		}
	}()
	return w.s.Plugin.New(w.s.PluginConfig, host)
}

// retire adds the counters of an instance being dropped to the retired
// totals.
func (w *worker) retire(inst detect.Instance) {
	if c, ok := inst.(detect.Counting); ok {
		for k, v := range c.Counters() {
			w.retired[k] += v
		}
	}
}

// pluginCounters adds up the counters of the partition's instances, live
// and retired.
func (w *worker) pluginCounters() map[string]uint64 {
	total := maps.Clone(w.retired)
	for _, h := range w.hosts {
		if c, ok := h.inst.(detect.Counting); ok {
			for k, v := range c.Counters() {
				total[k] += v
			}
		}
	}
	return total
}

// takeover starts owning host: a new instance, the alerts that fire for it
// (from the store: not fired again), and its state rebuilt by replaying the
// latest snapshot and the warmup window below sequence before. It returns
// nil when the plugin cannot make an instance.
func (w *worker) takeover(host string, before uint64) *hostState {
	inst, err := w.newInstance(host)
	if err != nil {
		w.once.Error("detector cannot make an instance; the host's events are skipped", "host", host, "err", err)
		return nil
	}
	w.c.Takeovers.Add(1)
	h := &hostState{
		host: host,
		inst: inst,
		tr: lifecycle.New(lifecycle.Settings{Detector: w.s.Plugin.Name, Host: host,
			For: w.s.For, RepeatInterval: w.s.RepeatInterval, Severity: w.s.Severity, GeneratorURL: w.s.GeneratorURL}),
		lastEvent: w.clock.Now(),
	}
	var recs []alertout.Stored
	_ = retryUntilDone(w.ctx, w.once.log, "load firing alerts of "+host, func(ctx context.Context) error {
		recs, err = w.store.Load(ctx, host)
		return err
	})
	for _, st := range recs {
		h.tr.Restore(st.Alert)
		if !st.Published {
			// Its owner stored it and may have died before publishing: send
			// it again under the same message ID (stored once).
			w.pub.Enqueue(w.ctx, st)
		}
	}
	w.replay(host, h, before)
	w.hosts[host] = h
	w.c.Hosts.Add(1)
	return h
}

// rebuild replaces a host's instance after a panic, replaying the window
// below sequence upTo.
func (w *worker) rebuild(host string, h *hostState, upTo uint64) {
	w.retire(h.inst)
	inst, err := w.newInstance(host)
	if err != nil {
		w.once.Error("detector cannot make an instance; the host's events are skipped", "host", host, "err", err)
		delete(w.hosts, host)
		w.c.Hosts.Add(-1)
		return
	}
	h.inst = inst
	w.replay(host, h, upTo)
}

// replay feeds the instance the latest snapshot (when the detector reads
// snapshots and it predates the window) and the warmup window, with
// Replay set. A batch that makes the instance panic ends the replay with a
// fresh instance: better empty state than a broken one.
func (w *worker) replay(host string, h *hostState, before uint64) {
	kinds := w.s.Plugin.Kinds
	subjects := make([]string, len(kinds))
	var snap *history.Msg
	for i, k := range kinds {
		subjects[i] = wire.EventSubject(host, k)
		if k == wire.KindSnapshot {
			_ = retryUntilDone(w.ctx, w.once.log, "read the latest snapshot of "+host, func(ctx context.Context) error {
				var err error
				snap, err = w.history.LastOf(ctx, subjects[i])
				return err
			})
			if snap != nil && snap.Seq >= before {
				snap = nil // not yet ours: it comes live
			}
		}
	}
	broken := false
	var fed uint64 // last sequence fed: a retried replay resumes after it
	feed := func(m history.Msg) {
		fed = max(fed, m.Seq)
		if broken {
			return
		}
		b := &w.old
		b.ResetVT()
		if wire.DecodeBatch(b, m.Data, host, "detector") != nil {
			return // dead-lettered when it was live
		}
		_, kind, _ := wire.ParseEventSubject(m.Subject)
		if perr := w.observe(h, detect.Input{Host: host, Kind: kind, Batch: b, Replay: true}); perr != "" {
			broken = true
			if inst, err := w.newInstance(host); err == nil {
				w.retire(h.inst)
				h.inst = inst
			}
			return
		}
		w.c.Replayed.Add(1)
	}
	since := w.clock.Now().Add(-w.s.Warmup)
	_ = retryUntilDone(w.ctx, w.once.log, "replay "+host, func(ctx context.Context) error {
		first := true
		return w.history.Replay(ctx, subjects, since, before, func(m history.Msg) {
			if first {
				first = false
				if snap != nil && snap.Seq < m.Seq {
					feed(*snap) // the state the window's events change
				}
				snap = nil
			}
			if m.Seq > fed {
				feed(m)
			}
		})
	})
	if snap != nil {
		feed(*snap) // an empty window: the snapshot is all there is
	}
	// Every batch of the host up to the last one fed was observed (the
	// replay reads all of them below before).
	h.replayedTo = max(h.replayedTo, fed)
	h.lastSeq = max(h.lastSeq, fed)
}

// evaluate asks every host's instance what holds now and publishes the
// transitions; idle hosts without alerts are dropped.
func (w *worker) evaluate(now time.Time) {
	for host, h := range w.hosts {
		conds, perr := w.evaluateOne(h, now)
		w.c.Evaluations.Add(1)
		if perr != "" {
			w.rebuild(host, h, h.lastSeq+1)
			continue
		}
		alerts, dups := h.tr.Update(now, conds)
		if dups > 0 {
			w.once.Error("detector returned one condition twice; the first counts", "host", host)
		}
		for _, a := range alerts {
			w.emit(a)
		}
		if p, f := h.tr.Counts(); p == 0 && f == 0 && now.Sub(h.lastEvent) > w.s.IdleTimeout {
			w.retire(h.inst)
			delete(w.hosts, host)
			w.c.Hosts.Add(-1)
		}
	}
}

func (w *worker) evaluateOne(h *hostState, now time.Time) (conds []detect.Condition, panicked string) {
	defer func() {
		if p := recover(); p != nil {
			panicked = w.panicked("Evaluate", h.host, p)
		}
	}()
	return h.inst.Evaluate(now), ""
}

// emit stores a transition (so a replica taking the host over knows it),
// then hands it to the publisher. Storing waits out a NATS outage: alerts
// of this partition wait with it, nothing is lost.
func (w *worker) emit(a alert.Alert) {
	var st alertout.Stored
	st.Record = alertout.Record{Alert: a}
	if err := retryUntilDone(w.ctx, w.once.log, "store alert "+a.Fingerprint, func(ctx context.Context) error {
		var err error
		st.Key, st.Revision, err = w.store.Put(ctx, st.Record)
		return err
	}); err != nil || w.ctx.Err() != nil {
		return
	}
	switch {
	case a.Status == alert.Resolved:
		w.c.Resolved.Add(1)
	case a.SentAt.Equal(a.StartsAt):
		w.c.Fired.Add(1)
	default:
		w.c.Reminders.Add(1)
	}
	w.pub.Enqueue(w.ctx, st)
}

// seqRing holds the last sequences observed live, to tell a redelivery
// from a batch that was never observed.
type seqRing struct {
	seqs [seenSeqs]uint64
	next int
	n    int
}

// seenSeqs bounds the memory per host: at the probe's pace (a batch per
// kind every 200 ms) hundreds cover far more than ack_wait.
const seenSeqs = 256

func (r *seqRing) add(seq uint64) {
	r.seqs[r.next] = seq
	r.next = (r.next + 1) % seenSeqs
	r.n = min(r.n+1, seenSeqs)
}

// covers reports whether seq was observed, or is older than every
// sequence the ring still holds (too old to tell: taken as observed).
func (r *seqRing) covers(seq uint64) bool {
	oldest := uint64(0)
	for i := 0; i < r.n; i++ {
		s := r.seqs[i]
		if s == seq {
			return true
		}
		if i == 0 || s < oldest {
			oldest = s
		}
	}
	return r.n == seenSeqs && seq < oldest
}
