package connleak

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/netpulse/netpulse/lib/eventpb"
	"github.com/netpulse/netpulse/lib/wire"
	"github.com/netpulse/netpulse/services/detector/detect"
	"github.com/netpulse/netpulse/services/detector/detectors/internal/dtest"
)

var kinds = []string{wire.KindState, wire.KindSnapshot}

func newInstance(t testing.TB, edit func(*Config)) *Instance {
	t.Helper()
	return dtest.New[Config, *Instance](t, Name, edit)
}

// api is the leaking server's i-th accepted socket.
func api(i int) dtest.Sock {
	return dtest.Sock{ID: 1<<40 + uint64(i), Pid: 4242, Comm: "api", Local: "10.0.0.10:8080",
		Peer: fmt.Sprintf("10.9.1.%d:%d", 1+i%200, 40000+i%20000), Side: eventpb.Side_SIDE_SERVER}
}

// A server leaks 15 sockets (one per second) under healthy background
// traffic; it fires once 10 are 30 s old, stays while some old ones remain,
// resolves when they are closed.
func TestLeakFromEvents(t *testing.T) {
	tr := dtest.Healthy(1, 5*time.Minute)
	for i := range 15 {
		closeAt := 150 * time.Second
		if i < 12 {
			closeAt = 120 * time.Second
		}
		tr.Held = append(tr.Held, dtest.Held{Sock: api(i),
			From: dtest.At(10*time.Second + time.Duration(i)*time.Second),
			To:   dtest.At(closeAt + time.Duration(i)*time.Millisecond)})
	}
	s := tr.Stream()
	d := newInstance(t, nil)
	res := dtest.Run(d, s.Steps(dtest.T0, dtest.At(5*time.Minute), time.Second, 100*time.Millisecond, kinds), true)
	dtest.Golden(t, "leak_events", res)

	first := firstFiring(res)
	if first == nil || !first.Now.Equal(dtest.At(49*time.Second)) {
		t.Fatalf("first firing at %v, want at %v (10th socket 30 s old)", nowOf(first), dtest.At(49*time.Second))
	}
	c := first.Conditions[0]
	if got := dtest.Labels(c); got != "comm=api,local_port=8080,pid=4242," {
		t.Errorf("labels %s", got)
	}
	if last := res[len(res)-1]; len(last.Conditions) != 0 || last.Now.Before(dtest.At(150*time.Second)) {
		t.Errorf("not resolved after the sockets closed: %+v", last)
	}
}

func firstFiring(res []dtest.Result) *dtest.Result {
	for i := range res {
		if len(res[i].Conditions) > 0 {
			return &res[i]
		}
	}
	return nil
}

func nowOf(r *dtest.Result) any {
	if r == nil {
		return "never"
	}
	return r.Now
}

// legacy is the i-th socket of a process that leaked before the probe
// started.
func legacy(i int) dtest.Sock {
	return dtest.Sock{ID: 2<<40 + uint64(i), Pid: 300, Comm: "legacy", Local: "10.0.0.10:9090",
		Peer: fmt.Sprintf("10.7.0.%d:%d", 1+i%50, 50000+i), Side: eventpb.Side_SIDE_UNSPECIFIED}
}

