// Package portexhaustion is the port_exhaustion detector: a process that
// opens so many connections to one remote endpoint that the host runs out
// of local ports towards it. A connection is a 4-tuple: towards one remote
// address and port, from one local address, only the ephemeral range
// (net.ipv4.ip_local_port_range) varies, and each socket that is not yet
// gone holds a port — live ones, FIN_WAIT2 and, for 60 s after an active
// close, TIME_WAIT. Once they are all taken, connect() fails with
// EADDRNOTAVAIL.
//
// The ports in use come from the probe's snapshots (EndpointGroup: the
// sockets per local address and remote endpoint, with the entries into
// TIME_WAIT since the previous snapshot); the failures from CONNECT_FAILED
// events with EADDRNOTAVAIL. At a steady rate of new connections, TIME_WAIT
// fills up to rate × 60 s: that projection fires before connects fail.
package portexhaustion

import (
	"fmt"
	"math"
	"net/netip"
	"sort"
	"strconv"
	"time"

	"github.com/netpulse/netpulse/lib/eventpb"
	"github.com/netpulse/netpulse/lib/wire"
	"github.com/netpulse/netpulse/services/detector/detect"
	"github.com/netpulse/netpulse/services/detector/detectors/internal/chsql"
	"github.com/netpulse/netpulse/services/detector/detectors/internal/counters"
	"github.com/netpulse/netpulse/services/detector/detectors/internal/endpoint"
	"github.com/netpulse/netpulse/services/detector/detectors/internal/keys"
	"github.com/netpulse/netpulse/services/detector/detectors/internal/top"
	"github.com/netpulse/netpulse/services/detector/detectors/internal/window"
)

// Name is the detector's name in config, subjects and alerts.
const Name = "port_exhaustion"

const (
	// timeWaitLen is TCP_TIMEWAIT_LEN: how long an active closer's socket
	// holds its port (a constant of the kernel, not a setting).
	timeWaitLen = 60 * time.Second
	// reuseAge is how old a TIME_WAIT socket must be before tcp_tw_reuse
	// lets a connect take its port.
	reuseAge = time.Second
	// errAddrNotAvail is Linux's EADDRNOTAVAIL.
	errAddrNotAvail = 99
	slots           = 6
)

func init() {
	detect.Register(detect.Plugin{
		Name:        Name,
		Description: "local ports towards one remote endpoint running out (TIME_WAIT and live sockets), connects failing with EADDRNOTAVAIL",
		Kinds:       []string{wire.KindError, wire.KindSnapshot},
		Config:      func() any { return DefaultConfig() },
		New:         detect.Typed(New),
	})
}

// key is a remote endpoint.
type key struct {
	addr netip.Addr
	port uint32
}

func (k key) String() string { return endpoint.HostPort(k.addr, k.port) }

func (k key) less(o key) bool {
	if c := k.addr.Compare(o.addr); c != 0 {
		return c < 0
	}
	return k.port < o.port
}

// use is one endpoint's sockets in the latest snapshot, from the local
// address that holds the most ports towards it.
type use struct {
	local                              netip.Addr
	timeWait, finWait2, live, entered  uint32
	pid                                uint32
	comm                               string
	ports, projected                   float64 // in use now, and once TIME_WAIT fills at the current rate
	reusable                           bool    // tcp_tw_reuse applies
	newPerSecond                       float64
	timeWaitCounted, projectedTimeWait float64
}

// failures are one endpoint's connects that found no local port.
type failures struct {
	ring   window.Ring[uint32]
	owners top.Owners
	last   int64
	local  netip.Addr
}

// snapInfo is the latest snapshot's summary.
type snapInfo struct {
	at, prevAt int64
	interval   int64 // ns
	low, high  uint32
	twReuse    uint32
	read       bool
	cut        uint32
}

// Instance is port_exhaustion for one host (detect.Instance).
type Instance struct {
	cfg    Config
	host   string
	snap   snapInfo
	uses   map[key]*use
	spare  []*use
	hot    []key // endpoints of the latest snapshot at resolve_share or more
	fails  *keys.Map[key, failures]
	active map[key]bool
	seen   map[key]bool // one evaluation's candidates
	stats  Stats
}

// Stats are the detector's counters.
type Stats struct {
	Events, Failures, Snapshots uint64
	// StaleSnapshots were not newer than one already applied.
	StaleSnapshots uint64
	// FailuresEvicted: endpoints with failures dropped for max_remotes.
	FailuresEvicted uint64
}

// New makes the instance for host from a validated config.
func New(cfg Config, host string) *Instance {
	return &Instance{
		cfg: cfg, host: host,
		uses: map[key]*use{},
		fails: keys.New[key, failures](cfg.MaxRemotes, func(f *failures) {
			f.ring.Clear()
			f.owners, f.last, f.local = top.Owners{}, 0, netip.Addr{}
		}),
		active: map[key]bool{},
		seen:   map[key]bool{},
	}
}

