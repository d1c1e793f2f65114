// Package connfailure is the conn_failure detector: connects to a remote
// endpoint that are refused, time out or find no route, and storms of
// resets on an endpoint. Of the framework it uses only package detect (the
// plugin interface), like any third-party detector would.
//
// Failed connects are CONNECT_FAILED events (SYN_SENT -> CLOSE, with the
// kernel's error); successful ones, for the failure ratio, are SYN_SENT ->
// ESTABLISHED state changes. Resets are RESET_SENT and RESET_RECEIVED
// events.
package connfailure

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
const Name = "conn_failure"

const (
	slots   = 6
	samples = 5
)

func init() {
	detect.Register(detect.Plugin{
		Name:        Name,
		Description: "refused, timed-out and unroutable connects per remote endpoint, and reset storms",
		Kinds:       []string{wire.KindError, wire.KindReset, wire.KindState},
		Config:      func() any { return DefaultConfig() },
		New:         detect.Typed(New),
	})
}

// Reasons a connect fails, and "reset" for reset storms.
type reason int

const (
	refused reason = iota
	timeout
	unreachable
	otherError
	nReasons
	reset = nReasons
)

var reasonNames = [...]string{"refused", "timeout", "unreachable", "error", "reset"}

// Linux errno values the probe reports.
const (
	errNetUnreach  = 101
	errTimedOut    = 110
	errConnRefused = 111
	errHostUnreach = 113
)

// classify maps a failed connect to its reason; ok is false for a connect
// the application abandoned too early to call it failed.
func (d *Instance) classify(errno int32, waitedUs uint64) (reason, bool) {
	switch errno {
	case errConnRefused:
		return refused, true
	case errTimedOut:
		return timeout, true
	case errHostUnreach, errNetUnreach:
		return unreachable, true
	case 0:
		return timeout, waitedUs >= uint64(d.cfg.MinAbortAge.Microseconds())
	}
	return otherError, true
}

// key is an endpoint: remote addr:port for this host's connects (and resets
// on them), or a local port for resets on connections this host accepted.
type key struct {
	server bool
	addr   netip.Addr
	port   uint32
}

func (k key) remote() string {
	if k.server {
		return endpoint.Listener(k.port)
	}
	return endpoint.HostPort(k.addr, k.port)
}

type slot struct {
	ok        uint32
	failed    [nReasons]uint32
	aborted   uint32
	resetSent uint32
	resetRecv uint32
}

type sample struct {
	t           int64
	typ         eventpb.EventType
	pid         uint32
	comm        string
	local, peer netip.AddrPort
	errno       int32
	waitedUs    uint64
	state       eventpb.TcpState
}

// Sample is one failure or reset in an alert's evidence.
type Sample struct {
	Time     time.Time `json:"time"`
	Type     string    `json:"type"`
	Pid      uint32    `json:"pid"`
	Comm     string    `json:"comm"`
	Local    string    `json:"local"`
	Remote   string    `json:"remote"`
	Errno    int32     `json:"errno,omitempty"`
	WaitedMs float64   `json:"waited_ms,omitempty"`
	State    string    `json:"state,omitempty"`
}

type keyState struct {
	ring     window.Ring[slot]
	resets   baseline.EWMA
	owners   top.Owners // of failures and resets, not of successes
	recent   []sample
	next     int
	resetHot bool
}

// Instance is conn_failure for one host (detect.Instance).
type Instance struct {
	cfg   Config
	host  string
	keys  *keys.Map[key, keyState]
	learn baseline.Cadence
	stats Stats
}

// Stats are the detector's counters.
type Stats struct {
	Failures, Aborted, Resets, Connects uint64
	// Late events were older than the window when they arrived.
	Late      uint64
	BadEvents uint64
	// Evicted endpoints made room for new ones (max_keys).
	Evicted uint64
}

// New makes the instance for host from a validated config.
func New(cfg Config, host string) *Instance {
	return &Instance{
		cfg: cfg, host: host,
		keys: keys.New[key, keyState](cfg.MaxKeys, func(st *keyState) {
			ring, recent := st.ring, st.recent[:0]
			ring.Clear()
			*st = keyState{ring: ring, recent: recent}
		}),
		learn: baseline.NewCadence(int64(cfg.Window)),
	}
}

// Stats returns the counters.
func (d *Instance) Stats() Stats {
	s := d.stats
	s.Evicted = d.keys.Evicted
	return s
}

// Counters are the counters by name; the framework adds them up across
// hosts into the stats line.
func (d *Instance) Counters() map[string]uint64 { return counters.Map(d.Stats()) }