// A detector that starts late sees only a snapshot: 25 listed sockets (ages
// estimated, the probe found them at start) and 40 more the list cut. It
// fires at once with count 65; closes after the snapshot count down; a
// snapshot without them resolves.
func TestLateStartFromSnapshot(t *testing.T) {
	var s dtest.Stream
	snap := &eventpb.Snapshot{
		TimeUnixNano: dtest.Ns(dtest.At(0)), Seq: 7, Seeded: true, IntervalMs: 15000,
		Groups: []*eventpb.SocketGroup{
			{State: dtest.Listen, Pid: 300, Comm: "legacy", LocalPort: 9090, Count: 1},
			{State: dtest.CloseWait, Pid: 300, Comm: "legacy", LocalPort: 9090, Count: 65},
		},
		CloseWaitTotal: 65, CloseWaitCut: 40,
	}
	for i := range 25 {
		snap.CloseWait = append(snap.CloseWait, legacy(i).SnapshotSocket(time.Hour-time.Duration(i)*time.Minute, i%2 == 0))
	}
	s.Snapshot(snap)
	for i := range 5 { // five listed and three unlisted ones are closed
		s.Event(legacy(i).State(dtest.At(20*time.Second), dtest.CloseWait, dtest.LastAck))
	}
	for i := 30; i < 33; i++ {
		s.Event(legacy(i).State(dtest.At(21*time.Second), dtest.CloseWait, dtest.LastAck))
	}
	s.Snapshot(&eventpb.Snapshot{TimeUnixNano: dtest.Ns(dtest.At(45 * time.Second)), Seq: 10, Seeded: true})
	d := newInstance(t, nil)
	res := dtest.Run(d, s.Steps(dtest.T0, dtest.At(time.Minute), 5*time.Second, 100*time.Millisecond, kinds), true)
	dtest.Golden(t, "late_start", res)

	if len(res) != 4 {
		t.Fatalf("want 4 changes (fire, two count downs, resolve), got %d", len(res))
	}
	for i, want := range []string{"65", "60", "57"} {
		if got := res[i].Conditions[0].Details["count"]; got != want {
			t.Errorf("change %d: count %s, want %s", i, got, want)
		}
	}
	if got := res[0].Conditions[0].Details["oldest_age_seconds"]; got != "3600" {
		t.Errorf("oldest age %s, want 3600", got)
	}
	if len(res[3].Conditions) != 0 {
		t.Errorf("not resolved by an empty snapshot")
	}
}

// Sockets closed after 25 s (never 30 s old) but ever more of them: the
// growth rule fires, the age rule does not.
func TestGrowthRule(t *testing.T) {
	var s dtest.Stream
	// The rate of new CLOSE_WAIT sockets rises by one per second every 20
	// seconds for four minutes; each is closed after 25 s.
	id, due := 0, 0.0
	for ms := 0; ms < 240000; ms += 100 {
		for due += float64(ms) / 20000 / 10; due >= 1; due-- {
			sk := api(id)
			id++
			at := dtest.At(time.Duration(ms) * time.Millisecond)
			s.Event(sk.State(at, dtest.Established, dtest.CloseWait))
			s.Event(sk.State(at.Add(25*time.Second), dtest.CloseWait, dtest.LastAck))
		}
	}
	d := newInstance(t, nil)
	res := dtest.Run(d, s.Steps(dtest.T0, dtest.At(5*time.Minute), 15*time.Second, 100*time.Millisecond, kinds), true)
	dtest.Golden(t, "growth", res)
	f := firstFiring(res)
	if f == nil {
		t.Fatal("growth never fired")
	}
	if got := f.Conditions[0].Details["rule"]; got != "growth" {
		t.Errorf("rule %q, want growth", got)
	}
}

// Hours of a busy healthy host (thousands of connections, CLOSE_WAIT
// sockets closed within milliseconds, three old ones kept by a process)
// raise nothing, evaluated every second.
func TestHealthyTrafficRaisesNothing(t *testing.T) {
	s := dtest.Healthy(2, 10*time.Minute).Stream()
	steps := s.Steps(dtest.T0, dtest.At(10*time.Minute), time.Second, 100*time.Millisecond, kinds)
	d := newInstance(t, nil)
	for _, r := range dtest.Run(d, steps, true) {
		if len(r.Conditions) > 0 {
			t.Fatalf("healthy traffic raised at %v: %s", r.Now, r.Conditions[0].Summary)
		}
	}
	if d.Stats().Events < 10000 || d.Stats().Snapshots < 40 {
		t.Fatalf("the stream did not exercise the detector: %+v", d.Stats())
	}
	// The same stream with a threshold the three stuck sockets reach must
	// fire: the test above can fail.
	d = newInstance(t, func(c *Config) { c.MinSockets, c.ResolveSockets = 3, 1 })
	res := dtest.Run(d, steps, true)
	if f := firstFiring(res); f == nil || f.Conditions[0].Labels["comm"] != "legacy" {
		t.Fatalf("stuck sockets of legacy not seen: %+v", f)
	}
}

