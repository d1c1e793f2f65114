// Package connleak is the conn_leak detector: a process that does not close
// sockets its peer has closed, so they pile up in CLOSE_WAIT.
//
// It keeps every CLOSE_WAIT socket of the host with the time it entered the
// state, from state-change events (ESTABLISHED -> CLOSE_WAIT adds one, a
// change out of CLOSE_WAIT removes it) and from snapshots: the latest
// snapshot replaces the view of the host, so sockets that predate the probe,
// a detector that starts late and events that were lost are all set right
// within one snapshot interval.
package connleak

import (
	"fmt"
	"net/netip"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/netpulse/netpulse/lib/eventpb"
	"github.com/netpulse/netpulse/lib/wire"
	"github.com/netpulse/netpulse/services/detector/detect"
	"github.com/netpulse/netpulse/services/detector/detectors/internal/baseline"
	"github.com/netpulse/netpulse/services/detector/detectors/internal/chsql"
	"github.com/netpulse/netpulse/services/detector/detectors/internal/counters"
	"github.com/netpulse/netpulse/services/detector/detectors/internal/endpoint"
)

// Name is the detector's name in config, subjects and alerts.
const Name = "conn_leak"

// maxClosed bounds the sockets remembered as recently out of CLOSE_WAIT.
const maxClosed = 1 << 16

func init() {
	detect.Register(detect.Plugin{
		Name:        Name,
		Description: "processes holding many CLOSE_WAIT sockets for long, or ever more of them",
		Kinds:       []string{wire.KindState, wire.KindSnapshot},
		Config:      func() any { return DefaultConfig() },
		New:         detect.Typed(New),
	})
}

// key is who leaks: the owning process and the local port. Client sockets
// have port 0 (their ephemeral ports would make one key per socket), as in
// the probe's snapshot groups.
type key struct {
	pid  uint32
	comm string
	port uint32
}

func (k key) less(o key) bool {
	if k.pid != o.pid {
		return k.pid < o.pid
	}
	if k.comm != o.comm {
		return k.comm < o.comm
	}
	return k.port < o.port
}

// mark is where an event sits in its probe run: the run (an interned
// probe_id), the event's seq and its time.
type mark struct {
	run uint32
	seq uint64
	t   int64
}

// snapMark is where a snapshot sits: its time and the seq of the last
// event its table had applied (Snapshot.events_seq).
type snapMark struct {
	run uint32
	seq uint64 // 0: a probe that does not say; then times decide
	t   int64
}

// after says whether event m happened after snapshot sn, i.e. the
// snapshot does not reflect it. Within one probe run the seqs say so
// exactly; times only approximately, as the probe applies an event some
// time after the kernel stamped it: an event stamped before the snapshot
// but read after it is in neither the snapshot nor, by time, after it.
func (m mark) after(sn snapMark) bool {
	if sn.seq != 0 && m.seq != 0 && m.run == sn.run {
		return m.seq > sn.seq
	}
	return m.t >= sn.t
}

// tuple is a socket's local and remote end.
type tuple struct{ local, peer netip.AddrPort }

// sock is one tracked CLOSE_WAIT socket.
type sock struct {
	id        uint64
	key       key
	st        *keyState // its key's state: no map lookup per socket in Evaluate
	entered   mark      // of the event that put it there; seq 0 from a snapshot
	since     int64     // entered CLOSE_WAIT, ns
	seen      int64     // event or snapshot time that last set it
	estimated bool      // predates the probe: since is a lower bound of the age
	server    bool
	local     netip.AddrPort
	peer      netip.AddrPort
	recvQ     uint32
}

// keyState is what outlives one evaluation for a key.
type keyState struct {
	// unlisted sockets are counted but not tracked: a snapshot's groups
	// counted more than its CLOSE_WAIT list held, or MaxSockets was reached.
	unlisted int
	// samples of the CLOSE_WAIT count for the growth rule, oldest first.
	samples []int
	active  bool
	server  bool
	view    agg // this evaluation's
}

