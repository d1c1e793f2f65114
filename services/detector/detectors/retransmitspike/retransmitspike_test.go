package retransmitspike

import (
	"fmt"
	"math/rand/v2"
	"net/netip"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/netpulse/netpulse/lib/eventpb"
	"github.com/netpulse/netpulse/lib/wire"
	"github.com/netpulse/netpulse/services/detector/detect"
	"github.com/netpulse/netpulse/services/detector/detectors/internal/dtest"
)

var kinds = []string{wire.KindRetransmit, wire.KindConn, wire.KindSnapshot}

func newInstance(t testing.TB, edit func(*Config)) *Instance {
	t.Helper()
	return dtest.New[Config, *Instance](t, Name, edit)
}

func run(t *testing.T, tr dtest.Traffic, edit func(*Config), every time.Duration) []dtest.Result {
	steps := tr.Stream().Steps(tr.Start, tr.Start.Add(tr.Duration), every, 100*time.Millisecond, kinds)
	return dtest.Run(newInstance(t, edit), steps, true)
}

// periods lists, per identity, the [start, end) of each period it was held.
func periods(res []dtest.Result, end time.Time) map[string][][2]time.Time {
	out := map[string][][2]time.Time{}
	open := map[string]time.Time{}
	for _, r := range res {
		now := map[string]bool{}
		for _, c := range r.Conditions {
			id := dtest.Labels(c)
			now[id] = true
			if _, ok := open[id]; !ok {
				open[id] = r.Now
			}
		}
		for id, from := range open {
			if !now[id] {
				out[id] = append(out[id], [2]time.Time{from, r.Now})
				delete(open, id)
			}
		}
	}
	for id, from := range open {
		out[id] = append(out[id], [2]time.Time{from, end})
	}
	return out
}

// minutes is t as minutes since T0, for messages.
func minutes(t time.Time) string { return t.Sub(dtest.T0).String() }

// A transfer to one remote always loses a little (20 segments/s of 10k/s,
// 0.2%): that is learned. Then loss jumps to 400/s (4%) for two minutes,
// with a stretch at 90/s (0.9%, under the limits to fire but above those
// to resolve) and a 4 s stretch of nothing: one alert for the host and one
// for the remote, each fired once, resolved once after the loss ends.
func TestSpikeWithHysteresis(t *testing.T) {
	tr := dtest.Healthy(21, 10*time.Minute)
	at := dtest.At
	m := time.Minute
	tr.Loss = []dtest.Loss{
		{Remote: 3, From: at(0), To: at(5 * m), Sent: 10000, Retrans: 20},
		{Remote: 3, From: at(5 * m), To: at(6 * m), Sent: 10000, Retrans: 400},
		{Remote: 3, From: at(6 * m), To: at(6*m + 30*time.Second), Sent: 10000, Retrans: 90},
		{Remote: 3, From: at(6*m + 30*time.Second), To: at(6*m + 40*time.Second), Sent: 10000, Retrans: 400},
		{Remote: 3, From: at(6*m + 44*time.Second), To: at(7 * m), Sent: 10000, Retrans: 400},
		{Remote: 3, From: at(7 * m), To: at(10 * m), Sent: 10000, Retrans: 20},
	}
	res := run(t, tr, nil, 10*time.Second)
	dtest.Golden(t, "spike", res)

	got := periods(res, at(10*m))
	if len(got) != 2 {
		t.Fatalf("want alerts for the host and the remote, got %v", got)
	}
	for _, id := range []string{"remote=*,", "remote=10.1.0.4,"} {
		p := got[id]
		if len(p) != 1 {
			t.Fatalf("%s: %d firing periods, want exactly 1 (hysteresis): %v", id, len(p), p)
		}
		// Fires after the window fills and min_duration, within 30 s.
		if p[0][0].Before(at(5*m)) || p[0][0].After(at(5*m+30*time.Second)) {
			t.Errorf("%s fired at %s, want within 30 s after 5m", id, minutes(p[0][0]))
		}
		if p[0][1].Before(at(7*m)) || p[0][1].After(at(7*m+30*time.Second)) {
			t.Errorf("%s resolved at %s, want within 30 s after 7m", id, minutes(p[0][1]))
		}
	}
	for _, r := range res {
		for _, c := range r.Conditions {
			if c.Details["ratio"] == "unknown" {
				t.Errorf("%s at %s: ratio unknown", dtest.Labels(c), minutes(r.Now))
			}
			if c.Threshold < 50 {
				t.Errorf("threshold %g below min_rate", c.Threshold)
			}
		}
	}
}