// Snapshots and events disagree in every way the stream can order them.
func TestSnapshotReconciliation(t *testing.T) {
	d := newInstance(t, func(c *Config) { c.MinSockets, c.MinAge = 1, 0 })
	in := func(b *eventpb.Batch) { d.Observe(detect.Input{Host: dtest.Host, Kind: wire.KindState, Batch: b}) }
	ev := func(es ...*eventpb.Event) { in(&eventpb.Batch{Events: es}) }
	snap := func(at time.Duration, socks ...*eventpb.SnapshotSocket) {
		in(&eventpb.Batch{Snapshot: &eventpb.Snapshot{TimeUnixNano: dtest.Ns(dtest.At(at)), CloseWait: socks}})
	}
	count := func(now time.Duration) string {
		var parts []string
		for _, c := range d.Evaluate(dtest.At(now)) {
			parts = append(parts, c.Labels["comm"]+"="+c.Details["count"])
		}
		return strings.Join(parts, ",")
	}
	// Entered after the snapshot, delivered before it: kept.
	ev(api(1).State(dtest.At(11*time.Second), dtest.Established, dtest.CloseWait))
	// Left after the snapshot, delivered before it: the snapshot's listing
	// of it is ignored.
	ev(api(2).State(dtest.At(12*time.Second), dtest.CloseWait, dtest.LastAck))
	// Lost close event: tracked, then the snapshot does not list it.
	ev(api(3).State(dtest.At(1*time.Second), dtest.Established, dtest.CloseWait))
	snap(10*time.Second, api(2).SnapshotSocket(5*time.Second, false), api(4).SnapshotSocket(time.Second, false))
	if got := count(13 * time.Second); got != "api=2" { // api(1) and api(4)
		t.Fatalf("after snapshot: %s, want api=2", got)
	}
	// An older snapshot arriving late changes nothing.
	snap(5*time.Second, api(7).SnapshotSocket(time.Second, false))
	// An event older than the snapshot cannot add a socket the snapshot
	// did not list.
	ev(api(8).State(dtest.At(9*time.Second), dtest.Established, dtest.CloseWait))
	if got := count(14 * time.Second); got != "api=2" {
		t.Fatalf("after stale input: %s, want api=2", got)
	}
	if d.Stats().StaleSnapshots != 1 {
		t.Errorf("stale snapshots %d, want 1", d.Stats().StaleSnapshots)
	}
	// A state change other than out of CLOSE_WAIT also ends tracking.
	ev(api(4).State(dtest.At(15*time.Second), dtest.Established, dtest.Close))
	if got := count(16 * time.Second); got != "api=1" {
		t.Fatalf("after a lost way out: %s, want api=1", got)
	}
}