var _ detect.Counting = (*Instance)(nil)

func (d *Instance) slot(k key, t int64) (*keyState, *slot) {
	st, added := d.keys.GetOrAdd(k, t)
	if added && st.ring.Width() == 0 {
		st.ring = window.New[slot](d.cfg.Window/slots, slots, nil)
	}
	s := st.ring.Slot(t)
	if s == nil {
		d.stats.Late++
	}
	return st, s
}

func remoteKey(ev *eventpb.Event) (key, bool) {
	a, ok := endpoint.Addr(ev.Daddr)
	return key{addr: a, port: ev.Dport}, ok
}

// Observe takes failed and successful connects and resets.
func (d *Instance) Observe(in detect.Input) {
	if in.Batch == nil {
		return
	}
	for _, ev := range in.Batch.Events {
		switch ev.Type {
		case eventpb.EventType_EVENT_TYPE_STATE_CHANGE:
			if ev.OldState != eventpb.TcpState_TCP_STATE_SYN_SENT || ev.NewState != eventpb.TcpState_TCP_STATE_ESTABLISHED {
				continue
			}
			d.stats.Connects++
			if k, ok := remoteKey(ev); ok {
				if _, s := d.slot(k, int64(ev.TimeUnixNano)); s != nil {
					s.ok++
				}
			}
		case eventpb.EventType_EVENT_TYPE_CONNECT_FAILED:
			d.failed(ev)
		case eventpb.EventType_EVENT_TYPE_RESET_SENT, eventpb.EventType_EVENT_TYPE_RESET_RECEIVED:
			d.reset(ev)
		}
	}
}

func (d *Instance) failed(ev *eventpb.Event) {
	k, ok := remoteKey(ev)
	if !ok {
		d.stats.BadEvents++
		return
	}
	st, s := d.slot(k, int64(ev.TimeUnixNano))
	if s == nil {
		return
	}
	r, counted := d.classify(ev.Error, ev.StateDurationUs)
	if !counted {
		d.stats.Aborted++
		s.aborted++
		return
	}
	d.stats.Failures++
	s.failed[r]++
	st.note(ev)
}

func (d *Instance) reset(ev *eventpb.Event) {
	d.stats.Resets++
	var k key
	if endpoint.IsServer(ev.Side, ev.Sport, ev.Dport, nil) {
		k = key{server: true, port: ev.Sport}
	} else {
		var ok bool
		if k, ok = remoteKey(ev); !ok {
			d.stats.BadEvents++
			return
		}
	}
	st, s := d.slot(k, int64(ev.TimeUnixNano))
	if s == nil {
		return
	}
	if ev.Type == eventpb.EventType_EVENT_TYPE_RESET_SENT {
		s.resetSent++
	} else {
		s.resetRecv++
	}
	st.note(ev)
}

func (st *keyState) note(ev *eventpb.Event) {
	pid, comm := top.Name(ev.Pid, ev.Comm, ev.OwnerSource)
	st.owners.Add(pid, comm)
	la, _ := endpoint.Addr(ev.Saddr)
	pa, _ := endpoint.Addr(ev.Daddr)
	s := sample{t: int64(ev.TimeUnixNano), typ: ev.Type, pid: pid, comm: comm,
		local: netip.AddrPortFrom(la, uint16(ev.Sport)), peer: netip.AddrPortFrom(pa, uint16(ev.Dport)),
		errno: ev.Error, waitedUs: ev.StateDurationUs, state: ev.NewState}
	if len(st.recent) < samples {
		st.recent = append(st.recent, s)
		return
	}
	st.recent[st.next] = s
	st.next = (st.next + 1) % samples
}

// view is one endpoint's window at an evaluation.
type view struct {
	ok, aborted, failures uint32
	failed                [nReasons]uint32
	resetSent, resetRecv  uint32
}

func (v view) attempts() uint32 { return v.ok + v.failures }
func (v view) resets() uint32   { return v.resetSent + v.resetRecv }

type found struct {
	k key
	r reason
	c detect.Condition
}