// A busy healthy host: 40k segments/s to one remote, 800 retransmitted
// (0.2%), for ten minutes, on top of the usual traffic: over min_rate all
// along, but the ratio is low. Nothing fires. With min_ratio 0.1% it would
// (before the baseline is learned): the test can fail.
func TestBusyHealthyHostStaysQuiet(t *testing.T) {
	tr := dtest.Healthy(22, 10*time.Minute)
	tr.Loss = []dtest.Loss{{Remote: 1, From: dtest.T0, To: dtest.At(10 * time.Minute), Sent: 400000, Retrans: 800}}
	for _, r := range run(t, tr, nil, time.Second) {
		if len(r.Conditions) > 0 {
			t.Fatalf("busy healthy host raised at %s: %s", minutes(r.Now), r.Conditions[0].Summary)
		}
	}
	if res := run(t, tr, func(c *Config) { c.MinRatio = 0.001 }, time.Second); len(periods(res, dtest.At(10*time.Minute))) == 0 {
		t.Fatal("min_ratio 0.1% did not fire on a 0.2% ratio")
	}
}

// The usual healthy host raises nothing either.
func TestHealthyTrafficRaisesNothing(t *testing.T) {
	for _, r := range run(t, dtest.Healthy(23, 10*time.Minute), nil, time.Second) {
		if len(r.Conditions) > 0 {
			t.Fatalf("healthy traffic raised at %s: %s", minutes(r.Now), r.Conditions[0].Summary)
		}
	}
}

// Long-lived connections: no finished connection and no snapshot, so no
// ratio. A steady 100/s from the start is learned, not reported; three
// times as much later is.
func TestUnknownRatioNeedsBaseline(t *testing.T) {
	d := newInstance(t, nil)
	sk := dtest.Sock{ID: 1, Pid: 200, Comm: "worker", Local: "10.0.0.10:40000", Peer: "10.1.0.9:5432", Side: eventpb.Side_SIDE_CLIENT}
	var fired []string
	for sec := range 600 {
		rate := 100
		if sec >= 300 && sec < 400 {
			rate = 400
		}
		retransmits(d, sk, sec, rate)
		for _, c := range d.Evaluate(dtest.At(time.Duration(sec+1) * time.Second)) {
			fired = append(fired, fmt.Sprintf("%d:%s:%s", sec+1, c.Labels["remote"], c.Details["ratio"]))
		}
	}
	if len(fired) == 0 {
		t.Fatal("the spike to 400/s was not reported")
	}
	var first int
	fmt.Sscanf(fired[0], "%d:", &first)
	if first < 300 || first > 330 {
		t.Errorf("first report at %ds, want soon after 300s: %v", first, fired[:min(3, len(fired))])
	}
	if !strings.Contains(fired[0], ":unknown") {
		t.Errorf("ratio should be unknown: %s", fired[0])
	}
}