// The probe applies an event to its socket table some time after the
// kernel stamped it: an event stamped before a snapshot may be missing
// from it. The snapshot's events_seq says which events it holds, so such
// an event counts whether it arrives before or after the snapshot; by
// time alone it was lost until the next snapshot (the 13 s conn_leak
// outlier under load of 2026-12-03).
func TestSnapshotOrdersEventsBySeq(t *testing.T) {
	d := newInstance(t, func(c *Config) { c.MinSockets, c.MinAge = 1, 0 })
	in := func(probe string, b *eventpb.Batch) {
		b.ProbeId = probe
		d.Observe(detect.Input{Host: dtest.Host, Kind: wire.KindState, Batch: b})
	}
	ev := func(probe string, seq uint64, e *eventpb.Event) {
		e.Seq = seq
		in(probe, &eventpb.Batch{Events: []*eventpb.Event{e}})
	}
	snap := func(probe string, at time.Duration, eventsSeq uint64, socks ...*eventpb.SnapshotSocket) {
		in(probe, &eventpb.Batch{Snapshot: &eventpb.Snapshot{TimeUnixNano: dtest.Ns(dtest.At(at)), EventsSeq: eventsSeq, CloseWait: socks}})
	}
	count := func(now time.Duration) string {
		var parts []string
		for _, c := range d.Evaluate(dtest.At(now)) {
			parts = append(parts, c.Labels["comm"]+"="+c.Details["count"])
		}
		return strings.Join(parts, ",")
	}
	// Stamped at 9 s, read by the probe after its 10 s snapshot (seq 7 >
	// events_seq 5): delivered before the snapshot, it stays.
	ev("p1", 7, api(1).State(dtest.At(9*time.Second), dtest.Established, dtest.CloseWait))
	// Stamped and applied before the snapshot, which lists it: once.
	ev("p1", 4, api(2).State(dtest.At(8*time.Second), dtest.Established, dtest.CloseWait))
	snap("p1", 10*time.Second, 5, api(2).SnapshotSocket(2*time.Second, false))
	// Stamped at 9.5 s, read after the snapshot, delivered after it.
	ev("p1", 8, api(3).State(dtest.At(9500*time.Millisecond), dtest.Established, dtest.CloseWait))
	// Applied before the snapshot (seq 5), which does not list it (its way
	// out came before the snapshot too): it does not come back.
	ev("p1", 5, api(4).State(dtest.At(9*time.Second), dtest.Established, dtest.CloseWait))
	if got := count(11 * time.Second); got != "api=3" { // api(1), api(2), api(3)
		t.Fatalf("after the snapshot: %s, want api=3", got)
	}
	// The next snapshot (events_seq 8) lists all three: still three.
	snap("p1", 20*time.Second, 8, api(1).SnapshotSocket(11*time.Second, false),
		api(2).SnapshotSocket(12*time.Second, false), api(3).SnapshotSocket(10500*time.Millisecond, false))
	if got := count(21 * time.Second); got != "api=3" {
		t.Fatalf("after the second snapshot: %s, want api=3", got)
	}
	// A restarted probe (another probe_id, seqs from 1 again): its events
	// are ordered by time against the old run's snapshot.
	ev("p2", 1, api(5).State(dtest.At(22*time.Second), dtest.Established, dtest.CloseWait))
	ev("p2", 2, api(6).State(dtest.At(19*time.Second), dtest.Established, dtest.CloseWait))
	if got := count(23 * time.Second); got != "api=4" { // api(1..3), api(5)
		t.Fatalf("after a probe restart: %s, want api=4", got)
	}

	// The probe's resync read a socket from sock_diag before the probe
	// read its event: the snapshot lists it without a sock_id, and the
	// event after names it. Counted once, and gone when it leaves.
	unbound := api(9).SnapshotSocket(time.Second, false)
	unbound.SockId, unbound.Cookie = 0, 99
	snap("p2", 30*time.Second, 10, unbound)
	ev("p2", 11, api(9).State(dtest.At(29*time.Second), dtest.Established, dtest.CloseWait))
	if got := count(31 * time.Second); got != "api=1" {
		t.Fatalf("a socket listed without its sock_id, then its event: %s, want api=1", got)
	}
	unbound2 := api(10).SnapshotSocket(time.Second, false)
	unbound2.SockId, unbound2.Cookie = 0, 100
	snap("p2", 40*time.Second, 20, unbound2)
	ev("p2", 21, api(10).State(dtest.At(41*time.Second), dtest.CloseWait, dtest.LastAck))
	if got := count(42 * time.Second); got != "" {
		t.Fatalf("a socket listed without its sock_id left CLOSE_WAIT: %s, want none", got)
	}
}

// Unknown owners are never blamed on the interrupted task; client sockets
// group under local port 0.
func TestOwnerAndSide(t *testing.T) {
	d := newInstance(t, func(c *Config) { c.MinSockets, c.MinAge = 2, 0 })
	var es []*eventpb.Event
	for i := range 2 {
		sk := api(i)
		sk.UnknownOwner, sk.Pid, sk.Comm = true, 0, "swapper/0"
		es = append(es, sk.State(dtest.At(time.Second), dtest.Established, dtest.CloseWait))
		cl := dtest.Sock{ID: uint64(100 + i), Pid: 77, Comm: "pool", Local: fmt.Sprintf("10.0.0.10:%d", 45000+i),
			Peer: "10.1.0.1:5432", Side: eventpb.Side_SIDE_CLIENT}
		es = append(es, cl.State(dtest.At(time.Second), dtest.Established, dtest.CloseWait))
	}
	d.Observe(detect.Input{Host: dtest.Host, Kind: wire.KindState, Batch: &eventpb.Batch{Events: es}})
	var got []string
	for _, c := range d.Evaluate(dtest.At(2 * time.Second)) {
		got = append(got, dtest.Labels(c)+c.Details["side"])
	}
	want := []string{"comm=unknown,local_port=8080,pid=0,server", "comm=pool,local_port=0,pid=77,client"}
	if strings.Join(got, " ") != strings.Join(want, " ") {
		t.Errorf("got %q, want %q", got, want)
	}
}