// Stats returns the counters.
func (d *Instance) Stats() Stats {
	s := d.stats
	s.FailuresEvicted = d.fails.Evicted
	return s
}

// Counters are the counters by name (detect.Counting).
func (d *Instance) Counters() map[string]uint64 { return counters.Map(d.Stats()) }

var _ detect.Counting = (*Instance)(nil)

// Observe takes failed connects and snapshots.
func (d *Instance) Observe(in detect.Input) {
	if in.Batch == nil {
		return
	}
	for _, ev := range in.Batch.Events {
		d.stats.Events++
		if ev.Type == eventpb.EventType_EVENT_TYPE_CONNECT_FAILED && ev.Error == errAddrNotAvail {
			d.failed(ev)
		}
	}
	if s := in.Batch.Snapshot; s != nil {
		d.apply(s)
	}
}

func (d *Instance) failed(ev *eventpb.Event) {
	a, ok := endpoint.Addr(ev.Daddr)
	if !ok {
		return
	}
	d.stats.Failures++
	t := int64(ev.TimeUnixNano)
	f, added := d.fails.GetOrAdd(key{a, ev.Dport}, t)
	if added {
		f.ring = window.New[uint32](d.cfg.Window/slots, slots, nil)
	}
	if c := f.ring.Slot(t); c != nil {
		*c++
	}
	f.owners.Add(top.Name(ev.Pid, ev.Comm, ev.OwnerSource))
	f.last = max(f.last, t)
	if la, ok := endpoint.Addr(ev.Saddr); ok && !la.IsUnspecified() {
		f.local = la
	}
}

// apply makes the snapshot the view of the host's ports.
func (d *Instance) apply(s *eventpb.Snapshot) {
	t := int64(s.TimeUnixNano)
	if t <= d.snap.at {
		d.stats.StaleSnapshots++
		return
	}
	d.stats.Snapshots++
	interval := int64(s.IntervalMs) * int64(time.Millisecond)
	if d.snap.at != 0 && (interval == 0 || t-d.snap.at < 2*interval) {
		interval = t - d.snap.at // entries were counted since the previous one
	}
	d.snap = snapInfo{at: t, prevAt: d.snap.at, interval: interval, low: s.PortRangeLow, high: s.PortRangeHigh,
		twReuse: s.TwReuse, read: s.EndpointsRead, cut: s.EndpointsCut}
	for k, u := range d.uses {
		d.spare = append(d.spare, u)
		delete(d.uses, k)
	}
	for _, g := range s.Endpoints {
		if g.LocalPort != 0 {
			continue // accepted connections hold no ephemeral port of ours
		}
		a, ok := endpoint.Addr(g.Daddr)
		if !ok {
			continue
		}
		k := key{a, g.Dport}
		ports := uint64(g.TimeWait) + uint64(g.FinWait2) + uint64(g.Live)
		if u := d.uses[k]; u != nil && uint64(u.timeWait)+uint64(u.finWait2)+uint64(u.live) >= ports {
			continue // another local address holds more towards it
		}
		u := d.uses[k]
		if u == nil {
			if n := len(d.spare); n > 0 {
				u, d.spare = d.spare[n-1], d.spare[:n-1]
			} else {
				u = new(use)
			}
			d.uses[k] = u
		}
		local, _ := endpoint.Addr(g.Saddr)
		*u = use{local: local, timeWait: g.TimeWait, finWait2: g.FinWait2, live: g.Live, entered: g.TimeWaitEntered,
			pid: g.Pid, comm: g.Comm}
	}
	d.hot = d.hot[:0]
	size := d.rangeSize()
	for k, u := range d.uses {
		d.measure(k, u)
		if size > 0 && max(u.ports, u.projected) >= d.cfg.ResolveShare*size {
			d.hot = append(d.hot, k)
		}
	}
}

// rangeSize is the number of ephemeral ports, 0 when unknown.
func (d *Instance) rangeSize() float64 {
	if d.snap.low == 0 || d.snap.high < d.snap.low {
		return 0
	}
	return float64(d.snap.high-d.snap.low) + 1
}