// Host counters going down (a reboot) make the ratio unknown, not negative.
func TestCounterReset(t *testing.T) {
	d := newInstance(t, nil)
	for i, c := range []struct{ out, re uint64 }{{1000, 10}, {101000, 2010}, {500, 5}} {
		d.Observe(detect.Input{Kind: wire.KindSnapshot, Batch: &eventpb.Batch{Snapshot: &eventpb.Snapshot{
			TimeUnixNano: dtest.Ns(dtest.At(time.Duration(i) * 15 * time.Second)), TcpOutSegs: c.out, TcpRetransSegs: c.re, IntervalMs: 15000}}})
		v := d.window(&d.all, dtest.At(time.Duration(i)*15*time.Second).UnixNano(), true)
		switch i {
		case 1:
			if !v.known || v.ratio != 0.02 {
				t.Errorf("ratio %g known %v, want 0.02", v.ratio, v.known)
			}
		case 2:
			if v.known {
				t.Errorf("ratio known after a counter reset")
			}
		}
	}
	if s := d.Stats(); s.CounterResets != 1 {
		t.Errorf("counter resets %d, want 1", s.CounterResets)
	}
}

// 100k distinct remotes retransmitting: remotes stay at max_remotes, the
// evictions are counted, the host-level view is whole.
func TestBoundedState(t *testing.T) {
	d := newInstance(t, func(c *Config) { c.MaxRemotes = 1000 })
	b := &eventpb.Batch{}
	for i := range 100000 {
		sk := dtest.Sock{ID: uint64(i + 1), Pid: 200, Comm: "crawler", Local: "10.0.0.10:40000",
			Peer: fmt.Sprintf("10.%d.%d.%d:443", 20+i/65536, i/256%256, i%256), Side: eventpb.Side_SIDE_CLIENT}
		e := sk.Event(dtest.At(time.Duration(i)*100*time.Microsecond), eventpb.EventType_EVENT_TYPE_RETRANSMIT)
		e.Segments = 1
		b.Events = append(b.Events, e)
	}
	d.Observe(detect.Input{Host: dtest.Host, Kind: wire.KindRetransmit, Batch: b})
	if n := d.remotes.Len(); n > 1000 {
		t.Fatalf("%d remotes tracked, max 1000", n)
	}
	if ev := d.Stats().Evicted; ev != 99000 {
		t.Errorf("evicted %d, want 99000", ev)
	}
	if v := d.window(&d.all, dtest.At(10*time.Second).UnixNano(), true); v.rate != 10000 {
		t.Errorf("host rate %g, want 10000/s", v.rate)
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
		{func(c *Config) { c.Window = 1500 * time.Millisecond }, "window:"},
		{func(c *Config) { c.MinRate = 0 }, "min_rate:"},
		{func(c *Config) { c.MinRatio = 1 }, "min_ratio:"},
		{func(c *Config) { c.BaselineFactor = 0 }, "baseline_factor:"},
		{func(c *Config) { c.BaselineAlpha = 2 }, "baseline_alpha:"},
		{func(c *Config) { c.BaselineWindows = 0 }, "baseline_windows:"},
		{func(c *Config) { c.RatioFactor = 0.5 }, "ratio_factor:"},
		{func(c *Config) { c.ResolveFraction = 0 }, "resolve_fraction:"},
		{func(c *Config) { c.MinDuration = -1 }, "min_duration:"},
		{func(c *Config) { c.CriticalRatio = 2 }, "critical_ratio:"},
		{func(c *Config) { c.MaxRemotes = 0 }, "max_remotes:"},
		{func(c *Config) { c.ForgetAfter = time.Second }, "forget_after:"},
	} {
		cfg := DefaultConfig()
		c.edit(cfg)
		if err := cfg.Validate(); err == nil || !strings.HasPrefix(err.Error(), c.key) {
			t.Errorf("Validate() = %v, want an error starting with %q", err, c.key)
		}
	}
}

// retransmits feeds rate retransmits of one segment each over second sec.
func retransmits(d *Instance, sk dtest.Sock, sec, rate int) { sending(d, sk, sec, rate, 0, nil) }