// A host with 100k distinct peers in CLOSE_WAIT: tracking stops at
// max_sockets, the rest is counted, the alert still says 100000.
func TestBoundedState(t *testing.T) {
	d := newInstance(t, func(c *Config) { c.MaxSockets = 1000 })
	b := &eventpb.Batch{}
	for i := range 100000 {
		sk := dtest.Sock{ID: uint64(i + 1), Pid: 4242, Comm: "api", Local: "10.0.0.10:8080",
			Peer: fmt.Sprintf("10.%d.%d.%d:%d", 20+i/65536, i/256%256, i%256, 40000+i%20000), Side: eventpb.Side_SIDE_SERVER}
		b.Events = append(b.Events, sk.State(dtest.At(time.Duration(i)*time.Microsecond), dtest.Established, dtest.CloseWait))
	}
	d.Observe(detect.Input{Host: dtest.Host, Kind: wire.KindState, Batch: b})
	if len(d.socks) > 1000 {
		t.Fatalf("tracking %d sockets, max 1000", len(d.socks))
	}
	if d.Stats().SocketsCut != 99000 {
		t.Errorf("sockets cut %d, want 99000", d.Stats().SocketsCut)
	}
	conds := d.Evaluate(dtest.At(time.Minute))
	if len(conds) != 1 || conds[0].Details["count"] != "100000" || conds[0].Severity != detect.Critical {
		t.Fatalf("want one critical condition with count 100000, got %+v", conds)
	}
	if n := len(conds[0].Evidence["sockets"].([]Sample)); n != 5 {
		t.Errorf("%d sample sockets, want 5", n)
	}
}

func TestConfigValidate(t *testing.T) {
	if err := DefaultConfig().Validate(); err != nil {
		t.Fatalf("defaults: %v", err)
	}
	for _, c := range []struct {
		edit func(*Config)
		key  string
	}{
		{func(c *Config) { c.MinSockets = 0 }, "min_sockets:"},
		{func(c *Config) { c.MinAge = -time.Second }, "min_age:"},
		{func(c *Config) { c.CriticalSockets = -1 }, "critical_sockets:"},
		{func(c *Config) { c.ResolveSockets = 11 }, "resolve_sockets:"},
		{func(c *Config) { c.GrowthInterval = 0 }, "growth_interval:"},
		{func(c *Config) { c.GrowthIntervals = 0 }, "growth_intervals:"},
		{func(c *Config) { c.GrowthMin = -1 }, "growth_min:"},
		{func(c *Config) { c.MaxSockets = 0 }, "max_sockets:"},
		{func(c *Config) { c.Samples = 101 }, "samples:"},
	} {
		cfg := DefaultConfig()
		c.edit(cfg)
		err := cfg.Validate()
		if err == nil || !strings.HasPrefix(err.Error(), c.key) {
			t.Errorf("Validate() = %v, want an error starting with %q", err, c.key)
		}
		p, _ := detect.Default.Lookup(Name)
		if _, err := p.New(cfg, "h"); err == nil {
			t.Errorf("New accepted an invalid config (%s)", c.key)
		}
	}
}

// Sockets older than the probe that had no event yet are listed by cookie
// only (sock_id 0): each still counts once.
func TestSnapshotSocketsWithoutSockID(t *testing.T) {
	d := newInstance(t, func(c *Config) { c.MinSockets, c.MinAge = 3, 0 })
	var socks []*eventpb.SnapshotSocket
	for i := 1; i <= 3; i++ {
		s := api(i).SnapshotSocket(time.Minute, true)
		s.SockId, s.Cookie = 0, uint64(100+i)
		socks = append(socks, s)
	}
	d.Observe(detect.Input{Host: dtest.Host, Kind: wire.KindSnapshot,
		Batch: &eventpb.Batch{Snapshot: &eventpb.Snapshot{TimeUnixNano: dtest.Ns(dtest.At(10 * time.Second)), CloseWait: socks}}})
	conds := d.Evaluate(dtest.At(11 * time.Second))
	if len(conds) != 1 || conds[0].Details["count"] != "3" {
		t.Fatalf("conditions %+v, want one with count 3", conds)
	}
}