// Evaluate returns a condition per (endpoint, reason) that fails now.
func (d *Instance) Evaluate(now time.Time) []detect.Condition {
	n := now.UnixNano()
	learn := d.learn.Due(n)
	var all []found
	d.keys.Range(func(k key, st *keyState, used int64) bool {
		if n-used > int64(d.cfg.ForgetAfter) {
			d.keys.Delete(k)
			return true
		}
		if learn {
			st.owners.Decay()
		}
		var v view
		st.ring.Each(st.ring.Abs(n), func(_ int64, s *slot) {
			v.ok += s.ok
			v.aborted += s.aborted
			for r, c := range s.failed {
				v.failed[r] += c
				v.failures += c
			}
			v.resetSent += s.resetSent
			v.resetRecv += s.resetRecv
		})
		for r := range nReasons {
			c := v.failed[r]
			if c >= uint32(d.cfg.MinFailures) && float64(c) >= d.cfg.MinRatio*float64(v.attempts()) {
				all = append(all, found{k, r, d.failure(k, r, st, v, now)})
			}
		}
		ready := st.resets.Ready(d.cfg.BaselineWindows)
		hot := ready && v.resets() >= uint32(d.cfg.MinResets) &&
			float64(v.resets()) >= d.cfg.ResetFactor*st.resets.Value
		if learn && !hot && !st.resetHot {
			x := float64(v.resets())
			if ready { // a storm's first window must not teach it much
				x = min(x, d.cfg.ResetFactor*st.resets.Value)
			}
			st.resets.Add(x, d.cfg.BaselineAlpha, d.cfg.BaselineWindows)
		}
		st.resetHot = hot
		if hot {
			all = append(all, found{k, reset, d.storm(k, st, v, now)})
		}
		return true
	})
	sort.Slice(all, func(i, j int) bool {
		a, b := all[i], all[j]
		if a.k.server != b.k.server {
			return !a.k.server
		}
		if c := a.k.addr.Compare(b.k.addr); c != 0 {
			return c < 0
		}
		if a.k.port != b.k.port {
			return a.k.port < b.k.port
		}
		return a.r < b.r
	})
	out := make([]detect.Condition, len(all))
	for i, f := range all {
		out[i] = f.c
	}
	return out
}

func ratio(x float64) string { return strconv.FormatFloat(float64(int64(x*1e4+0.5))/1e4, 'f', -1, 64) }

func (d *Instance) owner(st *keyState, details map[string]string) {
	if m, ok := st.owners.Main(); ok {
		details["pid"], details["comm"] = strconv.FormatUint(uint64(m.Pid), 10), m.Comm
	}
}

func (d *Instance) samples(st *keyState, now time.Time, match func(sample) bool) []Sample {
	var l []Sample
	from := now.Add(-d.cfg.Window).UnixNano()
	for _, s := range st.recent {
		if s.t <= from || s.t > now.UnixNano() || !match(s) {
			continue
		}
		smp := Sample{Time: time.Unix(0, s.t).UTC(), Type: wire.EventTypes.Name(s.typ), Pid: s.pid, Comm: s.comm,
			Local: s.local.String(), Remote: s.peer.String(), Errno: s.errno}
		if s.typ == eventpb.EventType_EVENT_TYPE_CONNECT_FAILED {
			smp.WaitedMs = float64(s.waitedUs/10) / 100
		} else {
			smp.State = wire.States.Name(s.state)
		}
		l = append(l, smp)
	}
	sort.Slice(l, func(i, j int) bool { return l[i].Time.Before(l[j].Time) })
	return l
}

var explain = [...]string{
	refused:     "nothing listens on the port any more (the service is down, restarting or moved) or a firewall rejects it.",
	timeout:     "SYNs go unanswered: the host is down, a firewall drops them or the network path is broken. Connects closed by the application after waiting (connect timeouts) count here too.",
	unreachable: "there is no route to the host or network (ICMP unreachable): a routing or addressing problem.",
	otherError:  "the kernel reported another error on connect; see errno in the samples.",
}

func (d *Instance) failure(k key, r reason, st *keyState, v view, now time.Time) detect.Condition {
	c := v.failed[r]
	share := float64(c) / float64(max(v.attempts(), 1))
	sev := detect.Warning
	if d.cfg.CriticalRatio > 0 && share >= d.cfg.CriticalRatio {
		sev = detect.Critical
	}
	details := map[string]string{
		"failures": strconv.FormatUint(uint64(c), 10),
		"attempts": strconv.FormatUint(uint64(v.attempts()), 10),
		"ratio":    ratio(share),
	}
	d.owner(st, details)
	return detect.Condition{
		Labels:    map[string]string{"remote": k.remote(), "reason": reasonNames[r]},
		Details:   details,
		Severity:  sev,
		Value:     float64(c),
		Threshold: float64(d.cfg.MinFailures),
		Summary: fmt.Sprintf("%d of %d connects to %s %s in the last %s",
			c, v.attempts(), k.remote(), map[reason]string{refused: "were refused", timeout: "timed out",
				unreachable: "found no route", otherError: "failed"}[r], d.cfg.Window),
		Description: "Connects from this host fail: " + explain[r],
		Evidence: map[string]any{
			"failures":       c,
			"attempts":       v.attempts(),
			"successes":      v.ok,
			"ratio":          share,
			"by_reason":      reasonCounts(v),
			"aborted_early":  v.aborted,
			"window_seconds": d.cfg.Window.Seconds(),
			"processes":      st.owners.List(),
			"samples": d.samples(st, now, func(s sample) bool {
				if s.typ != eventpb.EventType_EVENT_TYPE_CONNECT_FAILED {
					return false
				}
				got, _ := d.classify(s.errno, s.waitedUs)
				return got == r
			}),
			"endpoints_evicted": d.keys.Evicted,
		},
		SQL: d.failureSQL(k, r, now),
	}
}

