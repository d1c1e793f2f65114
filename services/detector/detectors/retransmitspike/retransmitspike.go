// Package retransmitspike is the retransmit_spike detector: retransmitted
// TCP segments per second far above what is normal, for the whole host and
// per remote address, with a minimum volume and hysteresis so that a busy
// but healthy host stays quiet and an incident is reported once.
//
// The rate counts the segments of RETRANSMIT events. The ratio
// (retransmitted / sent segments) comes from the probe's host counters in
// snapshots (host) and, per remote, from open connections (segs_out
// between two retransmits) or finished connections (their lifetime totals,
// counted when they close). Each key learns the baseline of its rate and of
// its ratio: either one far above its own makes a spike unusual, so loss on
// a familiar path, whose throughput falls as its ratio grows, fires even
// when the rate stays flat.
package retransmitspike

import (
	"fmt"
	"net/netip"
	"sort"
	"strconv"
	"time"

	"github.com/netpulse/netpulse/lib/eventpb"
	"github.com/netpulse/netpulse/lib/wire"
	"github.com/netpulse/netpulse/services/detector/detect"
	"github.com/netpulse/netpulse/services/detector/detectors/internal/baseline"
	"github.com/netpulse/netpulse/services/detector/detectors/internal/chsql"
	"github.com/netpulse/netpulse/services/detector/detectors/internal/counters"
	"github.com/netpulse/netpulse/services/detector/detectors/internal/endpoint"
	"github.com/netpulse/netpulse/services/detector/detectors/internal/keys"
	"github.com/netpulse/netpulse/services/detector/detectors/internal/top"
	"github.com/netpulse/netpulse/services/detector/detectors/internal/window"
)

// Name is the detector's name in config, subjects and alerts.
const Name = "retransmit_spike"

const (
	samples = 5
	// minRatioSegments: a ratio from fewer sent segments says nothing.
	minRatioSegments = 100
	topRemotes       = 5
)

func init() {
	detect.Register(detect.Plugin{
		Name:        Name,
		Description: "retransmitted TCP segments per second far above normal, per host and per remote",
		Kinds:       []string{wire.KindRetransmit, wire.KindConn, wire.KindSnapshot},
		Config:      func() any { return DefaultConfig() },
		New:         detect.Typed(New),
	})
}

type slot struct {
	segs        uint32 // retransmitted segments (events)
	events      uint32
	connRetrans uint64 // finished connections: their retransmits and sent segments
	connOut     uint64
	// Open connections: the segments a connection sent between two of its
	// retransmits (segs_out grew by liveOut) and the later one's segments.
	liveRetrans uint64
	liveOut     uint64
}

type sample struct {
	t           int64
	pid         uint32
	comm        string
	local, peer netip.AddrPort
	state       eventpb.TcpState
	segs        uint32
}

// Sample is one retransmit in an alert's evidence.
type Sample struct {
	Time     time.Time `json:"time"`
	Pid      uint32    `json:"pid"`
	Comm     string    `json:"comm"`
	Local    string    `json:"local"`
	Remote   string    `json:"remote"`
	State    string    `json:"state"`
	Segments uint32    `json:"segments"`
}

// keyState is the host's or one remote's.
type keyState struct {
	ring window.Ring[slot]
	base baseline.EWMA
	// ratioBase is the learned retransmit ratio, from the healthy windows
	// whose ratio was known.
	ratioBase baseline.EWMA
	owners    top.Owners
	recent    []sample
	next      int
	firing    bool
	hotSince  int64 // 0: not hot at the last evaluation
	coolFrom  int64 // 0: not cool at the last evaluation (while firing)
	bound     float64
	// Why it fired: the rate over its baseline (or before it was learned),
	// the ratio over its own; ratioBound is the ratio limit crossed.
	byRate, byRatio bool
	ratioBound      float64
	// epochs count retransmitted segments per window-long epoch of event
	// time: a cheap upper bound on the window's, so that an evaluation
	// passes over a key that cannot be hot (most remotes, most of the
	// time: those of finished connections that retransmit little).
	epochs [3]epoch
}

type epoch struct {
	n    int64 // event time / window
	segs uint64
}