// sending is retransmits by a connection that sends perSec segments a
// second: each retransmit carries segs_out, *sent so far.
func sending(d *Instance, sk dtest.Sock, sec, rate, perSec int, sent *uint32) {
	b := &eventpb.Batch{}
	for i := range rate {
		e := sk.Event(dtest.At(time.Duration(sec)*time.Second+time.Duration(i)*time.Second/time.Duration(rate)), eventpb.EventType_EVENT_TYPE_RETRANSMIT)
		e.Segments = 1
		if sent != nil {
			*sent += uint32(perSec / rate)
			e.SegsOut = *sent
		}
		b.Events = append(b.Events, e)
	}
	d.Observe(detect.Input{Host: dtest.Host, Kind: wire.KindRetransmit, Batch: b})
}

// A long-lived connection to a remote never seen before starts losing
// packets after the host's baseline was learned: its ratio is unknown (no
// finished connection), its usual rate is 0, so it fires. The same remote
// retransmitting since the detector started is learned instead (see
// TestUnknownRatioNeedsBaseline): the test can fail.
func TestNewRemoteAfterLearning(t *testing.T) {
	d := newInstance(t, nil)
	old := dtest.Sock{ID: 1, Pid: 200, Comm: "worker", Local: "10.0.0.10:40000", Peer: "10.1.0.9:5432", Side: eventpb.Side_SIDE_CLIENT}
	lossy := dtest.Sock{ID: 2, Pid: 300, Comm: "backup", Local: "10.0.0.10:40001", Peer: "10.1.0.7:873", Side: eventpb.Side_SIDE_CLIENT}
	start := 0
	for sec := range 300 {
		retransmits(d, old, sec, 2) // a little, all along
		if sec >= 120 {
			retransmits(d, lossy, sec, 100)
		}
		for _, c := range d.Evaluate(dtest.At(time.Duration(sec+1) * time.Second)) {
			if c.Labels["remote"] == "10.1.0.7" && start == 0 {
				start = sec + 1
				if c.Details["pid"] != "300" || c.Details["ratio"] != "unknown" || c.Value < 90 {
					t.Errorf("alert details %v value %g: want pid 300, ratio unknown, about 100/s", c.Details, c.Value)
				}
			}
		}
	}
	// The window (10 s) fills, then min_duration (10 s).
	if start < 120 || start > 145 {
		t.Errorf("new lossy remote fired at %ds, want within 25 s after 120s", start)
	}
}

// Counters of the probe's own network namespace that show far fewer
// retransmits than the events (which come from every namespace) do not
// give the ratio: it is unknown, and the evidence says why.
func TestCountersOfAnotherNamespace(t *testing.T) {
	d := newInstance(t, nil)
	sk := dtest.Sock{ID: 1, Pid: 200, Comm: "worker", Local: "10.0.0.10:40000", Peer: "10.1.0.9:5432", Side: eventpb.Side_SIDE_CLIENT}
	for i, c := range []struct{ out, re uint64 }{{1000, 10}, {1001000, 20}} {
		if i == 1 {
			for sec := range 15 {
				retransmits(d, sk, sec, 200) // 3000 segments; the counters saw 10
			}
		}
		d.Observe(detect.Input{Kind: wire.KindSnapshot, Batch: &eventpb.Batch{Snapshot: &eventpb.Snapshot{
			TimeUnixNano: dtest.Ns(dtest.At(time.Duration(i) * 15 * time.Second)), TcpOutSegs: c.out, TcpRetransSegs: c.re, IntervalMs: 15000}}})
	}
	v := d.window(&d.all, dtest.At(15*time.Second).UnixNano(), true)
	if v.known || !v.otherNetns || !v.haveCounters {
		t.Errorf("ratio known %v (%g), other netns %v: want unknown because the counters miss the events", v.known, v.ratio, v.otherNetns)
	}
}

