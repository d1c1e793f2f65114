package slowhandshake

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

var kinds = []string{wire.KindState, wire.KindRetransmit}

func newInstance(t testing.TB, edit func(*Config)) *Instance {
	t.Helper()
	return dtest.New[Config, *Instance](t, Name, edit)
}

func run(t *testing.T, tr dtest.Traffic, edit func(*Config), every time.Duration) []dtest.Result {
	steps := tr.Stream().Steps(tr.Start, tr.Start.Add(tr.Duration), every, 100*time.Millisecond, kinds)
	return dtest.Run(newInstance(t, edit), steps, true)
}

// firing returns, per identity, the times of the first and last evaluation
// that held it.
func firing(res []dtest.Result, end time.Time) map[string][2]time.Time {
	out := map[string][2]time.Time{}
	for i, r := range res {
		until := end
		if i+1 < len(res) {
			until = res[i+1].Now
		}
		for _, c := range r.Conditions {
			id := dtest.Labels(c)
			span, ok := out[id]
			if !ok {
				span[0] = r.Now
			}
			span[1] = until
			out[id] = span
		}
	}
	return out
}

// nftables drops the first SYN to one database remote for two minutes, and
// the first SYN-ACK of the api listener for one: both sides fire on the
// ceiling with about 1 s, and resolve a window after it stops.
func TestCeilingClientAndServer(t *testing.T) {
	tr := dtest.Healthy(11, 5*time.Minute)
	tr.Slow = []dtest.Slowdown{
		{Remote: 2, From: dtest.At(time.Minute), To: dtest.At(3 * time.Minute), Add: time.Second, Retransmits: 1},
		{Server: true, From: dtest.At(2 * time.Minute), To: dtest.At(3 * time.Minute), Add: time.Second, Retransmits: 1},
	}
	res := run(t, tr, nil, 10*time.Second)
	dtest.Golden(t, "ceiling", res)

	got := firing(res, dtest.At(5*time.Minute))
	if len(got) != 2 {
		t.Fatalf("want 2 alerts, got %v", got)
	}
	for id, want := range map[string][2]time.Duration{
		"remote=10.1.0.3:5432,side=client,":          {time.Minute, 3 * time.Minute},
		"local_port=8080,remote=*:8080,side=server,": {2 * time.Minute, 3 * time.Minute},
	} {
		span, ok := got[id]
		if !ok {
			t.Errorf("no alert %s", id)
			continue
		}
		// Within 15 s of the start (three slow handshakes into the window),
		// resolved within a window (30 s) and a step after the end.
		if d := span[0].Sub(dtest.At(want[0])); d < 0 || d > 15*time.Second {
			t.Errorf("%s fired %s after the slowdown began", id, d)
		}
		if d := span[1].Sub(dtest.At(want[1])); d < 0 || d > 35*time.Second {
			t.Errorf("%s resolved %s after the slowdown ended", id, d)
		}
	}
	for _, r := range res {
		for _, c := range r.Conditions {
			// About 1 s; 2 s when a random SYN loss adds to the dropped one.
			if c.Details["rule"] != "ceiling" || c.Value < 990 || c.Value > 2010 || c.Threshold != 500 {
				t.Fatalf("at %v: %s rule %s value %g threshold %g, want ceiling ~1000 > 500", r.Now, dtest.Labels(c), c.Details["rule"], c.Value, c.Threshold)
			}
			if c.Labels["side"] == "server" && c.Details["comm"] != "api" {
				t.Errorf("server alert names %s, want the listener's owner api", c.Details["comm"])
			}
		}
	}
}

// Handshakes to a remote go from about 1 ms to about 80 ms: far below the
// ceiling. Before the baseline is learned (first minute) that raises
// nothing; once learned (after five healthy windows) it fires on the
// baseline and resolves when it ends.
func TestBaselineAfterLearning(t *testing.T) {
	tr := dtest.Healthy(12, 10*time.Minute)
	tr.Slow = []dtest.Slowdown{
		{Remote: 4, From: dtest.At(20 * time.Second), To: dtest.At(50 * time.Second), Add: 80 * time.Millisecond},
		{Remote: 4, From: dtest.At(6 * time.Minute), To: dtest.At(8 * time.Minute), Add: 80 * time.Millisecond},
	}
	res := run(t, tr, nil, 10*time.Second)
	dtest.Golden(t, "baseline", res)
	got := firing(res, dtest.At(10*time.Minute))
	span, ok := got["remote=10.1.0.5:5432,side=client,"]
	if len(got) != 1 || !ok {
		t.Fatalf("want one alert for 10.1.0.5:5432, got %v", got)
	}
	if span[0].Before(dtest.At(6*time.Minute)) || span[0].After(dtest.At(6*time.Minute+20*time.Second)) {
		t.Errorf("fired at %v, want soon after 6 min (and never during learning)", span[0])
	}
	for _, r := range res {
		for _, c := range r.Conditions {
			if c.Details["rule"] != "baseline" || c.Threshold >= 500 || c.Value <= c.Threshold {
				t.Fatalf("rule %s value %g threshold %g", c.Details["rule"], c.Value, c.Threshold)
			}
		}
	}
}