func reasonCounts(v view) map[string]uint32 {
	m := map[string]uint32{}
	for r, c := range v.failed {
		if c > 0 {
			m[reasonNames[r]] = c
		}
	}
	return m
}

func (d *Instance) storm(k key, st *keyState, v view, now time.Time) detect.Condition {
	c := v.resets()
	threshold := max(float64(d.cfg.MinResets), d.cfg.ResetFactor*st.resets.Value)
	details := map[string]string{
		"resets_sent":     strconv.FormatUint(uint64(v.resetSent), 10),
		"resets_received": strconv.FormatUint(uint64(v.resetRecv), 10),
		"baseline":        strconv.FormatFloat(float64(int64(st.resets.Value*10+0.5))/10, 'f', -1, 64),
	}
	d.owner(st, details)
	where := "on connections to " + k.remote()
	if k.server {
		where = "on connections into port " + strconv.FormatUint(uint64(k.port), 10)
	}
	return detect.Condition{
		Labels:    map[string]string{"remote": k.remote(), "reason": "reset"},
		Details:   details,
		Severity:  detect.Warning,
		Value:     float64(c),
		Threshold: float64(int64(threshold*10+0.5)) / 10,
		Summary: fmt.Sprintf("%d resets %s in the last %s (%d sent, %d received), usually %.0f",
			c, where, d.cfg.Window, v.resetSent, v.resetRecv, st.resets.Value),
		Description: "Connections are being reset far more than usual. Received resets: the peer aborts " +
			"(crashing or restarting, a load balancer or firewall cutting connections). Sent resets: this host " +
			"aborts (a process exiting with open connections, closing with unread data, connects to a closed port, a full accept queue).",
		Evidence: map[string]any{
			"resets":           c,
			"resets_sent":      v.resetSent,
			"resets_received":  v.resetRecv,
			"baseline":         st.resets.Value,
			"baseline_windows": st.resets.N,
			"window_seconds":   d.cfg.Window.Seconds(),
			"processes":        st.owners.List(),
			"samples": d.samples(st, now, func(s sample) bool {
				return s.typ != eventpb.EventType_EVENT_TYPE_CONNECT_FAILED
			}),
			"endpoints_evicted": d.keys.Evicted,
		},
		SQL: d.resetSQL(k, now),
	}
}

var errnos = [...]string{
	refused:     "error = 111",
	timeout:     "(error = 110 OR error = 0)",
	unreachable: "error IN (101, 113)",
	otherError:  "error NOT IN (0, 101, 110, 111, 113)",
}

func (d *Instance) failureSQL(k key, r reason, now time.Time) string {
	return fmt.Sprintf("SELECT time, pid, comm, saddr, sport, daddr, dport, error, state_duration_us\nFROM %s\nWHERE host = %s AND type = 'connect_failed' AND daddr = %s AND dport = %d AND %s\n  AND %s\nORDER BY time DESC\nLIMIT 100",
		chsql.Table("tcp_events"), chsql.Str(d.host), chsql.Str(endpoint.String(k.addr)), k.port, errnos[r],
		chsql.Window(now.Add(-d.cfg.Window), now))
}

func (d *Instance) resetSQL(k key, now time.Time) string {
	match := fmt.Sprintf("daddr = %s AND dport = %d", chsql.Str(endpoint.String(k.addr)), k.port)
	if k.server {
		match = fmt.Sprintf("sport = %d", k.port)
	}
	return fmt.Sprintf("SELECT time, type, pid, comm, saddr, sport, daddr, dport, new_state\nFROM %s\nWHERE host = %s AND type IN ('reset_sent', 'reset_received') AND %s\n  AND %s\nORDER BY time DESC\nLIMIT 100",
		chsql.Table("tcp_events"), chsql.Str(d.host), match, chsql.Window(now.Add(-d.cfg.Window), now))
}