// count adds segs retransmitted at event time t to its epoch.
func (st *keyState) count(t, window int64, segs uint32) {
	n := t / window
	old := 0
	for i := range st.epochs {
		if st.epochs[i].n == n {
			st.epochs[i].segs += uint64(segs)
			return
		}
		if st.epochs[i].n < st.epochs[old].n {
			old = i
		}
	}
	if n > st.epochs[old].n {
		st.epochs[old] = epoch{n: n, segs: uint64(segs)}
		return
	}
	// Older than every epoch kept: counted in the oldest, still an upper
	// bound of every window that holds it.
	st.epochs[old].segs += uint64(segs)
}

// segsSince is an upper bound of the segments retransmitted from event
// time t on.
func (st *keyState) segsSince(t, window int64) uint64 {
	var segs uint64
	for _, e := range st.epochs {
		if e.n >= t/window {
			segs += e.segs
		}
	}
	return segs
}

// hostCounters is the latest delta of the host's segment counters.
type hostCounters struct {
	at, prevAt      int64
	out, retrans    uint64 // at at
	dOut, dRetrans  uint64 // since prevAt
	events, dEvents uint64 // retransmitted segments of events: observed at at, since prevAt
	interval        int64
	have, haveDelta bool
}

// Instance is retransmit_spike for one host (detect.Instance).
type Instance struct {
	cfg     Config
	host    string
	all     keyState
	remotes *keys.Map[netip.Addr, keyState]
	// segsOut is each retransmitting connection's segs_out at its last
	// retransmit (by sock_id), forgotten when it closes.
	segsOut *keys.Map[uint64, uint32]
	snap    hostCounters
	// eventSegs counts the retransmitted segments of every event, to
	// compare with the host counters over the same snapshot interval.
	eventSegs uint64
	// watchedSince is the first evaluation: the host is watched from then.
	watchedSince int64
	learn        baseline.Cadence
	stats        Stats
}

// Stats are the detector's counters.
type Stats struct {
	Retransmits, Connections, Snapshots uint64
	// Late events were older than the window when they arrived.
	Late uint64
	// CounterResets: the host's counters went down (reboot).
	CounterResets uint64
	BadEvents     uint64
	// Evicted keys made room for new ones (max_remotes).
	Evicted uint64
	// SocketsEvicted: connections forgotten to make room (max_sockets).
	SocketsEvicted uint64
}

// New makes the instance for host from a validated config.
func New(cfg Config, host string) *Instance {
	d := &Instance{
		cfg: cfg, host: host,
		remotes: keys.New[netip.Addr, keyState](cfg.MaxRemotes, func(st *keyState) { st.reset() }),
		segsOut: keys.New[uint64, uint32](cfg.MaxSockets, nil),
		learn:   baseline.NewCadence(int64(cfg.Window)),
	}
	d.all.ring = d.newRing()
	return d
}

func (d *Instance) newRing() window.Ring[slot] {
	return window.New[slot](time.Second, int(d.cfg.Window/time.Second), nil)
}

// Stats returns the counters.
func (d *Instance) Stats() Stats {
	s := d.stats
	s.Evicted = d.remotes.Evicted
	s.SocketsEvicted = d.segsOut.Evicted
	return s
}

// Counters are the counters by name; the framework adds them up across
// hosts into the stats line.
func (d *Instance) Counters() map[string]uint64 { return counters.Map(d.Stats()) }

var _ detect.Counting = (*Instance)(nil)

func (d *Instance) remote(a netip.Addr, t int64) *keyState {
	st, added := d.remotes.GetOrAdd(a, t)
	if !added {
		return st
	}
	if st.ring.Width() == 0 {
		st.ring = d.newRing()
	}
	// A remote first seen after the host was watched for the learning
	// period (baseline_windows windows) had no retransmits and no finished
	// connections all that time: its usual rate is 0. (One seen earlier
	// learns its own, like the host.) Without this a long-lived connection
	// that starts losing packets, whose ratio stays unknown until it
	// closes, would have its loss learned as normal.
	if d.watchedSince != 0 && t-d.watchedSince >= int64(d.cfg.BaselineWindows)*int64(d.cfg.Window) {
		st.base.Assume(0, d.cfg.BaselineWindows)
	}
	return st
}

// reset clears an evicted remote's state for reuse, keeping its buffers.
func (st *keyState) reset() {
	ring, recent := st.ring, st.recent[:0]
	ring.Clear()
	*st = keyState{ring: ring, recent: recent}
}

