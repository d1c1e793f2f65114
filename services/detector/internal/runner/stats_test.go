package runner

import (
	"bytes"
	"context"
	"log/slog"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/netpulse/netpulse/services/detector/detect"
	"github.com/netpulse/netpulse/services/detector/internal/clock"
	"github.com/netpulse/netpulse/services/detector/internal/group"
	"github.com/netpulse/netpulse/services/detector/internal/lifecycle"
)

// countingInstance counts the events it observes, as a plugin's Counters.
type countingInstance struct{ events, batches uint64 }

func (c *countingInstance) Observe(in detect.Input) {
	c.events += uint64(len(in.Batch.Events))
	c.batches++
}
func (c *countingInstance) Evaluate(time.Time) []detect.Condition { return nil }
func (c *countingInstance) Counters() map[string]uint64 {
	return map[string]uint64{"events_seen": c.events, "batches_seen": c.batches}
}

// The plugin's counters reach the stats line as <plugin>.<counter>, added
// up over the hosts of every partition, those dropped (a partition that
// moved away) included, while the workers run and after they stopped.
func TestStatsLineCarriesPluginCounters(t *testing.T) {
	var logs bytes.Buffer
	p := detect.Plugin{Name: "counted", Kinds: []string{"state"}, Config: func() any { return &struct{}{} },
		New: func(any, string) (detect.Instance, error) { return &countingInstance{}, nil }}
	r := New(Settings{Plugin: p, Group: group.Spec{Partitions: 4}, EvaluateInterval: time.Hour, IdleTimeout: time.Hour},
		Deps{Clock: clock.Real{}, Log: slog.New(slog.NewTextHandler(&logs, nil))})
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	r.ctx = ctx
	var acked atomic.Uint64
	events := map[string]int{"web-1": 3, "web-2": 5, "db-1": 7, "db-2": 11}
	for host, n := range events {
		part := group.Partition(host, len(r.part))
		r.part[part].Store(1)
		w := r.workers[part]
		w.ctx = ctx
		w.hosts[host] = &hostState{inst: &countingInstance{}, tr: lifecycle.New(lifecycle.Settings{Detector: p.Name, Host: host})}
		for seq := uint64(1); seq <= 2; seq++ {
			w.handle(delivery{msg: &fakeMsg{acked: &acked}, subject: "netpulse.events." + host + ".state", host: host, kind: "state", seq: seq, data: sampleBatch(host, n), state: 1})
		}
	}
	// web-1's partition moves away: its instance is dropped, its counts stay.
	moved := r.workers[group.Partition("web-1", len(r.part))]
	moved.control(control{evict: true})
	if len(moved.hosts) != 0 {
		t.Fatalf("evict left %d hosts", len(moved.hosts))
	}

	want := []string{"counted.batches_seen=8", "counted.events_seen=52"} // 2 batches of each host; 2 x (3+5+7+11) events
	check := func(when string) {
		t.Helper()
		line := logs.String()
		for _, w := range want {
			if !strings.Contains(line, w) {
				t.Errorf("%s: stats line lacks %s:\n%s", when, w, line)
			}
		}
		logs.Reset()
	}
	r.logStats("detector stopped", false)
	check("workers stopped")

	done := make(chan struct{})
	for _, w := range r.workers {
		go func() { w.run(ctx); done <- struct{}{} }()
	}
	r.logStats("detector stats", true)
	check("workers running")
	cancel()
	for range r.workers {
		<-done
	}
}
