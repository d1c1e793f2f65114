package runner

import (
	"context"
	"fmt"
	"runtime/debug"
	"time"

	"github.com/netpulse/netpulse/lib/alert"
	"github.com/netpulse/netpulse/lib/eventpb"
	"github.com/netpulse/netpulse/lib/wire"
	"github.com/netpulse/netpulse/services/detector/detect"
	"github.com/netpulse/netpulse/services/detector/internal/alertout"
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

// worker owns one partition's hosts; everything here runs on its goroutine.
type worker struct {
	r     *Runner
	p     int
	in    chan delivery
	ctrl  chan control
	hosts map[string]*hostState
	batch eventpb.Batch // the live batch being handled
	old   eventpb.Batch // a replayed one
}

func (w *worker) send(c control) {
	select {
	case w.ctrl <- c:
	case <-w.r.ctx.Done():
	}
}

func (w *worker) run(ctx context.Context) {
	t := w.r.d.Clock.NewTicker(w.r.s.EvaluateInterval)
	defer t.Stop()
	defer func() { w.r.c.Hosts.Add(-int64(len(w.hosts))) }()
	for {
		select {
		case <-ctx.Done():
			return
		case c := <-w.ctrl:
			w.control(c)
		case d := <-w.in:
			w.handle(d)
		case now := <-t.C():
			w.evaluate(now)
		}
	}
}

func (w *worker) control(c control) {
	if c.evict {
		w.r.c.Hosts.Add(-int64(len(w.hosts)))
		clear(w.hosts)
		// Deliveries queued before the move are dropped by their epoch.
		return
	}
	if w.r.part[w.p].Load()&1 == 0 {
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
	r := w.r
	if d.state != r.part[w.p].Load() {
		return // the partition moved while this waited: its new owner gets it
	}
	if d.seq != 0 && d.seq < r.floor.Load() {
		// A backlog older than the warmup window (the group buffered it
		// while no replica ran): not news any more.
		r.c.Stale.Add(1)
		r.logOnce("skipping batches older than warmup (a backlog)", "subject", d.subject, "warmup", r.s.Warmup)
		_ = d.msg.Ack()
		return
	}
	b := &w.batch
	b.ResetVT()
	if reason := decode(b, d.data, d.host); reason != "" {
		r.deadLetter(d, reason)
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
		r.c.Duplicates.Add(1)
		_ = d.msg.Ack()
		return
	}
	r.c.Messages.Add(1)
	r.c.Events.Add(uint64(batchSize(b)))
	if perr := w.observe(h, detect.Input{Host: d.host, Kind: d.kind, Batch: b}); perr != "" {
		r.deadLetter(d, "detector panicked on this batch: "+perr)
		w.rebuild(d.host, h, d.seq) // without the batch that made it panic
		h.lastSeq = max(h.lastSeq, d.seq)
		h.seen.add(d.seq)
		return
	}
	if d.seq != 0 {
		h.lastSeq = max(h.lastSeq, d.seq)
		h.seen.add(d.seq)
	}
	h.lastEvent = r.d.Clock.Now()
	_ = d.msg.Ack()
}

// decode fills b from data and says what is wrong with it, if anything.
func decode(b *eventpb.Batch, data []byte, host string) string {
	if err := b.UnmarshalVT(data); err != nil {
		return fmt.Sprintf("undecodable batch: %v", err)
	}
	if b.SchemaVersion != eventpb.SchemaVersion {
		return fmt.Sprintf("schema_version %d, this detector reads %d", b.SchemaVersion, eventpb.SchemaVersion)
	}
	if b.Host != "" && b.Host != host {
		return fmt.Sprintf("batch of host %q on the subject of host %q", b.Host, host)
	}
	return ""
}

func batchSize(b *eventpb.Batch) int {
	n := len(b.Events) + len(b.Connections)
	if b.Snapshot != nil {
		n++
	}
	return n
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
	w.r.c.Panics.Add(1)
	msg := fmt.Sprint(p)
	w.r.logOnce("detector panicked; its instance for the host is rebuilt", "in", where, "host", host, "panic", msg, "stack", string(debug.Stack()))
	return msg
}

// newInstance calls Plugin.New, turning a panic into an error.
func (w *worker) newInstance(host string) (inst detect.Instance, err error) {
	defer func() {
		if p := recover(); p != nil {
			err = fmt.Errorf("panic: %s", w.panicked("New", host, p))
		}
	}()
	return w.r.s.Plugin.New(w.r.s.PluginConfig, host)
}

// takeover starts owning host: a new instance, the alerts that fire for it
// (from the store: not fired again), and its state rebuilt by replaying the
// latest snapshot and the warmup window below sequence before. It returns
// nil when the plugin cannot make an instance.
func (w *worker) takeover(host string, before uint64) *hostState {
	r := w.r
	inst, err := w.newInstance(host)
	if err != nil {
		r.logOnce("detector cannot make an instance; the host's events are skipped", "host", host, "err", err)
		return nil
	}
	r.c.Takeovers.Add(1)
	h := &hostState{
		host: host,
		inst: inst,
		tr: lifecycle.New(lifecycle.Settings{Detector: r.s.Plugin.Name, Host: host,
			For: r.s.For, RepeatInterval: r.s.RepeatInterval, Severity: r.s.Severity}),
		lastEvent: r.d.Clock.Now(),
	}
	var recs []alertout.Stored
	_ = retry(r.ctx, r.log, "load firing alerts of "+host, func(ctx context.Context) error {
		recs, err = r.store.Load(ctx, host)
		return err
	})
	for _, st := range recs {
		h.tr.Restore(st.Alert)
		if !st.Published {
			// Its owner stored it and may have died before publishing: send
			// it again under the same message ID (stored once).
			r.pub.Enqueue(r.ctx, st)
		}
	}
	w.replay(host, h, before)
	w.hosts[host] = h
	r.c.Hosts.Add(1)
	return h
}

// rebuild replaces a host's instance after a panic, replaying the window
// below sequence upTo.
func (w *worker) rebuild(host string, h *hostState, upTo uint64) {
	inst, err := w.newInstance(host)
	if err != nil {
		w.r.logOnce("detector cannot make an instance; the host's events are skipped", "host", host, "err", err)
		delete(w.hosts, host)
		w.r.c.Hosts.Add(-1)
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
	r := w.r
	kinds := r.s.Plugin.Kinds
	subjects := make([]string, len(kinds))
	var snap *history.Msg
	for i, k := range kinds {
		subjects[i] = wire.EventSubject(host, k)
		if k == wire.KindSnapshot {
			_ = retry(r.ctx, r.log, "read the latest snapshot of "+host, func(ctx context.Context) error {
				var err error
				snap, err = r.history.LastOf(ctx, subjects[i])
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
		if decode(b, m.Data, host) != "" {
			return // dead-lettered when it was live
		}
		_, kind, _ := splitSubject(m.Subject)
		if perr := w.observe(h, detect.Input{Host: host, Kind: kind, Batch: b, Replay: true}); perr != "" {
			broken = true
			if inst, err := w.newInstance(host); err == nil {
				h.inst = inst
			}
			return
		}
		r.c.Replayed.Add(1)
	}
	since := r.d.Clock.Now().Add(-r.s.Warmup)
	_ = retry(r.ctx, r.log, "replay "+host, func(ctx context.Context) error {
		first := true
		return r.history.Replay(ctx, subjects, since, before, func(m history.Msg) {
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
	r := w.r
	for host, h := range w.hosts {
		conds, perr := w.evaluateOne(h, now)
		r.c.Evaluations.Add(1)
		if perr != "" {
			w.rebuild(host, h, h.lastSeq+1)
			continue
		}
		alerts, dups := h.tr.Update(now, conds)
		if dups > 0 {
			r.logOnce("detector returned one condition twice; the first counts", "host", host)
		}
		for _, a := range alerts {
			w.emit(a)
		}
		if p, f := h.tr.Counts(); p == 0 && f == 0 && now.Sub(h.lastEvent) > r.s.IdleTimeout {
			delete(w.hosts, host)
			r.c.Hosts.Add(-1)
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
	r := w.r
	var st alertout.Stored
	st.Record = alertout.Record{Alert: a}
	if err := retry(r.ctx, r.log, "store alert "+a.Fingerprint, func(ctx context.Context) error {
		var err error
		st.Key, st.Revision, err = r.store.Put(ctx, st.Record)
		return err
	}); err != nil || r.ctx.Err() != nil {
		return
	}
	switch {
	case a.Status == alert.Resolved:
		r.c.Resolved.Add(1)
	case a.SentAt.Equal(a.StartsAt):
		r.c.Fired.Add(1)
	default:
		r.c.Reminders.Add(1)
	}
	r.pub.Enqueue(r.ctx, st)
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