// Observe takes retransmits, finished connections and snapshots.
func (d *Instance) Observe(in detect.Input) {
	if in.Batch == nil {
		return
	}
	for _, ev := range in.Batch.Events {
		if ev.Type == eventpb.EventType_EVENT_TYPE_RETRANSMIT {
			d.retransmit(ev)
		}
	}
	if d.cfg.PerRemote {
		for _, c := range in.Batch.Connections {
			d.stats.Connections++
			if c.Retransmits > 0 { // else it never had a retransmit remembered
				d.segsOut.Delete(c.SockId)
			}
			a, ok := endpoint.Addr(c.Daddr)
			if !ok {
				d.stats.BadEvents++
				continue
			}
			t := int64(c.TimeUnixNano)
			if s := d.remote(a, t).ring.Slot(t); s != nil {
				s.connRetrans += uint64(c.Retransmits)
				s.connOut += uint64(c.SegmentsOut)
			}
		}
	}
	if sn := in.Batch.Snapshot; sn != nil {
		d.snapshot(sn)
	}
}

func (d *Instance) retransmit(ev *eventpb.Event) {
	d.stats.Retransmits++
	t := int64(ev.TimeUnixNano)
	segs := max(ev.Segments, 1)
	d.eventSegs += uint64(segs)
	s := d.all.ring.Slot(t)
	if s == nil {
		d.stats.Late++
		return
	}
	s.segs += segs
	s.events++
	var liveOut uint64 // sent since this connection's previous retransmit
	if ev.SegsOut != 0 {
		prev, added := d.segsOut.GetOrAdd(ev.SockId, t)
		if !added && ev.SegsOut > *prev {
			liveOut = uint64(ev.SegsOut - *prev)
			s.liveRetrans += uint64(segs)
			s.liveOut += liveOut
		}
		*prev = ev.SegsOut
	}
	pid, comm := top.Name(ev.Pid, ev.Comm, ev.OwnerSource)
	d.all.owners.Add(pid, comm)
	smp := sample{t: t, pid: pid, comm: comm, state: ev.NewState, segs: segs}
	la, _ := endpoint.Addr(ev.Saddr)
	pa, ok := endpoint.Addr(ev.Daddr)
	smp.local, smp.peer = netip.AddrPortFrom(la, uint16(ev.Sport)), netip.AddrPortFrom(pa, uint16(ev.Dport))
	d.all.keep(smp)
	if !d.cfg.PerRemote {
		return
	}
	if !ok {
		d.stats.BadEvents++
		return
	}
	st := d.remote(pa, t)
	st.count(t, int64(d.cfg.Window), segs)
	if rs := st.ring.Slot(t); rs != nil {
		rs.segs += segs
		rs.events++
		if liveOut > 0 {
			rs.liveRetrans += uint64(segs)
			rs.liveOut += liveOut
		}
	}
	st.owners.Add(pid, comm)
	st.keep(smp)
}

func (st *keyState) keep(s sample) {
	if len(st.recent) < samples {
		st.recent = append(st.recent, s)
		return
	}
	st.recent[st.next] = s
	st.next = (st.next + 1) % samples
}

func (d *Instance) snapshot(sn *eventpb.Snapshot) {
	d.stats.Snapshots++
	t := int64(sn.TimeUnixNano)
	c := &d.snap
	if c.have && t <= c.at {
		return // older than what we have
	}
	if sn.TcpOutSegs == 0 && sn.TcpRetransSegs == 0 {
		return // a probe without counters
	}
	if c.have {
		if sn.TcpOutSegs < c.out || sn.TcpRetransSegs < c.retrans {
			d.stats.CounterResets++
			c.haveDelta = false
		} else {
			c.dOut, c.dRetrans, c.prevAt, c.haveDelta = sn.TcpOutSegs-c.out, sn.TcpRetransSegs-c.retrans, c.at, true
			c.dEvents = d.eventSegs - c.events
		}
	}
	c.at, c.out, c.retrans, c.events, c.have = t, sn.TcpOutSegs, sn.TcpRetransSegs, d.eventSegs, true
	c.interval = int64(sn.IntervalMs) * 1e6
}

// view is one key's window at an evaluation.
type view struct {
	rate, ratio  float64
	known        bool
	source       string
	events       uint32
	connOut      uint64
	liveOut      uint64  // segments sent between retransmits of open connections
	kernelRate   float64 // host: retransmits per second from the counters
	outRate      float64
	haveCounters bool
	otherNetns   bool // the events are mostly from other network namespaces
}