// Instance is conn_leak for one host (detect.Instance).
type Instance struct {
	cfg    Config
	host   string
	socks  map[uint64]sock
	keys   map[key]*keyState
	closed map[uint64]mark // recently left CLOSE_WAIT: sock id -> the event
	listen map[uint32]bool // ports with a LISTEN socket, from the latest snapshot
	snap   snapMark        // the latest snapshot applied; t 0: none
	// unbound are the latest snapshot's sockets listed without a sock_id
	// (known to the probe from sock_diag only), by their 4-tuple: an event
	// for one of them names it by sock_id, and must not count it twice.
	unbound map[tuple]uint64
	runs    probeRuns
	growth  baseline.Cadence
	stats   Stats
}

// probeRuns numbers probe runs (probe_ids) in the order they appear. A
// number is never given twice, so a forgotten run's marks compare as
// another run's: by time.
type probeRuns struct {
	ids       map[string]uint32
	last      string
	lastRun   uint32
	next      uint32
	remembers int
}

func (r *probeRuns) of(id string) uint32 {
	if id == r.last && r.lastRun != 0 {
		return r.lastRun
	}
	n, ok := r.ids[id]
	if !ok {
		if len(r.ids) >= r.remembers {
			clear(r.ids)
		}
		r.next++
		n = r.next
		r.ids[id] = n
	}
	r.last, r.lastRun = id, n
	return n
}

// Stats are the detector's counters.
type Stats struct {
	Events, Snapshots uint64
	// StaleSnapshots were older than one already applied.
	StaleSnapshots uint64
	// SocketsCut were counted but not tracked (MaxSockets).
	SocketsCut uint64
	// Unattributed are CLOSE_WAIT sockets a cut snapshot counted without a
	// group to attribute them to.
	Unattributed uint64
	// BadEvents had no socket id.
	BadEvents uint64
}

// New makes the instance for host from a validated config.
func New(cfg Config, host string) *Instance {
	return &Instance{
		cfg: cfg, host: host,
		socks:   map[uint64]sock{},
		keys:    map[key]*keyState{},
		closed:  map[uint64]mark{},
		unbound: map[tuple]uint64{},
		listen:  map[uint32]bool{},
		runs:    probeRuns{ids: map[string]uint32{}, remembers: 16},
		growth:  baseline.NewCadence(int64(cfg.GrowthInterval)),
	}
}

// Stats returns the counters.
func (d *Instance) Stats() Stats { return d.stats }

// Counters are the counters by name; the framework adds them up across
// hosts into the stats line.
func (d *Instance) Counters() map[string]uint64 { return counters.Map(d.Stats()) }

var _ detect.Counting = (*Instance)(nil)

// Observe takes state changes and snapshots.
func (d *Instance) Observe(in detect.Input) {
	if in.Batch == nil {
		return
	}
	run := d.runs.of(in.Batch.ProbeId)
	for _, ev := range in.Batch.Events {
		if ev.Type != eventpb.EventType_EVENT_TYPE_STATE_CHANGE {
			continue
		}
		d.stats.Events++
		if ev.SockId == 0 {
			d.stats.BadEvents++
			continue
		}
		switch {
		case ev.NewState == eventpb.TcpState_TCP_STATE_CLOSE_WAIT:
			d.enter(ev, run)
		case ev.OldState == eventpb.TcpState_TCP_STATE_CLOSE_WAIT:
			d.leave(ev, run)
		default:
			// A tracked socket changing state missed its way out of
			// CLOSE_WAIT (a lost event): it is not there any more.
			if _, ok := d.socks[ev.SockId]; ok {
				delete(d.socks, ev.SockId)
			}
		}
	}
	if in.Batch.Snapshot != nil {
		d.apply(in.Batch.Snapshot, run)
	}
}

func (d *Instance) owner(pid uint32, comm string, src eventpb.OwnerSource) (uint32, string) {
	if src == eventpb.OwnerSource_OWNER_SOURCE_UNKNOWN {
		// pid and comm are whatever task the softirq interrupted: naming it
		// would blame an innocent process.
		return 0, "unknown"
	}
	return pid, comm
}

