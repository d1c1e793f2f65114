// Package slowhandshake is the slow_handshake detector: TCP handshakes to a
// remote endpoint (client side) or into a local listener (server side) that
// take too long, against an absolute ceiling and against what is normal for
// that endpoint.
//
// A handshake is a state change to ESTABLISHED with handshake_us set: the
// client's SYN_SENT -> ESTABLISHED, the server's first SYN-ACK ->
// ESTABLISHED. Each endpoint keeps a histogram per sixth of the window;
// SYN and SYN-ACK retransmits are counted alongside as evidence.
package slowhandshake

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
const Name = "slow_handshake"

// slots per window: the window slides by a sixth.
const slots = 6

// samples is how many recent slow handshakes an endpoint keeps as evidence.
const samples = 5

func init() {
	detect.Register(detect.Plugin{
		Name:        Name,
		Description: "TCP handshakes to a remote endpoint or into a listener slower than a ceiling or than usual",
		Kinds:       []string{wire.KindState, wire.KindRetransmit},
		Config:      func() any { return DefaultConfig() },
		New:         detect.Typed(New),
	})
}

// key is an endpoint: the remote addr:port of a client socket, or the local
// listening port of a server socket (addr left zero).
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
	n       uint32 // handshakes
	retrans uint32 // SYN (client) or SYN-ACK (server) retransmits they reported
	retried uint32 // handshakes with at least one retransmit
	synack  uint32 // SYNACK_RETRANSMIT events (server side)
	maxUs   uint64
	h       *hist
}

// Sample is one slow handshake in an alert's evidence.
type Sample struct {
	Time        time.Time `json:"time"`
	Pid         uint32    `json:"pid"`
	Comm        string    `json:"comm"`
	Local       string    `json:"local"`
	Remote      string    `json:"remote"`
	HandshakeMs float64   `json:"handshake_ms"`
	Retransmits uint32    `json:"retransmits"`
}

type sample struct {
	t           int64
	pid         uint32
	comm        string
	local, peer netip.AddrPort
	us          uint64
	retrans     uint32
}

type keyState struct {
	ring   window.Ring[slot]
	base   baseline.EWMA
	owners top.Owners
	slow   []sample // recent slow handshakes, ring
	next   int
	hot    bool
}

// Instance is slow_handshake for one host (detect.Instance).
type Instance struct {
	cfg   Config
	host  string
	keys  *keys.Map[key, keyState]
	pool  []*hist
	learn baseline.Cadence
	sum   hist // scratch of Evaluate
	stats Stats
}

// Stats are the detector's counters.
type Stats struct {
	Handshakes, SynAckRetransmits uint64
	// Late handshakes were older than the window when they arrived.
	Late uint64
	// BadEvents had an address of the wrong length.
	BadEvents uint64
	// Evicted endpoints made room for new ones (max_keys).
	Evicted uint64
}