// An open connection's retransmits carry segs_out: between two of them the
// ratio of what it sent is known before it closes. A bulk transfer to a
// new remote after learning that loses 0.2% (80 of 40k segments/s) stays
// quiet though over min_rate; one losing 4% fires with its ratio known.
func TestOpenConnectionRatio(t *testing.T) {
	for _, c := range []struct {
		retrans int
		fire    bool
	}{{80, false}, {1600, true}} {
		d := newInstance(t, nil)
		old := dtest.Sock{ID: 1, Pid: 200, Comm: "worker", Local: "10.0.0.10:40000", Peer: "10.1.0.9:5432", Side: eventpb.Side_SIDE_CLIENT}
		bulk := dtest.Sock{ID: 2, Pid: 300, Comm: "backup", Local: "10.0.0.10:40001", Peer: "10.1.0.7:873", Side: eventpb.Side_SIDE_CLIENT}
		var fired []detect.Condition
		var sent uint32
		for sec := range 300 {
			retransmits(d, old, sec, 2)
			if sec >= 120 {
				sending(d, bulk, sec, c.retrans, 40000, &sent)
			}
			for _, cond := range d.Evaluate(dtest.At(time.Duration(sec+1) * time.Second)) {
				if cond.Labels["remote"] == "10.1.0.7" {
					fired = append(fired, cond)
				}
			}
		}
		if !c.fire {
			if len(fired) > 0 {
				t.Errorf("0.2%% loss fired: %s", fired[0].Summary)
			}
			continue
		}
		if len(fired) == 0 {
			t.Fatal("4% loss did not fire")
		}
		ev := fired[0].Evidence
		if ev["ratio_source"] != "open connections" || ev["ratio"].(float64) < 0.035 || ev["ratio"].(float64) > 0.045 {
			t.Errorf("ratio %v from %v, want about 0.04 from open connections", ev["ratio"], ev["ratio_source"])
		}
	}
}

// familiarPath is the measured case of issue 12: bulk transfers to remote 3
// that normally retransmit 0.17–0.22% of their segments (softnet backlog
// drops on a veth) at 2.7–4.7k retransmitted segments/s, for four minutes;
// then, with lossy set, 5% path loss for 30 s: throughput falls 35× (from
// about 2M to 80k segments/s) and the ratio rises to about 5% while the
// rate stays at 4.2k/s, inside the rate's usual range; then healthy again.
func familiarPath(lossy bool) dtest.Traffic {
	tr := dtest.Healthy(24, 6*time.Minute)
	at := dtest.At
	healthy := []struct{ retrans, ratio float64 }{
		{2700, 0.0017}, {4700, 0.0022}, {3500, 0.0020}, {4200, 0.0019}, {3000, 0.0018}, {4500, 0.0021},
		{3800, 0.0020}, {2900, 0.0017}, {4600, 0.0022}, {3300, 0.0019}, {4000, 0.0020}, {3600, 0.0018},
	}
	var t time.Duration
	add := func(d time.Duration, retrans, ratio float64) {
		// Sent: segments sent for the first time; segs_out (what the ratio
		// is of) counts the retransmits too.
		tr.Loss = append(tr.Loss, dtest.Loss{Remote: 3, From: at(t), To: at(t + d),
			Sent: retrans/ratio - retrans, Retrans: retrans})
		t += d
	}
	for _, h := range healthy[:8] { // 4 minutes, 30 s each
		add(30*time.Second, h.retrans, h.ratio)
	}
	if lossy {
		add(30*time.Second, 4200, 0.05)
	} else {
		add(30*time.Second, 4200, 0.0020)
	}
	for _, h := range healthy[8:] { // 90 s more
		add(30*time.Second, h.retrans, h.ratio)
	}
	return tr
}