func (d *Instance) keyOf(pid uint32, comm string, src eventpb.OwnerSource, side eventpb.Side, sport, dport uint32) (key, bool) {
	pid, comm = d.owner(pid, comm, src)
	server := endpoint.IsServer(side, sport, dport, d.listening)
	k := key{pid: pid, comm: comm}
	if server {
		k.port = sport
	}
	return k, server
}

func (d *Instance) listening(port uint32) bool { return d.listen[port] }

func addrPort(b []byte, port uint32) netip.AddrPort {
	a, _ := endpoint.Addr(b)
	return netip.AddrPortFrom(a, uint16(port))
}

func (d *Instance) enter(ev *eventpb.Event, run uint32) {
	t := int64(ev.TimeUnixNano)
	id := ev.SockId
	m := mark{run: run, seq: ev.Seq, t: t}
	if d.snap.t != 0 && !m.after(d.snap) {
		// The snapshot taken after this event lists the socket if it is
		// still in CLOSE_WAIT: it knows better.
		return
	}
	if at, ok := d.closed[id]; ok && at.t >= t {
		return // its way out arrived first
	}
	local, peer := addrPort(ev.Saddr, ev.Sport), addrPort(ev.Daddr, ev.Dport)
	d.bind(tuple{local, peer})
	k, server := d.keyOf(ev.Pid, ev.Comm, ev.OwnerSource, ev.Side, ev.Sport, ev.Dport)
	st := d.state(k, server)
	if _, ok := d.socks[id]; !ok && len(d.socks) >= d.cfg.MaxSockets {
		d.stats.SocketsCut++
		st.unlisted++
		return
	}
	d.socks[id] = sock{
		id: id, key: k, st: st, entered: m, since: t, seen: t, server: server,
		local: local, peer: peer,
	}
}

// bind forgets the snapshot's sock_id-less listing of the socket at tp,
// which an event now names by its sock_id. The probe lists a socket
// without one when its resync read it from sock_diag before the probe had
// read its event from the ring buffer.
func (d *Instance) bind(tp tuple) {
	if len(d.unbound) == 0 {
		return
	}
	if id, ok := d.unbound[tp]; ok {
		delete(d.socks, id)
		delete(d.unbound, tp)
	}
}

func (d *Instance) leave(ev *eventpb.Event, run uint32) {
	t := int64(ev.TimeUnixNano)
	id := ev.SockId
	m := mark{run: run, seq: ev.Seq, t: t}
	if _, ok := d.socks[id]; ok {
		delete(d.socks, id)
	} else if tp := (tuple{addrPort(ev.Saddr, ev.Sport), addrPort(ev.Daddr, ev.Dport)}); d.unbound[tp] != 0 {
		d.bind(tp) // listed without its sock_id
	} else if d.snap.t != 0 && m.after(d.snap) {
		// A socket the latest snapshot counted without listing it.
		k, _ := d.keyOf(ev.Pid, ev.Comm, ev.OwnerSource, ev.Side, ev.Sport, ev.Dport)
		if st := d.keys[k]; st != nil && st.unlisted > 0 {
			st.unlisted--
		}
	}
	if len(d.closed) >= maxClosed {
		// Bounded: it only matters for a snapshot taken before the close
		// and delivered after it; without it such a snapshot brings the
		// socket back until the next one.
		clear(d.closed)
	}
	d.closed[id] = m
}

func (d *Instance) state(k key, server bool) *keyState {
	st := d.keys[k]
	if st == nil {
		st = &keyState{server: server}
		d.keys[k] = st
	}
	return st
}

// snapshotSockID identifies a listed socket. A socket older than the probe
// that has had no event since has no sock_id yet, only its kernel cookie:
// the top bit keeps those apart from sock_ids.
func snapshotSockID(ss *eventpb.SnapshotSocket) uint64 {
	if ss.SockId != 0 {
		return ss.SockId
	}
	return ss.Cookie | 1<<63
}