// measure sets the ports u holds now and at the current rate of new
// connections once TIME_WAIT has filled. With tcp_tw_reuse (1, or 2 for
// loopback) a connect may take the port of a TIME_WAIT socket older than a
// second: only the youngest second of them blocks ports.
func (d *Instance) measure(k key, u *use) {
	u.reusable = d.snap.twReuse == 1 || (d.snap.twReuse == 2 && k.addr.IsLoopback())
	if d.snap.interval > 0 {
		u.newPerSecond = float64(u.entered) / (float64(d.snap.interval) / 1e9)
	}
	hold := timeWaitLen
	if u.reusable {
		hold = reuseAge
	}
	u.projectedTimeWait = u.newPerSecond * hold.Seconds()
	u.timeWaitCounted = float64(u.timeWait)
	if u.reusable {
		u.timeWaitCounted = min(u.timeWaitCounted, math.Ceil(u.projectedTimeWait))
	}
	other := float64(u.finWait2) + float64(u.live)
	u.ports = other + u.timeWaitCounted
	u.projected = other + u.projectedTimeWait
}

// fresh says whether the latest snapshot still describes the host at n: a
// probe that stopped publishing leaves no view, not an old one.
func (d *Instance) fresh(n int64) bool {
	if d.snap.at == 0 {
		return false
	}
	interval := max(d.snap.interval, int64(15*time.Second))
	return n-d.snap.at <= 3*interval
}

// Evaluate returns the endpoints running out of ports at now.
func (d *Instance) Evaluate(now time.Time) []detect.Condition {
	n := now.UnixNano()
	clear(d.seen)
	var cands []key
	add := func(k key) {
		if !d.seen[k] {
			d.seen[k] = true
			cands = append(cands, k)
		}
	}
	if d.fresh(n) {
		for _, k := range d.hot {
			add(k)
		}
	}
	d.fails.Range(func(k key, f *failures, _ int64) bool {
		if n-f.last > int64(d.cfg.Window) {
			d.fails.Delete(k)
			return true
		}
		add(k)
		return true
	})
	for k := range d.active {
		add(k)
	}
	sort.Slice(cands, func(i, j int) bool { return cands[i].less(cands[j]) })
	var out []detect.Condition
	for _, k := range cands {
		if c, ok := d.judge(k, n, now); ok {
			out = append(out, c)
			d.active[k] = true
		} else {
			delete(d.active, k)
		}
	}
	return out
}