func (d *Instance) window(st *keyState, now int64, host bool) view {
	var v view
	var segs uint32
	var cr, co, lr, lo uint64
	st.ring.Each(st.ring.Abs(now)-1, func(_ int64, s *slot) {
		segs += s.segs
		v.events += s.events
		cr += s.connRetrans
		co += s.connOut
		lr += s.liveRetrans
		lo += s.liveOut
	})
	v.rate = float64(segs) / d.cfg.Window.Seconds()
	v.connOut, v.liveOut = co, lo
	v.source = "unknown"
	// The connections retransmitting now, while open: their segments sent
	// between retransmits. It speaks of the lossy connections only (not
	// of quiet ones to the same place), so it comes first when there is
	// enough of it: finished connections count whole lives, often long ago.
	live := lo >= minRatioSegments
	if host {
		c := d.snap
		// Counters are current when the latest snapshot is at most two
		// intervals old.
		if c.haveDelta && c.at > c.prevAt && (c.interval == 0 || now-c.at <= 2*c.interval+int64(time.Second)) {
			dt := float64(c.at-c.prevAt) / 1e9
			v.kernelRate, v.outRate, v.haveCounters = float64(c.dRetrans)/dt, float64(c.dOut)/dt, true
			// The counters are those of the probe's network namespace; the
			// events come from every namespace (containers). When the
			// events show far more retransmits than the counters, the
			// counters' ratio is not that of the traffic retransmitting.
			v.otherNetns = c.dEvents > 2*c.dRetrans+10
			if c.dOut >= minRatioSegments && !v.otherNetns {
				v.ratio, v.known, v.source = float64(c.dRetrans)/float64(c.dOut), true, "snapshot counters"
			}
		}
	}
	switch {
	case v.known: // the host's counters
	case live:
		v.ratio, v.known, v.source = float64(lr)/float64(lo), true, "open connections"
	case co >= minRatioSegments: // only remotes count finished connections
		v.ratio, v.known, v.source = float64(cr)/float64(co), true, "finished connections"
	}
	return v
}

// judge runs the key's state machine and reports whether it fires.
func (d *Instance) judge(st *keyState, v view, now int64, learn bool) bool {
	c := d.cfg
	ready := st.base.Ready(c.BaselineWindows)
	// The ratio's own baseline, learned from the windows whose ratio was
	// known: judged only where the ratio is known now.
	ratioReady := c.RatioFactor > 0 && v.known && st.ratioBase.Ready(c.BaselineWindows)
	bound := c.MinRate
	if ready {
		bound = max(bound, st.base.Value*c.BaselineFactor)
	}
	ratioBound := c.MinRatio
	if ratioReady {
		ratioBound = max(ratioBound, st.ratioBase.Value*c.RatioFactor)
	}
	volume := v.rate >= c.MinRate && (!v.known || v.ratio >= c.MinRatio)
	// Unusual: the rate over its baseline, or a known ratio over its own.
	// Before the rate's baseline is learned only a known ratio judges.
	rateUnusual := func(f float64) bool { return ready && v.rate >= st.base.Value*c.BaselineFactor*f }
	ratioUnusual := func(f float64) bool { return ratioReady && v.ratio >= st.ratioBase.Value*c.RatioFactor*f }
	unusual := v.known
	if ready {
		unusual = rateUnusual(1) || ratioUnusual(1)
	}
	hot := volume && unusual
	cool := v.rate < c.MinRate*c.ResolveFraction ||
		v.known && v.ratio < c.MinRatio*c.ResolveFraction ||
		ready && !rateUnusual(c.ResolveFraction) && !ratioUnusual(c.ResolveFraction)
	if learn && !hot && !st.firing && st.hotSince == 0 {
		// Clamped to the limit: the ratio lags (counters come every
		// snapshot interval), so the first window of a spike may look
		// healthy; clamping keeps it from moving the baseline much while a
		// real, lasting growth of traffic is still learned, step by step.
		x := v.rate
		if ready {
			x = min(x, st.base.Value*c.BaselineFactor)
		}
		st.base.Add(x, c.BaselineAlpha, c.BaselineWindows)
		if v.known {
			r := v.ratio
			if st.ratioBase.Ready(c.BaselineWindows) && c.RatioFactor > 0 {
				r = min(r, st.ratioBase.Value*c.RatioFactor)
			}
			st.ratioBase.Add(r, c.BaselineAlpha, c.BaselineWindows)
		}
	}
	if !st.firing {
		switch {
		case !hot:
			st.hotSince = 0
		case st.hotSince == 0:
			st.hotSince = now
		}
		if st.hotSince != 0 && now-st.hotSince >= int64(c.MinDuration) {
			st.firing, st.coolFrom, st.bound, st.ratioBound = true, 0, bound, 0
			st.byRate, st.byRatio = !ready || rateUnusual(1), ratioUnusual(1)
			if st.byRatio {
				st.ratioBound = ratioBound
			}
			if !st.byRate {
				// Fired on the ratio alone: the rate limit it crossed is
				// the minimum volume.
				st.bound = c.MinRate
			}
		}
	} else {
		switch {
		case !cool:
			st.coolFrom = 0
		case st.coolFrom == 0:
			st.coolFrom = now
		}
		if st.coolFrom != 0 && now-st.coolFrom >= int64(c.MinDuration) {
			st.firing, st.hotSince = false, 0
		}
	}
	return st.firing
}