// The measured case: the ratio fires for the remote (and the host, whose
// counters see the same jump) though the rate did not rise, with the ratio
// and its baseline in the annotations; it resolves after the loss. Without
// judging the ratio against its baseline (ratio_factor 0) it stays silent,
// as before: the test can fail.
func TestRatioSpikeOnFamiliarPath(t *testing.T) {
	tr := familiarPath(true)
	lossFrom, lossTo := dtest.At(4*time.Minute), dtest.At(4*time.Minute+30*time.Second)
	res := run(t, tr, nil, 10*time.Second)
	dtest.Golden(t, "ratio_spike", res)

	got := periods(res, dtest.At(6*time.Minute))
	for _, id := range []string{"remote=*,", "remote=10.1.0.4,"} {
		p := got[id]
		if len(p) != 1 {
			t.Fatalf("%s: %d firing periods, want exactly 1: %v", id, len(p), got)
		}
		if p[0][0].Before(lossFrom) || p[0][0].After(lossTo) {
			t.Errorf("%s fired at %s, want during the loss (4m–4m30s)", id, minutes(p[0][0]))
		}
		if p[0][1].Before(lossTo) || p[0][1].After(lossTo.Add(40*time.Second)) {
			t.Errorf("%s resolved at %s, want within 40 s after the loss", id, minutes(p[0][1]))
		}
	}
	var remote *detect.Condition
	for _, r := range res {
		for i, c := range r.Conditions {
			if c.Labels["remote"] == "10.1.0.4" && remote == nil {
				remote = &r.Conditions[i]
			}
		}
	}
	ratio, _ := strconv.ParseFloat(remote.Details["ratio"], 64)
	base, _ := strconv.ParseFloat(remote.Details["ratio_baseline"], 64)
	if ratio < 0.04 || ratio > 0.06 || base < 0.0017 || base > 0.0022 || remote.Details["unusual"] != "ratio" {
		t.Errorf("annotations %v: want ratio ~0.05 over a baseline of 0.17–0.22%%, unusual by ratio", remote.Details)
	}
	// The rate stayed in its usual range: the rate alone did not judge.
	if perS, _ := strconv.ParseFloat(remote.Details["baseline_per_s"], 64); remote.Value > 3*perS {
		t.Errorf("rate %g over 3 × its baseline %g: not the case this test is about", remote.Value, perS)
	}
	if len(remote.Labels) != 1 {
		t.Errorf("labels %v: only the identity (remote)", remote.Labels)
	}
	// Evaluated as often as in production (500 ms), it fires too.
	steps := tr.Stream().Steps(tr.Start, tr.Start.Add(tr.Duration), 500*time.Millisecond, 100*time.Millisecond, kinds)
	fine := periods(dtest.Run(newInstance(t, nil), steps, true), dtest.At(6*time.Minute))
	if p := fine["remote=10.1.0.4,"]; len(p) != 1 || p[0][0].After(lossTo) {
		t.Errorf("every 500 ms: firing periods %v, want one starting during the loss", p)
	}
	if off := periods(dtest.Run(newInstance(t, func(c *Config) { c.RatioFactor = 0 }), steps, true), dtest.At(6*time.Minute)); len(off) != 0 {
		t.Errorf("ratio_factor 0 fired: %v", off)
	}
}

// The same familiar path without the loss: a steady 0.17–0.22% at 2.7–4.7k
// segments/s, and the ratio's baseline learned. Nothing fires.
func TestSteadySmallRatioStaysQuiet(t *testing.T) {
	tr := familiarPath(false)
	d := newInstance(t, nil)
	steps := tr.Stream().Steps(tr.Start, tr.Start.Add(tr.Duration), 500*time.Millisecond, 100*time.Millisecond, kinds)
	for _, r := range dtest.Run(d, steps, false) {
		if len(r.Conditions) > 0 {
			t.Fatalf("steady small ratio raised at %s: %s", minutes(r.Now), r.Conditions[0].Summary)
		}
	}
	st := d.remotes.Peek(netip.MustParseAddr("10.1.0.4"))
	if st == nil || !st.ratioBase.Ready(d.cfg.BaselineWindows) || st.ratioBase.Value < 0.0015 || st.ratioBase.Value > 0.0025 {
		t.Fatalf("ratio baseline not learned as 0.17–0.22%%: %+v", st)
	}
}