// judge is endpoint k's condition at n, if it holds.
func (d *Instance) judge(k key, n int64, now time.Time) (detect.Condition, bool) {
	var failed uint32
	f := d.fails.Peek(k)
	if f != nil {
		f.ring.Each(f.ring.Abs(n), func(_ int64, c *uint32) { failed += *c })
	}
	size := d.rangeSize()
	var u *use
	if d.fresh(n) && size > 0 {
		u = d.uses[k]
	}
	var nowShare, projShare float64
	if u != nil {
		nowShare, projShare = u.ports/size, u.projected/size
	}
	minPorts := float64(d.cfg.MinPorts)
	byFailures := failed >= uint32(d.cfg.MinFailures)
	byShare := u != nil && u.ports >= minPorts && nowShare >= d.cfg.MinShare
	byTrend := u != nil && u.projected >= minPorts && projShare >= d.cfg.MinShare
	holds := d.active[k] && (failed > 0 || nowShare >= d.cfg.ResolveShare || projShare >= d.cfg.ResolveShare)
	if !byFailures && !byShare && !byTrend && !holds {
		return detect.Condition{}, false
	}
	rule := "share"
	switch {
	case byFailures || (holds && failed > 0 && !byShare && !byTrend):
		rule = "failures"
	case projShare > nowShare:
		rule = "trend"
	}
	sev := detect.Warning
	if failed > 0 || nowShare >= d.cfg.CriticalShare {
		sev = detect.Critical
	}
	value := math.Round(1000*max(nowShare, projShare)) / 10
	if failed > 0 {
		value = 100 // the kernel found no port free, whatever this namespace's snapshot saw
	}

	pid, comm := uint32(0), ""
	if f != nil {
		if o, ok := f.owners.Main(); ok {
			pid, comm = o.Pid, o.Comm
		}
	}
	if comm == "" && u != nil {
		pid, comm = u.pid, u.comm
	}
	local := netip.Addr{}
	if u != nil {
		local = u.local
	} else if f != nil {
		local = f.local
	}
	details := map[string]string{
		"rule":                 rule,
		"failures":             strconv.FormatUint(uint64(failed), 10),
		"pid":                  strconv.FormatUint(uint64(pid), 10),
		"comm":                 comm,
		"local_addr":           endpoint.String(local),
		"port_range":           fmt.Sprintf("%d-%d", d.snap.low, d.snap.high),
		"share":                pct(nowShare),
		"projected_share":      pct(projShare),
		"tw_reuse":             strconv.FormatUint(uint64(d.snap.twReuse), 10),
		"ports_in_use":         "0",
		"time_wait":            "0",
		"live":                 "0",
		"fin_wait2":            "0",
		"new_conns_per_second": "0",
	}
	evidence := map[string]any{
		"failures":         failed,
		"window_seconds":   d.cfg.Window.Seconds(),
		"port_range_low":   d.snap.low,
		"port_range_high":  d.snap.high,
		"tw_reuse":         d.snap.twReuse,
		"endpoints_cut":    d.snap.cut,
		"failures_evicted": d.fails.Evicted,
	}
	if f != nil {
		evidence["processes"] = f.owners.List()
	}
	if u != nil {
		details["ports_in_use"] = strconv.FormatFloat(u.ports, 'f', 0, 64)
		details["time_wait"] = strconv.FormatUint(uint64(u.timeWait), 10)
		details["live"] = strconv.FormatUint(uint64(u.live), 10)
		details["fin_wait2"] = strconv.FormatUint(uint64(u.finWait2), 10)
		details["new_conns_per_second"] = strconv.FormatFloat(math.Round(u.newPerSecond*10)/10, 'f', -1, 64)
		evidence["time_wait"], evidence["fin_wait2"], evidence["live"] = u.timeWait, u.finWait2, u.live
		evidence["ports_in_use"], evidence["projected_ports"] = u.ports, math.Round(u.projected)
		evidence["time_wait_entered"], evidence["snapshot_seconds"] = u.entered, float64(d.snap.interval)/1e9
		evidence["tw_reuse_applies"] = u.reusable
	}
	who := comm
	if pid != 0 {
		who = fmt.Sprintf("%s (pid %d)", comm, pid)
	}
	if who == "" {
		who = "an unknown process"
	}
	var summary string
	switch rule {
	case "failures":
		connects := "connects"
		if failed == 1 {
			connects = "connect"
		}
		summary = fmt.Sprintf("%d %s from %s to %s failed with EADDRNOTAVAIL in the last %s: no local port left",
			failed, connects, who, k, d.cfg.Window)
	case "trend":
		summary = fmt.Sprintf("%s opens %s connections/s to %s: at this rate TIME_WAIT holds %.0f local ports, %s%% of the ephemeral range %d-%d, within %s (%s%% now)",
			who, details["new_conns_per_second"], k, u.projected, pct(projShare), d.snap.low, d.snap.high, timeWaitLen, pct(nowShare))
	default:
		summary = fmt.Sprintf("%s holds %.0f local ports towards %s: %s%% of the ephemeral range %d-%d (%d in TIME_WAIT, %d live)",
			who, u.ports, k, pct(nowShare), d.snap.low, d.snap.high, u.timeWait, u.live)
	}
	return detect.Condition{
		Labels:    map[string]string{"remote": k.String()},
		Details:   details,
		Severity:  sev,
		Value:     value,
		Threshold: 100 * d.cfg.MinShare,
		Summary:   summary,
		Description: "Every connection to one remote address and port takes a local port from the ephemeral range " +
			"(net.ipv4.ip_local_port_range), and keeps it while live and, after this host closes it, for 60 s in TIME_WAIT. " +
			"A process that opens a new connection per request exhausts the range, and connect() fails with EADDRNOTAVAIL. " +
			"Reuse connections (keep-alive, a pool), or spread them over more local addresses or remote ports, or widen the range; " +
			"net.ipv4.tcp_tw_reuse=1 lets connects take TIME_WAIT ports older than a second. Check with: ss -tan dst " + k.String() + " | awk '{print $1}' | sort | uniq -c",
		Evidence: evidence,
		SQL:      d.sql(k, rule, now),
	}, true
}

func pct(x float64) string { return strconv.FormatFloat(math.Round(x*1000)/10, 'f', -1, 64) }

func (d *Instance) sql(k key, rule string, now time.Time) string {
	if rule == "failures" {
		return fmt.Sprintf("SELECT time, pid, comm, saddr, daddr, dport, error\nFROM %s\nWHERE host = %s AND type = 'connect_failed' AND error = %d AND daddr = %s AND dport = %d\n  AND %s\nORDER BY time DESC\nLIMIT 100",
			chsql.Table("tcp_events"), chsql.Str(d.host), errAddrNotAvail, chsql.Str(endpoint.String(k.addr)), k.port,
			chsql.Window(now.Add(-d.cfg.Window), now))
	}
	return fmt.Sprintf("SELECT time, saddr, time_wait, fin_wait2, live, count AS ports, time_wait_entered, pid, comm\nFROM %s\nWHERE host = %s AND row_kind = 'endpoint' AND local_port = 0 AND daddr = %s AND dport = %d\n  AND %s\nORDER BY time DESC, ports DESC\nLIMIT 100",
		chsql.Table("socket_snapshots"), chsql.Str(d.host), chsql.Str(endpoint.String(k.addr)), k.port,
		chsql.Window(now.Add(-10*time.Minute), now))
}