// Evaluate returns the host's condition (remote "*") and one per remote
// address with a spike.
func (d *Instance) Evaluate(now time.Time) []detect.Condition {
	n := now.UnixNano()
	if d.watchedSince == 0 {
		d.watchedSince = n
	}
	learn := d.learn.Due(n)
	var out []detect.Condition
	hostView := d.window(&d.all, n, true)
	if learn {
		d.all.owners.Decay()
	}
	if d.judge(&d.all, hostView, n, learn) {
		out = append(out, d.condition("", &d.all, hostView, now))
	}
	type found struct {
		a netip.Addr
		c detect.Condition
	}
	var fired []found
	d.remotes.Range(func(a netip.Addr, st *keyState, used int64) bool {
		if n-used > int64(d.cfg.ForgetAfter) && !st.firing {
			d.remotes.Delete(a)
			return true
		}
		if learn {
			st.owners.Decay()
		} else if !st.firing && st.hotSince == 0 &&
			float64(st.segsSince(n-int64(d.cfg.Window)-int64(time.Second), int64(d.cfg.Window))) < d.cfg.MinRate*d.cfg.Window.Seconds() {
			// Its window (the whole seconds before now) cannot reach
			// min_rate: not hot, and nothing to learn between windows.
			// Judging it would change nothing.
			return true
		}
		v := d.window(st, n, false)
		if d.judge(st, v, n, learn) {
			fired = append(fired, found{a, d.condition(endpoint.String(a), st, v, now)})
		}
		return true
	})
	sort.Slice(fired, func(i, j int) bool { return fired[i].a.Less(fired[j].a) })
	for _, f := range fired {
		out = append(out, f.c)
	}
	return out
}

func round(x float64, digits int) float64 {
	s := strconv.FormatFloat(x, 'f', digits, 64)
	v, _ := strconv.ParseFloat(s, 64)
	return v
}

// RemoteRate is a remote's share in a host alert's evidence.
type RemoteRate struct {
	Remote string  `json:"remote"`
	PerSec float64 `json:"segments_per_s"`
}