// Short blips: ratio spikes that stay under the minimum volume fire
// nothing: 30 s of 8% at 30 segments/s (under min_rate) on a path that
// retransmits 20 of 10k segments/s (0.2%), and 3 s of 5% loss on a path at
// 0.2% of 2M segments/s, which its 10 s window dilutes under min_ratio. The
// same 5% loss held for 30 s fires: the test can fail.
func TestRatioBlipsBelowMinVolume(t *testing.T) {
	for _, c := range []struct {
		name          string
		sent, retrans float64 // the path's usual
		blip          time.Duration
		rate, ratio   float64
		fire          bool
	}{
		{"rate under min_rate", 10000, 20, 30 * time.Second, 30, 0.08, false},
		{"3 s of 5%", 2e6, 4000, 3 * time.Second, 4200, 0.05, false},
		{"30 s of 5%", 2e6, 4000, 30 * time.Second, 4200, 0.05, true},
	} {
		t.Run(c.name, func(t *testing.T) {
			tr := dtest.Healthy(25, 4*time.Minute)
			at := dtest.At
			from, to := at(2*time.Minute), at(2*time.Minute+c.blip)
			tr.Loss = []dtest.Loss{
				{Remote: 3, From: at(0), To: from, Sent: c.sent, Retrans: c.retrans},
				{Remote: 3, From: from, To: to, Sent: c.rate/c.ratio - c.rate, Retrans: c.rate},
				{Remote: 3, From: to, To: at(4 * time.Minute), Sent: c.sent, Retrans: c.retrans},
			}
			steps := tr.Stream().Steps(tr.Start, tr.Start.Add(tr.Duration), 500*time.Millisecond, 100*time.Millisecond, kinds)
			got := periods(dtest.Run(newInstance(t, nil), steps, true), at(4*time.Minute))
			if fired := len(got["remote=10.1.0.4,"]) > 0; fired != c.fire {
				t.Errorf("fired %v (%v), want %v", fired, got, c.fire)
			}
		})
	}
}

// An evaluation passes over a remote whose epoch counts say its window
// cannot reach min_rate: those counts must bound the window's segments
// from above, whatever order the events come in (late ones, ones a little
// ahead of the clock). Checked against the window itself at every step.
func TestEpochsBoundTheWindow(t *testing.T) {
	d := newInstance(t, nil)
	rng := rand.New(rand.NewPCG(7, 7))
	sk := dtest.Sock{ID: 1, Pid: 200, Comm: "worker", Local: "10.0.0.10:40000", Peer: "10.1.0.9:5432", Side: eventpb.Side_SIDE_CLIENT}
	w := int64(d.cfg.Window)
	var checked int
	for step := range 3000 {
		now := dtest.At(time.Duration(step) * 100 * time.Millisecond)
		b := &eventpb.Batch{}
		for range rng.IntN(4) {
			// Mostly recent, some late (up to 30 s), some 1.5 s ahead.
			off := time.Duration(rng.Int64N(int64(2*time.Second))) - 500*time.Millisecond
			if rng.IntN(10) == 0 {
				off = -time.Duration(rng.Int64N(int64(30 * time.Second)))
			}
			e := sk.Event(now.Add(off), eventpb.EventType_EVENT_TYPE_RETRANSMIT)
			e.Segments = uint32(1 + rng.IntN(20))
			b.Events = append(b.Events, e)
		}
		d.Observe(detect.Input{Host: dtest.Host, Kind: wire.KindRetransmit, Batch: b})
		st := d.remotes.Peek(netip.MustParseAddr("10.1.0.9"))
		if st == nil {
			continue
		}
		n := now.UnixNano()
		var segs uint64
		st.ring.Each(st.ring.Abs(n)-1, func(_ int64, s *slot) { segs += uint64(s.segs) })
		if bound := st.segsSince(n-w-int64(time.Second), w); bound < segs {
			t.Fatalf("step %d: epochs bound %d below the window's %d segments", step, bound, segs)
		}
		checked++
	}
	if checked < 2900 {
		t.Fatalf("checked %d steps", checked)
	}
}