// apply makes snapshot sn the view of the host, keeping what events said
// after it was taken.
func (d *Instance) apply(sn *eventpb.Snapshot, run uint32) {
	d.stats.Snapshots++
	T := int64(sn.TimeUnixNano)
	if T <= d.snap.t {
		d.stats.StaleSnapshots++
		return
	}
	at := snapMark{run: run, seq: sn.EventsSeq, t: T}
	clear(d.listen)
	for _, g := range sn.Groups {
		if g.State == eventpb.TcpState_TCP_STATE_LISTEN {
			d.listen[g.LocalPort] = true
		}
	}
	socks := make(map[uint64]sock, len(sn.CloseWait)+8)
	for id, s := range d.socks {
		if s.entered.after(at) { // entered after the snapshot was taken (never: a listed one)
			socks[id] = s
		}
	}
	for _, st := range d.keys {
		st.unlisted = 0
	}
	clear(d.unbound)
	listed := map[key]int{}
	for _, ss := range sn.CloseWait {
		k, server := d.keyOf(ss.Pid, ss.Comm, ss.OwnerSource, ss.Side, ss.Sport, ss.Dport)
		listed[k]++ // the groups count it either way
		id := snapshotSockID(ss)
		if out, ok := d.closed[id]; ok && out.after(at) {
			continue // left CLOSE_WAIT after the snapshot; its event came first
		}
		st := d.state(k, server)
		if _, ok := socks[id]; !ok && len(socks) >= d.cfg.MaxSockets {
			d.stats.SocketsCut++
			st.unlisted++
			continue
		}
		s := sock{
			id: id, key: k, st: st, since: T - int64(ss.AgeUs)*1e3, seen: T, estimated: ss.AgeEstimated, server: server,
			local: addrPort(ss.Saddr, ss.Sport), peer: addrPort(ss.Daddr, ss.Dport), recvQ: ss.RecvQueue,
		}
		socks[id] = s
		if ss.SockId == 0 {
			d.unbound[tuple{s.local, s.peer}] = id
		}
	}
	if sn.CloseWaitCut > 0 {
		// The list was cut: the groups still count every socket. The unlisted
		// ones are younger than the youngest listed (oldest come first).
		budget := int(sn.CloseWaitCut)
		for _, g := range sn.Groups {
			if g.State != eventpb.TcpState_TCP_STATE_CLOSE_WAIT || budget == 0 {
				continue
			}
			pid, comm := d.owner(g.Pid, g.Comm, eventpb.OwnerSource_OWNER_SOURCE_SOCKET)
			k := key{pid: pid, comm: comm, port: g.LocalPort}
			extra := min(int(g.Count)-listed[k], budget)
			if extra > 0 {
				d.state(k, g.LocalPort != 0).unlisted += extra
				budget -= extra
			}
		}
		d.stats.Unattributed += uint64(budget)
	}
	d.socks = socks
	for id, out := range d.closed {
		if !out.after(at) {
			delete(d.closed, id)
		}
	}
	d.snap = at
}

// agg is one key's view at an evaluation.
type agg struct {
	count, old, estimated int
	oldest                []sock // the oldest, oldest first, at most Samples
	oldestSince           int64
}

func (a *agg) addSample(s sock, max int) {
	if n := len(a.oldest); n == max {
		if o := a.oldest[n-1]; o.since < s.since || o.since == s.since && o.id < s.id {
			return // younger than every kept one: the common case
		}
	}
	i := sort.Search(len(a.oldest), func(i int) bool {
		o := a.oldest[i]
		return o.since > s.since || o.since == s.since && o.id > s.id // ties by id: stable output
	})
	if i >= max {
		return
	}
	if len(a.oldest) < max {
		a.oldest = append(a.oldest, sock{})
	}
	copy(a.oldest[i+1:], a.oldest[i:])
	a.oldest[i] = s
}

