package connfailure

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

var kinds = []string{wire.KindError, wire.KindReset, wire.KindState}

func newInstance(t testing.TB, edit func(*Config)) *Instance {
	t.Helper()
	return dtest.New[Config, *Instance](t, Name, edit)
}

func run(t *testing.T, tr dtest.Traffic, edit func(*Config), every time.Duration) []dtest.Result {
	steps := tr.Stream().Steps(tr.Start, tr.Start.Add(tr.Duration), every, 100*time.Millisecond, kinds)
	return dtest.Run(newInstance(t, edit), steps, true)
}

// spans is, per identity, when it was first and last held, and its worst
// severity.
type span struct {
	from, to time.Time
	severity detect.Severity
}

func spans(res []dtest.Result) map[string]span {
	out := map[string]span{}
	for _, r := range res {
		for _, c := range r.Conditions {
			id := dtest.Labels(c)
			s, ok := out[id]
			if !ok {
				s.from = r.Now
			}
			s.to = r.Now
			if c.Severity == detect.Critical {
				s.severity = c.Severity
			} else if s.severity == "" {
				s.severity = c.Severity
			}
			out[id] = s
		}
	}
	return out
}

// One database goes down (connects refused) for a minute, another stops
// answering SYNs (the worker gives up after 3 s) for a minute, a third
// loses its route. Each fires with its reason; the refused one is critical
// (every attempt fails).
func TestFailures(t *testing.T) {
	tr := dtest.Healthy(31, 4*time.Minute)
	tr.Remotes = 6
	at := dtest.At
	tr.Down = []dtest.Outage{
		{Remote: 1, From: at(time.Minute), To: at(2 * time.Minute), Errno: 111, Wait: 200 * time.Microsecond},
		{Remote: 4, From: at(90 * time.Second), To: at(150 * time.Second), Errno: 0, Wait: 3 * time.Second},
		{Remote: 5, From: at(2 * time.Minute), To: at(3 * time.Minute), Errno: 113, Wait: 3 * time.Second},
	}
	res := run(t, tr, nil, 10*time.Second)
	dtest.Golden(t, "failures", res)
	got := spans(res)
	want := map[string]detect.Severity{
		"reason=refused,remote=10.1.0.2:5432,":     detect.Critical,
		"reason=timeout,remote=10.1.0.5:5432,":     detect.Critical,
		"reason=unreachable,remote=10.1.0.6:5432,": detect.Critical,
	}
	if len(got) != len(want) {
		t.Fatalf("got alerts %v, want %v", got, want)
	}
	for id, sev := range want {
		s, ok := got[id]
		if !ok || s.severity != sev {
			t.Errorf("%s: %+v, want severity %s", id, s, sev)
		}
	}
	if s := got["reason=refused,remote=10.1.0.2:5432,"]; s.from.After(at(time.Minute+15*time.Second)) || s.to.After(at(2*time.Minute+35*time.Second)) {
		t.Errorf("refused from %v to %v: want within 15 s of the outage and gone a window after it", s.from, s.to)
	}
}

// Resets: the api listener sends 10 resets/s for a minute on top of its
// usual 0.5/s, and a database remote resets 20/s for a minute (it never
// did). Both are storms. An application that resets every one of its
// connections all along (30/s, from the start) is learned and stays quiet.
func TestResetStorms(t *testing.T) {
	tr := dtest.Healthy(32, 8*time.Minute)
	at := dtest.At
	tr.Storms = []dtest.Storm{
		{Server: true, From: at(5 * time.Minute), To: at(6 * time.Minute), PerSec: 10},
		{Remote: 2, From: at(5*time.Minute + 30*time.Second), To: at(6*time.Minute + 30*time.Second), PerSec: 20},
		{Remote: 7, From: at(0), To: at(8 * time.Minute), PerSec: 30},
	}
	res := run(t, tr, nil, 10*time.Second)
	dtest.Golden(t, "resets", res)
	got := spans(res)
	if len(got) != 2 {
		t.Fatalf("want 2 storms, got %v", got)
	}
	for _, id := range []string{"reason=reset,remote=*:8080,", "reason=reset,remote=10.1.0.3:5432,"} {
		if _, ok := got[id]; !ok {
			t.Errorf("no storm %s: %v", id, got)
		}
	}
}

