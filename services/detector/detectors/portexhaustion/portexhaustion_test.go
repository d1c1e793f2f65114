package portexhaustion

import (
	"strings"
	"testing"
	"time"

	"github.com/netpulse/netpulse/lib/eventpb"
	"github.com/netpulse/netpulse/lib/wire"
	"github.com/netpulse/netpulse/services/detector/detect"
	"github.com/netpulse/netpulse/services/detector/detectors/internal/dtest"
)

var kinds = []string{wire.KindError, wire.KindSnapshot}

func newInstance(t testing.TB, edit func(*Config)) *Instance {
	t.Helper()
	return dtest.New[Config, *Instance](t, Name, edit)
}

// snapshot is the probe's snapshot at d with one endpoint group: fetcher
// (pid 700) towards remote from 10.0.0.10, twReuse as the host sets it.
func snapshot(d time.Duration, remote string, timeWait, live, entered uint32, twReuse uint32) *eventpb.Snapshot {
	s := dtest.Sock{Local: "10.0.0.10:1", Peer: remote}
	ev := s.Event(dtest.At(d), eventpb.EventType_EVENT_TYPE_STATE_CHANGE)
	return &eventpb.Snapshot{
		TimeUnixNano: dtest.Ns(dtest.At(d)), Seq: uint64(d / (15 * time.Second)), Seeded: true, IntervalMs: 15000,
		EndpointsRead: true, PortRangeLow: 32768, PortRangeHigh: 60999, FinTimeoutS: 60, TwReuse: twReuse,
		TimeWaitTotal: timeWait,
		Endpoints: []*eventpb.EndpointGroup{{
			Family: ev.Family, Saddr: ev.Saddr, Daddr: ev.Daddr, Dport: ev.Dport, Pid: 700, Comm: "fetcher",
			TimeWait: timeWait, Live: live, TimeWaitEntered: entered,
		}},
	}
}

func changes(t *testing.T, res []dtest.Result) []string {
	t.Helper()
	var out []string
	for _, r := range res {
		s := r.Now.Sub(dtest.T0).String() + ":"
		for _, c := range r.Conditions {
			s += " " + c.Labels["remote"] + "/" + c.Details["rule"] + "/" + string(c.Severity)
		}
		out = append(out, s)
	}
	return out
}

// A fetcher opening 100 connections/s to one remote holds ~6000 ports in
// TIME_WAIT (21% of the range): quiet. At 400/s the next snapshot projects
// 24000 (85%) while 37% are in use: it fires on the trend, warning, before
// the ports run out; TIME_WAIT fills, the rule becomes the share; when the
// fetcher stops, it holds above resolve_share and then resolves.
func TestTrendThenShare(t *testing.T) {
	var s dtest.Stream
	const remote = "10.2.0.9:443"
	tw := uint32(0)
	for i, rate := range []uint32{100, 100, 100, 100, 100, 400, 400, 400, 400, 400, 0, 0, 0} {
		entered := rate * 15
		switch rate { // TIME_WAIT holds the last minute's connections
		case 100:
			tw = min(tw+entered, 100*60)
		case 400:
			tw = min(tw-100*15+entered, 400*60)
		case 0:
			tw -= min(tw, 6000)
		}
		s.Snapshot(snapshot(time.Duration(i)*15*time.Second, remote, tw, 20, entered, 0))
	}
	steps := s.Steps(dtest.T0, dtest.At(200*time.Second), 5*time.Second, 100*time.Millisecond, kinds)
	dtest.Golden(t, "trend_then_share", dtest.Run(newInstance(t, nil), steps, true))

	// Every evaluation, rule and severity changes only.
	res := dtest.Run(newInstance(t, nil), steps, false)
	var seen []string
	for _, c := range changes(t, res) {
		_, rest, _ := strings.Cut(c, ":")
		if len(seen) == 0 || !strings.HasSuffix(seen[len(seen)-1], ":"+rest) {
			seen = append(seen, c)
		}
	}
	got := strings.Join(seen, "\n")
	want := strings.Join([]string{
		"0s:",
		"1m15s: 10.2.0.9:443/trend/warning",
		"2m0s: 10.2.0.9:443/share/warning",
		"2m45s:",
	}, "\n")
	if got != want {
		t.Errorf("changes:\n%s\nwant:\n%s", got, want)
	}
	first := res[75/5].Conditions[0]
	if first.Details["pid"] != "700" || first.Details["comm"] != "fetcher" || first.Details["share"] != "37.3" ||
		first.Details["projected_share"] != "85.1" || first.Details["new_conns_per_second"] != "400" {
		t.Errorf("first firing details %v", first.Details)
	}
}