// Evaluate returns one condition per leaking (pid, comm, local port).
func (d *Instance) Evaluate(now time.Time) []detect.Condition {
	n := now.UnixNano()
	for _, st := range d.keys {
		a := &st.view
		a.count, a.old, a.estimated, a.oldest = st.unlisted, 0, 0, a.oldest[:0]
	}
	minAge, keep := int64(d.cfg.MinAge), max(d.cfg.Samples, 1)
	for _, s := range d.socks {
		a := &s.st.view
		a.count++
		if n-s.since >= minAge {
			a.old++
		}
		if s.estimated {
			a.estimated++
		}
		a.addSample(s, keep)
	}
	if due := d.growth.Due(n); due && d.cfg.GrowthMin > 0 {
		for _, st := range d.keys {
			st.samples = append(st.samples, st.view.count)
			if len(st.samples) > d.cfg.GrowthIntervals+1 {
				st.samples = st.samples[1:]
			}
		}
	}
	var out []detect.Condition
	var fire []key
	for k, st := range d.keys {
		a := &st.view
		grows := d.grows(st, a.count)
		if st.active {
			st.active = a.old >= d.cfg.ResolveSockets || grows
		} else {
			st.active = a.old >= d.cfg.MinSockets || grows
		}
		switch {
		case st.active:
			fire = append(fire, k)
		case a.count == 0 && !hasGrowth(st.samples):
			delete(d.keys, k) // no socket points to it
		}
	}
	sort.Slice(fire, func(i, j int) bool { return fire[i].less(fire[j]) })
	for _, k := range fire {
		st := d.keys[k]
		out = append(out, d.condition(k, st, &st.view, now))
	}
	return out
}

// grows is the growth rule: GrowthIntervals+1 samples, each above the one
// before, GrowthMin more at the end than at the start, and no fewer sockets
// now than at the last sample.
func (d *Instance) grows(st *keyState, count int) bool {
	s := st.samples
	if d.cfg.GrowthMin == 0 || len(s) < d.cfg.GrowthIntervals+1 || count < s[len(s)-1] {
		return false
	}
	for i := 1; i < len(s); i++ {
		if s[i] <= s[i-1] {
			return false
		}
	}
	return s[len(s)-1]-s[0] >= d.cfg.GrowthMin
}

func hasGrowth(s []int) bool {
	for _, v := range s {
		if v != 0 {
			return true
		}
	}
	return false
}

// Sample is one CLOSE_WAIT socket in an alert's evidence.
type Sample struct {
	SockID       uint64 `json:"sock_id"`
	Local        string `json:"local"`
	Peer         string `json:"peer"`
	AgeSeconds   int64  `json:"age_seconds"`
	AgeEstimated bool   `json:"age_estimated,omitempty"`
	RecvQueue    uint32 `json:"recv_queue,omitempty"`
}