// condition describes a firing key; remote is "" for the host.
func (d *Instance) condition(remote string, st *keyState, v view, now time.Time) detect.Condition {
	n := now.UnixNano()
	label := remote
	if remote == "" {
		label = "*"
	}
	ratio := "unknown"
	if v.known {
		ratio = strconv.FormatFloat(round(v.ratio, 4), 'f', -1, 64)
	}
	sev := detect.Warning
	if d.cfg.CriticalRatio > 0 && v.known && v.ratio >= d.cfg.CriticalRatio {
		sev = detect.Critical
	}
	details := map[string]string{"ratio": ratio}
	if st.base.N > 0 {
		details["baseline_per_s"] = strconv.FormatFloat(round(st.base.Value, 1), 'f', -1, 64)
	}
	if st.ratioBase.N > 0 {
		details["ratio_baseline"] = strconv.FormatFloat(round(st.ratioBase.Value, 5), 'f', -1, 64)
	}
	details["unusual"] = st.why()
	if m, ok := st.owners.Main(); ok {
		details["pid"], details["comm"] = strconv.FormatUint(uint64(m.Pid), 10), m.Comm
	}
	var recent []Sample
	for _, s := range st.recent {
		if s.t > n-int64(d.cfg.Window)-int64(d.cfg.MinDuration) && s.t <= n {
			recent = append(recent, Sample{Time: time.Unix(0, s.t).UTC(), Pid: s.pid, Comm: s.comm,
				Local: s.local.String(), Remote: s.peer.String(), State: wire.States.Name(s.state), Segments: s.segs})
		}
	}
	sort.Slice(recent, func(i, j int) bool { return recent[i].Time.Before(recent[j].Time) })
	ev := map[string]any{
		"segments_per_s":         round(v.rate, 1),
		"retransmits":            v.events,
		"ratio":                  round(v.ratio, 4),
		"ratio_known":            v.known,
		"ratio_source":           v.source,
		"baseline_per_s":         round(st.base.Value, 1),
		"baseline_windows":       st.base.N,
		"threshold_per_s":        round(st.bound, 1),
		"ratio_baseline":         round(st.ratioBase.Value, 5),
		"ratio_baseline_windows": st.ratioBase.N,
		"ratio_threshold":        round(st.ratioBound, 5),
		"unusual":                st.why(),
		"window_seconds":         d.cfg.Window.Seconds(),
		"processes":              st.owners.List(),
		"samples":                recent,
		"remotes_evicted":        d.remotes.Evicted,
	}
	what := "this host"
	if remote == "" {
		if v.haveCounters {
			ev["kernel_retrans_per_s"] = round(v.kernelRate, 1)
			ev["sent_segments_per_s"] = round(v.outRate, 1)
			ev["counters_cover_events"] = !v.otherNetns
		}
		ev["top_remotes"] = d.topRemotes(n)
	} else {
		what = "traffic with " + remote
		ev["finished_conn_segments"] = v.connOut
		ev["open_conn_segments"] = v.liveOut
	}
	ratioText := "ratio unknown"
	if v.known {
		ratioText = fmt.Sprintf("%.2f%% of sent segments", v.ratio*100)
		if st.ratioBase.N > 0 {
			ratioText += fmt.Sprintf(", usual %.2f%%", st.ratioBase.Value*100)
		}
	}
	return detect.Condition{
		Labels:    map[string]string{"remote": label},
		Details:   details,
		Severity:  sev,
		Value:     round(v.rate, 1),
		Threshold: round(st.bound, 1),
		Summary: fmt.Sprintf("%s retransmits %.0f segments/s (%s), usual %.0f/s",
			what, v.rate, ratioText, st.base.Value),
		Description: "Segments are being lost and sent again: packet loss or congestion on the path " +
			"(a saturated link, a dropping firewall or NIC, a flapping route), which stalls transfers. " +
			"The samples and the query show which connections and processes are affected.",
		Evidence: ev,
		SQL:      d.sql(remote, now),
	}
}

// why says what made the key unusual when it fired: "rate" (over its
// baseline, or a known ratio before the baseline was learned), "ratio"
// (over its own baseline), or "rate,ratio".
func (st *keyState) why() string {
	switch {
	case st.byRate && st.byRatio:
		return "rate,ratio"
	case st.byRatio:
		return "ratio"
	}
	return "rate"
}

// topRemotes are the remotes retransmitting most in the window.
func (d *Instance) topRemotes(n int64) []RemoteRate {
	var l []RemoteRate
	d.remotes.Range(func(a netip.Addr, st *keyState, _ int64) bool {
		var segs uint32
		st.ring.Each(st.ring.Abs(n)-1, func(_ int64, s *slot) { segs += s.segs })
		if segs > 0 {
			l = append(l, RemoteRate{Remote: endpoint.String(a), PerSec: round(float64(segs)/d.cfg.Window.Seconds(), 1)})
		}
		return true
	})
	sort.Slice(l, func(i, j int) bool {
		if l[i].PerSec != l[j].PerSec {
			return l[i].PerSec > l[j].PerSec
		}
		return l[i].Remote < l[j].Remote
	})
	return l[:min(len(l), topRemotes)]
}

func (d *Instance) sql(remote string, now time.Time) string {
	match := ""
	if remote != "" {
		match = " AND daddr = " + chsql.Str(remote)
	}
	from := now.Add(-d.cfg.Window - d.cfg.MinDuration)
	return fmt.Sprintf("SELECT daddr, dport, pid, comm, count() AS retransmits, sum(segments) AS segments\nFROM %s\nWHERE host = %s AND type = 'retransmit'%s\n  AND %s\nGROUP BY daddr, dport, pid, comm\nORDER BY segments DESC\nLIMIT 50",
		chsql.Table("tcp_events"), chsql.Str(d.host), match, chsql.Window(from, now))
}