// Ten minutes of healthy traffic (a refused connect every 40 s, a few
// resets, connects the application cancels quickly) raise nothing; with
// min_failures 1 and no minimum ratio the refused connects do fire.
func TestHealthyTrafficRaisesNothing(t *testing.T) {
	tr := dtest.Healthy(33, 10*time.Minute)
	// A Happy Eyeballs race: 20 connects/s cancelled after 30 ms.
	tr.Down = []dtest.Outage{{Remote: 0, From: dtest.T0, To: dtest.At(10 * time.Minute), Errno: 0, Wait: 30 * time.Millisecond}}
	for _, r := range run(t, tr, nil, time.Second) {
		if len(r.Conditions) > 0 {
			t.Fatalf("healthy traffic raised at %v: %s", r.Now, r.Conditions[0].Summary)
		}
	}
	res := run(t, tr, func(c *Config) { c.MinFailures, c.MinRatio = 1, 0 }, time.Second)
	if _, ok := spans(res)["reason=refused,remote=10.4.0.1:9999,"]; !ok {
		t.Fatal("the occasional refused connect is not seen at all")
	}
}

// 100k distinct remotes refusing once each: endpoints stay at max_keys,
// evictions are counted, nothing fires (one failure each).
func TestBoundedState(t *testing.T) {
	d := newInstance(t, func(c *Config) { c.MaxKeys = 1000 })
	b := &eventpb.Batch{}
	for i := range 100000 {
		sk := dtest.Sock{ID: uint64(i + 1), Pid: 200, Comm: "scanner", Local: "10.0.0.10:40000",
			Peer: fmt.Sprintf("10.%d.%d.%d:22", 20+i/65536, i/256%256, i%256), Side: eventpb.Side_SIDE_CLIENT}
		e := sk.Event(dtest.At(time.Duration(i)*100*time.Microsecond), eventpb.EventType_EVENT_TYPE_CONNECT_FAILED)
		e.Error = 111
		b.Events = append(b.Events, e)
	}
	d.Observe(detect.Input{Host: dtest.Host, Kind: wire.KindError, Batch: b})
	if n := d.keys.Len(); n > 1000 {
		t.Fatalf("%d endpoints tracked, max 1000", n)
	}
	if ev := d.Stats().Evicted; ev != 99000 {
		t.Errorf("evicted %d, want 99000", ev)
	}
	if c := d.Evaluate(dtest.At(10 * time.Second)); len(c) != 0 {
		t.Errorf("one failure per endpoint fired: %s", c[0].Summary)
	}
}

func TestClassify(t *testing.T) {
	d := newInstance(t, nil)
	for _, c := range []struct {
		errno  int32
		waited time.Duration
		want   string
	}{
		{111, 0, "refused"}, {110, 127 * time.Second, "timeout"}, {113, time.Second, "unreachable"},
		{101, 0, "unreachable"}, {0, 3 * time.Second, "timeout"}, {0, 50 * time.Millisecond, "ignored"},
		{104, 0, "error"},
	} {
		r, ok := d.classify(c.errno, uint64(c.waited.Microseconds()))
		got := "ignored"
		if ok {
			got = reasonNames[r]
		}
		if got != c.want {
			t.Errorf("classify(%d, %s) = %s, want %s", c.errno, c.waited, got, c.want)
		}
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
		{func(c *Config) { c.MinFailures = 0 }, "min_failures:"},
		{func(c *Config) { c.MinRatio = 2 }, "min_ratio:"},
		{func(c *Config) { c.CriticalRatio = -1 }, "critical_ratio:"},
		{func(c *Config) { c.MinAbortAge = -1 }, "min_abort_age:"},
		{func(c *Config) { c.MinResets = 0 }, "min_resets:"},
		{func(c *Config) { c.ResetFactor = 0 }, "reset_factor:"},
		{func(c *Config) { c.BaselineWindows = 0 }, "baseline_windows:"},
		{func(c *Config) { c.BaselineAlpha = 0 }, "baseline_alpha:"},
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