func (d *Instance) condition(k key, st *keyState, a *agg, now time.Time) detect.Condition {
	n := now.UnixNano()
	oldestAge := int64(0)
	if len(a.oldest) > 0 {
		oldestAge = (n - a.oldest[0].since) / 1e9
	}
	rule := "age"
	switch grows := d.grows(st, a.count); {
	case grows && a.old >= d.cfg.MinSockets:
		rule = "age+growth"
	case grows:
		rule = "growth"
	}
	var samples []Sample
	var peers []string
	for i, s := range a.oldest {
		if i < d.cfg.Samples {
			samples = append(samples, Sample{
				SockID: s.id, Local: s.local.String(), Peer: s.peer.String(),
				AgeSeconds: (n - s.since) / 1e9, AgeEstimated: s.estimated, RecvQueue: s.recvQ,
			})
		}
		if p := s.peer.String(); len(peers) < 3 && !contains(peers, p) {
			peers = append(peers, p)
		}
	}
	sev := detect.Warning
	if d.cfg.CriticalSockets > 0 && a.count >= d.cfg.CriticalSockets {
		sev = detect.Critical
	}
	port := strconv.FormatUint(uint64(k.port), 10)
	where := "port " + port
	if k.port == 0 {
		where = "outgoing connections"
	}
	c := detect.Condition{
		Labels: map[string]string{
			"pid": strconv.FormatUint(uint64(k.pid), 10), "comm": k.comm, "local_port": port,
		},
		Details: map[string]string{
			"count":              strconv.Itoa(a.count),
			"oldest_age_seconds": strconv.FormatInt(oldestAge, 10),
			"old_sockets":        strconv.Itoa(a.old),
			"peers":              strings.Join(peers, ","),
			"side":               endpoint.SideName(st.server),
			"rule":               rule,
		},
		Severity:  sev,
		Value:     float64(a.count),
		Threshold: float64(d.cfg.MinSockets),
		Summary: fmt.Sprintf("%s (pid %d) holds %d CLOSE_WAIT sockets on %s, %d older than %s, oldest %ds",
			k.comm, k.pid, a.count, where, a.old, d.cfg.MinAge, oldestAge),
		Description: "The peers closed these connections but the process never closed its end: " +
			"a socket leak (a missing close() on an error or EOF path, or a pool that keeps dead connections). " +
			"Each one holds a file descriptor and kernel memory until the process closes it or exits. " +
			fmt.Sprintf("Check with: ss -tnp state close-wait | grep 'pid=%d,'", k.pid),
		Evidence: map[string]any{
			"count":              a.count,
			"old_sockets":        a.old,
			"min_age_seconds":    d.cfg.MinAge.Seconds(),
			"tracked":            a.count - st.unlisted,
			"unlisted":           st.unlisted,
			"oldest_age_seconds": oldestAge,
			"estimated_ages":     a.estimated,
			"sockets":            samples,
			"growth_samples":     st.samples,
			"sockets_cut":        d.stats.SocketsCut,
			"events_sql":         d.eventsSQL(k, now, oldestAge),
		},
		SQL: d.snapshotSQL(k, now, oldestAge),
	}
	if d.snap.t != 0 {
		c.Evidence["snapshot_time"] = time.Unix(0, d.snap.t).UTC().Format(time.RFC3339)
	}
	return c
}

func contains(ss []string, s string) bool {
	for _, v := range ss {
		if v == s {
			return true
		}
	}
	return false
}

// span is the SQL time window: back to the oldest socket (and the growth
// samples), at least 5 minutes, at most a day.
func (d *Instance) span(oldestAge int64) time.Duration {
	s := time.Duration(oldestAge+60) * time.Second
	if g := d.cfg.GrowthInterval * time.Duration(d.cfg.GrowthIntervals+1); g > s {
		s = g
	}
	return min(max(s, 5*time.Minute), 24*time.Hour)
}

func (d *Instance) snapshotSQL(k key, now time.Time, oldestAge int64) string {
	return fmt.Sprintf("SELECT time, pid, comm, local_port, count, age\nFROM %s\nWHERE host = %s AND state = 'CLOSE_WAIT' AND pid = %d AND comm = %s AND local_port = %d\n  AND %s\nORDER BY time DESC, age DESC\nLIMIT 1000",
		chsql.Table("socket_snapshots"), chsql.Str(d.host), k.pid, chsql.Str(k.comm), k.port,
		chsql.Window(now.Add(-d.span(oldestAge)), now))
}

func (d *Instance) eventsSQL(k key, now time.Time, oldestAge int64) string {
	port := ""
	if k.port != 0 {
		port = fmt.Sprintf(" AND sport = %d", k.port)
	}
	return fmt.Sprintf("SELECT time, pid, comm, saddr, sport, daddr, dport, old_state, new_state, state_duration_us\nFROM %s\nWHERE host = %s AND type = 'state_change' AND (new_state = 'CLOSE_WAIT' OR old_state = 'CLOSE_WAIT')\n  AND pid = %d%s AND %s\nORDER BY time\nLIMIT 1000",
		chsql.Table("tcp_events"), chsql.Str(d.host), k.pid, port, chsql.Window(now.Add(-d.span(oldestAge)), now))
}