// New makes the instance for host from a validated config.
func New(cfg Config, host string) *Instance {
	d := &Instance{
		cfg: cfg, host: host,
		learn: baseline.NewCadence(int64(cfg.Window)),
	}
	// An evicted endpoint's histograms go back to the pool, its ring and
	// sample buffer to the endpoint that replaces it.
	d.keys = keys.New[key, keyState](cfg.MaxKeys, func(st *keyState) {
		ring, slow := st.ring, st.slow[:0]
		ring.Clear()
		*st = keyState{ring: ring, slow: slow}
	})
	return d
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

func (d *Instance) slotWidth() time.Duration { return d.cfg.Window / slots }

func (d *Instance) resetSlot(s *slot) {
	if s.h != nil {
		*s.h = hist{}
		d.pool = append(d.pool, s.h)
	}
	*s = slot{}
}

func (d *Instance) state(k key, t int64) *keyState {
	st, added := d.keys.GetOrAdd(k, t)
	if added && st.ring.Width() == 0 {
		st.ring = window.New(d.slotWidth(), slots, d.resetSlot)
	}
	return st
}

// Observe takes handshakes (state changes to ESTABLISHED) and SYN-ACK
// retransmits.
func (d *Instance) Observe(in detect.Input) {
	if in.Batch == nil {
		return
	}
	for _, ev := range in.Batch.Events {
		switch {
		case ev.Type == eventpb.EventType_EVENT_TYPE_STATE_CHANGE &&
			ev.NewState == eventpb.TcpState_TCP_STATE_ESTABLISHED && ev.HandshakeUs > 0:
			d.handshake(ev)
		case ev.Type == eventpb.EventType_EVENT_TYPE_SYNACK_RETRANSMIT:
			d.stats.SynAckRetransmits++
			t := int64(ev.TimeUnixNano)
			if s := d.state(key{server: true, port: ev.Sport}, t).ring.Slot(t); s != nil {
				s.synack++
			}
		}
	}
}

func (d *Instance) handshake(ev *eventpb.Event) {
	d.stats.Handshakes++
	server := ev.Side == eventpb.Side_SIDE_SERVER ||
		ev.Side == eventpb.Side_SIDE_UNSPECIFIED && ev.OldState != eventpb.TcpState_TCP_STATE_SYN_SENT
	k := key{server: server, port: ev.Sport}
	if !server {
		a, ok := endpoint.Addr(ev.Daddr)
		if !ok {
			d.stats.BadEvents++
			return
		}
		k.addr, k.port = a, ev.Dport
	}
	t := int64(ev.TimeUnixNano)
	st := d.state(k, t)
	s := st.ring.Slot(t)
	if s == nil {
		d.stats.Late++
		return
	}
	if s.h == nil {
		if n := len(d.pool); n > 0 {
			s.h, d.pool = d.pool[n-1], d.pool[:n-1]
		} else {
			s.h = new(hist)
		}
	}
	us := ev.HandshakeUs
	s.n++
	s.h[bin(us)]++
	s.maxUs = max(s.maxUs, us)
	s.retrans += ev.HandshakeRetransmits
	if ev.HandshakeRetransmits > 0 {
		s.retried++
	}
	st.owners.Add(top.Name(ev.Pid, ev.Comm, ev.OwnerSource))
	if float64(us) >= d.slowAt(st) {
		st.keep(ev, us, d)
	}
}

// slowAt is the lowest threshold a handshake of st can cross, in µs.
func (d *Instance) slowAt(st *keyState) float64 {
	x := float64(d.cfg.Ceiling.Microseconds())
	if st.base.Ready(d.cfg.BaselineWindows) {
		x = min(x, d.bound(st))
	}
	return x
}

// bound is the learned limit in µs.
func (d *Instance) bound(st *keyState) float64 {
	return st.base.Value*d.cfg.BaselineFactor + float64(d.cfg.BaselineMargin.Microseconds())
}

func (st *keyState) keep(ev *eventpb.Event, us uint64, d *Instance) {
	la, _ := endpoint.Addr(ev.Saddr)
	pa, _ := endpoint.Addr(ev.Daddr)
	pid, comm := top.Name(ev.Pid, ev.Comm, ev.OwnerSource)
	s := sample{t: int64(ev.TimeUnixNano), pid: pid, comm: comm,
		local: netip.AddrPortFrom(la, uint16(ev.Sport)), peer: netip.AddrPortFrom(pa, uint16(ev.Dport)),
		us: us, retrans: ev.HandshakeRetransmits}
	if len(st.slow) < samples {
		st.slow = append(st.slow, s)
		return
	}
	st.slow[st.next] = s
	st.next = (st.next + 1) % samples
}

// view is one endpoint's window at an evaluation.
type view struct {
	n, retrans, retried, synack uint32
	maxUs                       uint64
}

// Evaluate returns one condition per endpoint whose handshakes are slow now.
func (d *Instance) Evaluate(now time.Time) []detect.Condition {
	n := now.UnixNano()
	learn := d.learn.Due(n)
	type found struct {
		k key
		c detect.Condition
	}
	var hot []found
	d.keys.Range(func(k key, st *keyState, used int64) bool {
		if n-used > int64(d.cfg.ForgetAfter) {
			d.forget(k, st)
			return true
		}
		if learn {
			st.owners.Decay()
		}
		var v view
		d.sum = hist{}
		st.ring.Each(st.ring.Abs(n), func(_ int64, s *slot) {
			v.n += s.n
			v.retrans += s.retrans
			v.retried += s.retried
			v.synack += s.synack
			v.maxUs = max(v.maxUs, s.maxUs)
			if s.h != nil {
				d.sum.add(s.h)
			}
		})
		if v.n < uint32(d.cfg.MinHandshakes) {
			st.hot = false
			return true
		}
		// The interpolated quantile never exceeds what was seen.
		q := min(d.sum.quantile(d.cfg.Quantile, v.n), float64(v.maxUs))
		ceiling := float64(d.cfg.Ceiling.Microseconds())
		ready := st.base.Ready(d.cfg.BaselineWindows)
		over := func(x float64) bool { return q > x && d.sum.above(x) >= float64(d.cfg.MinSlow) }
		isHot := over(ceiling) || ready && over(d.bound(st))
		// Learn only from healthy windows: not hot now nor at the last
		// evaluation, and under every limit (a window whose quantile is one
		// lost SYN is not hot, but not normal either).
		if learn && !isHot && !st.hot && q <= ceiling && (!ready || q <= d.bound(st)) {
			st.base.Add(q, d.cfg.BaselineAlpha, d.cfg.BaselineWindows)
		}
		st.hot = isHot
		if isHot {
			hot = append(hot, found{k, d.condition(k, st, v, q, now)})
		}
		return true
	})
	sort.Slice(hot, func(i, j int) bool {
		a, b := hot[i].k, hot[j].k
		if a.server != b.server {
			return !a.server
		}
		if c := a.addr.Compare(b.addr); c != 0 {
			return c < 0
		}
		return a.port < b.port
	})
	out := make([]detect.Condition, len(hot))
	for i, f := range hot {
		out[i] = f.c
	}
	return out
}

func (d *Instance) forget(k key, st *keyState) {
	st.ring.Clear() // its histograms go back to the pool
	d.keys.Delete(k)
}

func ms(us float64) float64 { return float64(int64(us/10+0.5)) / 100 } // µs -> ms, 2 decimals

func msString(us float64) string { return strconv.FormatFloat(ms(us), 'f', -1, 64) }

// condition describes endpoint k whose window v (histogram in d.sum) has
// quantile q over a limit.
func (d *Instance) condition(k key, st *keyState, v view, q float64, now time.Time) detect.Condition {
	ceiling := float64(d.cfg.Ceiling.Microseconds())
	ready := st.base.Ready(d.cfg.BaselineWindows)
	rule, threshold := "ceiling", ceiling
	if !(q > ceiling && d.sum.above(ceiling) >= float64(d.cfg.MinSlow)) {
		rule, threshold = "baseline", d.bound(st)
	}
	main, _ := st.owners.Main()
	sev := detect.Warning
	if d.cfg.Critical > 0 && q >= float64(d.cfg.Critical.Microseconds()) {
		sev = detect.Critical
	}
	side := endpoint.SideName(k.server)
	labels := map[string]string{"side": side, "remote": k.remote()}
	if k.server {
		labels["local_port"] = strconv.FormatUint(uint64(k.port), 10)
	}
	qname := "p" + strconv.FormatFloat(d.cfg.Quantile*100, 'f', -1, 64)
	details := map[string]string{
		"pid":         strconv.FormatUint(uint64(main.Pid), 10),
		"comm":        main.Comm,
		qname + "_ms": msString(q),
		"handshakes":  strconv.FormatUint(uint64(v.n), 10),
		"rule":        rule,
		"retransmits": strconv.FormatUint(uint64(v.retrans+v.synack), 10),
	}
	baseMs := 0.0
	if ready {
		baseMs = ms(st.base.Value)
		details["baseline_ms"] = msString(st.base.Value)
	}
	var slow []Sample
	from := now.Add(-d.cfg.Window).UnixNano()
	for _, s := range st.slow {
		if s.t > from && s.t <= now.UnixNano() {
			slow = append(slow, Sample{Time: time.Unix(0, s.t).UTC(), Pid: s.pid, Comm: s.comm,
				Local: s.local.String(), Remote: s.peer.String(), HandshakeMs: ms(float64(s.us)), Retransmits: s.retrans})
		}
	}
	sort.Slice(slow, func(i, j int) bool { return slow[i].Time.Before(slow[j].Time) })
	what := "to " + k.remote()
	if k.server {
		what = "into port " + labels["local_port"]
	}
	limit := fmt.Sprintf("the ceiling of %s", d.cfg.Ceiling)
	if rule == "baseline" {
		limit = fmt.Sprintf("%s × its usual %sms + %s", strconv.FormatFloat(d.cfg.BaselineFactor, 'f', -1, 64),
			msString(st.base.Value), d.cfg.BaselineMargin)
	}
	return detect.Condition{
		Labels:    labels,
		Details:   details,
		Severity:  sev,
		Value:     ms(q),
		Threshold: ms(threshold),
		Summary: fmt.Sprintf("%s handshakes %s take %sms (%s of %d in %s), over %s",
			side, what, msString(q), qname, v.n, d.cfg.Window, limit),
		Description: "TCP handshakes are slow: " + describe(k.server, v) +
			" Handshake times near 1 s, 3 s, 7 s mean lost SYNs or SYN-ACKs (retransmitted after the kernel's 1 s initial timeout); " +
			"steady slowness means a slow network path or an overloaded peer (full accept queue).",
		Evidence: map[string]any{
			"handshakes":            v.n,
			"slow":                  int(d.sum.above(threshold) + 0.5),
			"quantile":              d.cfg.Quantile,
			"p50_ms":                ms(d.sum.quantile(0.5, v.n)),
			"p90_ms":                ms(d.sum.quantile(0.9, v.n)),
			qname + "_ms":           ms(q),
			"max_ms":                ms(float64(v.maxUs)),
			"ceiling_ms":            ms(ceiling),
			"baseline_ms":           baseMs,
			"baseline_windows":      st.base.N,
			"retried_handshakes":    v.retried,
			"handshake_retransmits": v.retrans,
			"synack_retransmits":    v.synack,
			"processes":             st.owners.List(),
			"samples":               slow,
			"endpoints_evicted":     d.keys.Evicted,
		},
		SQL: d.sql(k, now),
	}
}

func describe(server bool, v view) string {
	if server {
		return fmt.Sprintf("clients connecting to this port wait for the handshake to complete; %d SYN-ACK retransmits in the window (%d handshakes needed one).",
			v.synack+v.retrans, v.retried)
	}
	return fmt.Sprintf("this host's connects to the remote wait for its SYN-ACK; %d SYNs were retransmitted in the window (%d handshakes needed one).",
		v.retrans, v.retried)
}

func (d *Instance) sql(k key, now time.Time) string {
	match := fmt.Sprintf("side = 'client' AND daddr = %s AND dport = %d", chsql.Str(endpoint.String(k.addr)), k.port)
	if k.server {
		match = fmt.Sprintf("side = 'server' AND sport = %d", k.port)
	}
	return fmt.Sprintf("SELECT time, pid, comm, saddr, sport, daddr, dport, handshake_us / 1000 AS handshake_ms, handshake_retransmits\nFROM %s\nWHERE host = %s AND type = 'state_change' AND new_state = 'ESTABLISHED' AND %s\n  AND %s\nORDER BY handshake_us DESC\nLIMIT 100",
		chsql.Table("tcp_events"), chsql.Str(d.host), match, chsql.Window(now.Add(-d.cfg.Window), now))
}