// Connects failing with EADDRNOTAVAIL fire at once, critical, naming the
// process and the endpoint even when no snapshot shows the ports (another
// network namespace); other errors do not count; it resolves a window
// after the last failure.
func TestFailuresFire(t *testing.T) {
	var s dtest.Stream
	client := dtest.Sock{ID: 9, Pid: 800, Comm: "client", Local: "0.0.0.0:0", Peer: "10.3.0.1:80",
		Owner: eventpb.OwnerSource_OWNER_SOURCE_TASK}
	refused := dtest.Sock{ID: 10, Pid: 801, Comm: "other", Local: "10.0.0.10:40000", Peer: "10.3.0.2:80",
		Owner: eventpb.OwnerSource_OWNER_SOURCE_TASK}
	for i := range 30 {
		at := dtest.At(10*time.Second + time.Duration(i)*100*time.Millisecond)
		e := client.State(at, dtest.SynSent, dtest.Close)
		e.Type, e.Error = eventpb.EventType_EVENT_TYPE_CONNECT_FAILED, errAddrNotAvail
		s.Event(e)
		r := refused.State(at, dtest.SynSent, dtest.Close)
		r.Type, r.Error = eventpb.EventType_EVENT_TYPE_CONNECT_FAILED, 111
		s.Event(r)
	}
	d := newInstance(t, nil)
	res := dtest.Run(d, s.Steps(dtest.T0, dtest.At(2*time.Minute), time.Second, 100*time.Millisecond, kinds), true)
	dtest.Golden(t, "failures", res)

	if len(res) < 3 || len(res[1].Conditions) != 1 || !res[1].Now.Equal(dtest.At(10*time.Second)) {
		t.Fatalf("want a firing at 10 s (the first failure), got %v", changes(t, res))
	}
	c := res[1].Conditions[0]
	if c.Labels["remote"] != "10.3.0.1:80" || c.Severity != detect.Critical || c.Details["pid"] != "800" ||
		c.Details["comm"] != "client" || c.Value != 100 || c.Details["rule"] != "failures" {
		t.Errorf("condition %+v", c)
	}
	if last := res[len(res)-1]; len(last.Conditions) != 0 || last.Now.Before(dtest.At(70*time.Second)) {
		t.Errorf("not resolved a window after the failures: %v", changes(t, res))
	}
}

// tcp_tw_reuse=2 lets connects to loopback take TIME_WAIT ports older than
// a second: 26000 of them towards 127.0.0.1 at a slow rate are no danger;
// towards another address, or without reuse, they are (92%: critical).
func TestTimeWaitReuse(t *testing.T) {
	for _, tc := range []struct {
		remote  string
		reuse   uint32
		firing  bool
		wantSev detect.Severity
	}{
		{"127.0.0.1:8080", 2, false, ""},
		{"127.0.0.1:8080", 0, true, detect.Critical},
		{"10.2.0.9:443", 2, true, detect.Critical},
		{"10.2.0.9:443", 1, false, ""},
	} {
		var s dtest.Stream
		s.Snapshot(snapshot(0, tc.remote, 26000, 10, 1500, tc.reuse))
		s.Snapshot(snapshot(15*time.Second, tc.remote, 26000, 10, 1500, tc.reuse))
		d := newInstance(t, nil)
		res := dtest.Run(d, s.Steps(dtest.At(15*time.Second), dtest.At(15*time.Second), time.Second, 100*time.Millisecond, kinds), false)
		conds := res[0].Conditions
		if (len(conds) == 1) != tc.firing || (tc.firing && conds[0].Severity != tc.wantSev) {
			t.Errorf("%s with tw_reuse %d: %+v, want firing %v %s", tc.remote, tc.reuse, conds, tc.firing, tc.wantSev)
		}
	}
}

// A probe that stops publishing leaves no view: the alert resolves three
// snapshot intervals after the last snapshot.
func TestStaleSnapshotResolves(t *testing.T) {
	var s dtest.Stream
	s.Snapshot(snapshot(0, "10.2.0.9:443", 25000, 10, 6000, 0))
	d := newInstance(t, nil)
	res := dtest.Run(d, s.Steps(dtest.T0, dtest.At(time.Minute), 5*time.Second, 100*time.Millisecond, kinds), true)
	if len(res) != 2 || len(res[0].Conditions) != 1 || len(res[1].Conditions) != 0 || !res[1].Now.Equal(dtest.At(50*time.Second)) {
		t.Errorf("want firing at once, resolved at 50 s: %v", changes(t, res))
	}
}

// A busy healthy host (1000 connections/s to 20 remotes, each leaving a
// TIME_WAIT socket: ~3000 per remote, 10% of the range) raises nothing.
func TestHealthyQuiet(t *testing.T) {
	tr := dtest.Healthy(4, 5*time.Minute)
	tr.ClientConns = 1000
	d := newInstance(t, nil)
	res := dtest.Run(d, tr.Stream().Steps(dtest.T0, dtest.At(5*time.Minute), time.Second, 100*time.Millisecond, kinds), true)
	for _, r := range res {
		if len(r.Conditions) != 0 {
			t.Fatalf("healthy traffic fired at %s: %+v", r.Now, r.Conditions)
		}
	}
	if d.Stats().Snapshots == 0 {
		t.Fatal("no snapshot was observed")
	}
}

func TestConfigErrorsNameTheKey(t *testing.T) {
	for key, edit := range map[string]func(*Config){
		"min_share":      func(c *Config) { c.MinShare = 0 },
		"critical_share": func(c *Config) { c.CriticalShare = 0.5 },
		"resolve_share":  func(c *Config) { c.ResolveShare = 0.8 },
		"min_ports":      func(c *Config) { c.MinPorts = 0 },
		"min_failures":   func(c *Config) { c.MinFailures = 0 },
		"window":         func(c *Config) { c.Window = time.Millisecond },
		"max_remotes":    func(c *Config) { c.MaxRemotes = 0 },
	} {
		c := DefaultConfig()
		edit(c)
		if err := c.Validate(); err == nil || !strings.HasPrefix(err.Error(), key+":") {
			t.Errorf("%s: error %v, want one naming the key", key, err)
		}
	}
	if err := DefaultConfig().Validate(); err != nil {
		t.Errorf("defaults: %v", err)
	}
}