// One or two lost SYNs among a dozen handshakes make the p99 1 s but are
// not an incident; the third is (min_slow).
func TestMinSlow(t *testing.T) {
	for slow, want := range map[int]int{1: 0, 2: 0, 3: 1} {
		d := newInstance(t, nil)
		b := &eventpb.Batch{}
		for i := range 12 {
			sk := dtest.Sock{ID: uint64(i + 1), Pid: 200, Comm: "worker", Local: fmt.Sprintf("10.0.0.10:%d", 40000+i),
				Peer: "10.1.0.1:5432", Side: eventpb.Side_SIDE_CLIENT}
			e := sk.State(dtest.At(time.Duration(i)*time.Second), dtest.SynSent, dtest.Established)
			e.HandshakeUs = 800
			if i < slow {
				e.HandshakeUs, e.HandshakeRetransmits = 1_000_800, 1
			}
			b.Events = append(b.Events, e)
		}
		d.Observe(detect.Input{Host: dtest.Host, Kind: wire.KindState, Batch: b})
		if got := len(d.Evaluate(dtest.At(12 * time.Second))); got != want {
			t.Errorf("%d slow of 12: %d conditions, want %d", slow, got, want)
		}
	}
}

// Ten minutes of a busy healthy host (thousands of handshakes to twenty
// remotes and into the listener, rare lost SYNs) raise nothing; the same
// stream with a 1 ms ceiling fires, so the test can fail.
func TestHealthyTrafficRaisesNothing(t *testing.T) {
	tr := dtest.Healthy(13, 10*time.Minute)
	for _, r := range run(t, tr, nil, time.Second) {
		if len(r.Conditions) > 0 {
			t.Fatalf("healthy traffic raised at %v: %s", r.Now, r.Conditions[0].Summary)
		}
	}
	res := run(t, tr, func(c *Config) { c.Ceiling = time.Millisecond }, time.Second)
	if len(firing(res, dtest.At(10*time.Minute))) < 5 {
		t.Fatal("a 1 ms ceiling did not fire on most remotes")
	}
}

// 100k distinct remotes: the endpoints stay at max_keys, the rest is
// evicted and counted, a slow endpoint that keeps busy is still reported.
func TestBoundedState(t *testing.T) {
	d := newInstance(t, func(c *Config) { c.MaxKeys = 1000 })
	b := &eventpb.Batch{}
	for i := range 100000 {
		sk := dtest.Sock{ID: uint64(i + 1), Pid: 200, Comm: "crawler", Local: "10.0.0.10:40000",
			Peer: fmt.Sprintf("10.%d.%d.%d:443", 20+i/65536, i/256%256, i%256), Side: eventpb.Side_SIDE_CLIENT}
		at := dtest.At(time.Duration(i) * 200 * time.Microsecond)
		e := sk.State(at, dtest.SynSent, dtest.Established)
		e.HandshakeUs = 2000
		b.Events = append(b.Events, e)
		if i%50 == 0 { // a slow busy one among them
			sk.Peer = "10.3.0.1:443"
			e := sk.State(at, dtest.SynSent, dtest.Established)
			e.HandshakeUs = 1_100_000
			b.Events = append(b.Events, e)
		}
	}
	d.Observe(detect.Input{Host: dtest.Host, Kind: wire.KindState, Batch: b})
	if n := d.keys.Len(); n > 1000 {
		t.Fatalf("%d endpoints tracked, max 1000", n)
	}
	if ev := d.Stats().Evicted; ev < 99000 {
		t.Errorf("evicted %d, want ≥ 99000", ev)
	}
	conds := d.Evaluate(dtest.At(20 * time.Second))
	if len(conds) != 1 || conds[0].Labels["remote"] != "10.3.0.1:443" {
		t.Fatalf("want the busy slow remote, got %d conditions", len(conds))
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
		{func(c *Config) { c.Window = time.Second }, "window:"},
		{func(c *Config) { c.MinHandshakes = 0 }, "min_handshakes:"},
		{func(c *Config) { c.Quantile = 1.5 }, "quantile:"},
		{func(c *Config) { c.MinSlow = 11 }, "min_slow:"},
		{func(c *Config) { c.Ceiling = 0 }, "ceiling:"},
		{func(c *Config) { c.Critical = -1 }, "critical:"},
		{func(c *Config) { c.BaselineFactor = 0.5 }, "baseline_factor:"},
		{func(c *Config) { c.BaselineMargin = -1 }, "baseline_margin:"},
		{func(c *Config) { c.BaselineAlpha = 0 }, "baseline_alpha:"},
		{func(c *Config) { c.BaselineWindows = 0 }, "baseline_windows:"},
		{func(c *Config) { c.MaxKeys = 0 }, "max_keys:"},
		{func(c *Config) { c.ForgetAfter = time.Second }, "forget_after:"},
	} {
		cfg := DefaultConfig()
		c.edit(cfg)
		if err := cfg.Validate(); err == nil || !strings.HasPrefix(err.Error(), c.key) {
			t.Errorf("Validate() = %v, want an error starting with %q", err, c.key)
		}
	}
}
