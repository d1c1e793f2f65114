package supervisor

import (
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"sort"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/synadia-io/orbit.go/pcgroups"

	"github.com/netpulse/netpulse/lib/alert"
	"github.com/netpulse/netpulse/lib/eventpb"
	"github.com/netpulse/netpulse/lib/testutil/natstest"
	"github.com/netpulse/netpulse/lib/wire"
	"github.com/netpulse/netpulse/services/detector/internal/group"
)

// Three replicas of one detector share many hosts; one is killed mid-stream
// (its connection closed, nothing cleaned up). Every host is handled by one
// replica at a time, in order, nothing is lost, the dead replica's
// partitions move to the others, and each alert arrives exactly once.
func TestScalingAndTakeover(t *testing.T) {
	if testing.Short() {
		t.Skip("takes ~15 s")
	}
	ns := natstest.Start(t)
	_, js := natstest.Connect(t, ns)
	ctx, cancel := context.WithTimeout(context.Background(), 120*time.Second)
	defer cancel()

	const (
		hosts    = 24
		batches  = 150
		interval = 60 * time.Millisecond
		killAt   = 50 // round
	)
	rec := &recorder{}
	replicas := []string{"r1", "r2", "r3"}
	ds := map[string]*crashable{}
	for _, name := range replicas {
		reg := markerRegistry(t, name, rec)
		cfg := testConfig(t, reg, ns, name)
		d, err := newCrashable(cfg, reg, quietLog())
		if err != nil {
			t.Fatal(err)
		}
		ds[name] = d
		runCtx, stop := context.WithCancel(context.Background())
		done := make(chan error, 1)
		go func() { done <- d.Run(runCtx) }()
		t.Cleanup(func() { stop(); <-done })
	}
	partitions := testConfig(t, markerRegistry(t, "x", nil), ns, "x").Group.Partitions
	owned := func(name string) int64 { return ds[name].Counters("marker").Partitions.Load() }
	waitFor(t, ctx, "three replicas sharing the partitions", func() bool {
		return owned("r1") > 0 && owned("r2") > 0 && owned("r3") > 0 && owned("r1")+owned("r2")+owned("r3") == int64(partitions)
	})
	before := map[string]int64{"r1": owned("r1"), "r2": owned("r2"), "r3": owned("r3")}
	stream := group.StreamName("netpulse-detector-marker")
	waitFor(t, ctx, "every replica's group consumer", func() bool {
		for _, name := range replicas {
			if _, err := js.Consumer(ctx, stream, name); err != nil {
				return false
			}
		}
		return true
	})

	// Synthetic probes: every round, one batch per host. Each host raises
	// marker 1 (cleared later), marker 2 (cleared later) and marker 3 (left
	// firing): five alert messages per host.
	var killed time.Time
	for round := uint64(1); round <= batches; round++ {
		for h := 0; h < hosts; h++ {
			host := fmt.Sprintf("host-%02d", h)
			ev := []*eventpb.Event{event(1, 0)}
			switch round {
			case uint64(10 + h%5):
				ev = append(ev, event(666, 1))
			case 60:
				ev = append(ev, event(667, 1))
			case 90:
				ev = append(ev, event(666, 2))
			case 130:
				ev = append(ev, event(667, 2))
			case 140:
				ev = append(ev, event(666, 3))
			}
			publish(t, ctx, js, wire.EventSubject(host, wire.KindState), batch(host, round, ev...))
		}
		if round == killAt {
			waitFor(t, ctx, "r2 at work", func() bool { return ds["r2"].Counters("marker").Messages.Load() > 0 })
			rec.kill("r2")
			killed = time.Now()
			ds["r2"].crash()
		}
		<-time.After(interval) // the probes' pace
	}

	// Every host's last batch observed live.
	waitFor(t, ctx, "every host's last batch", func() bool {
		last := map[string]bool{}
		for _, o := range rec.snapshot() {
			if !o.replay && o.batchSeq == batches {
				last[o.host] = true
			}
		}
		return len(last) == hosts
	})

	// The alerts: 5 per host in NETPULSE_ALERTS, each exactly once.
	want := hosts * 5
	cons, err := js.OrderedConsumer(ctx, wire.AlertsStream, jetstream.OrderedConsumerConfig{FilterSubjects: []string{"netpulse.alerts.>"}})
	if err != nil {
		t.Fatal(err)
	}
	seen := map[string]int{}
	var got []alert.Alert
	// Collect until all arrived (and a second more, for a late duplicate to
	// show), or 30 s.
	var complete time.Time
	for deadline := time.Now().Add(30 * time.Second); time.Now().Before(deadline); {
		batch, err := cons.FetchNoWait(500)
		if err != nil {
			t.Fatal(err)
		}
		for m := range batch.Messages() {
			var a alert.Alert
			if err := json.Unmarshal(m.Data(), &a); err != nil {
				t.Fatal(err)
			}
			got = append(got, a)
			seen[fmt.Sprintf("%s %s %s", a.Host, a.Labels["marker"], a.Status)]++
		}
		if len(got) >= want && complete.IsZero() {
			complete = time.Now()
		}
		if !complete.IsZero() && time.Since(complete) > time.Second {
			break
		}
		<-time.After(20 * time.Millisecond)
	}
	if len(got) != want {
		t.Errorf("%d alert messages stored, want %d", len(got), want)
	}
	for h := 0; h < hosts; h++ {
		host := fmt.Sprintf("host-%02d", h)
		for _, k := range []string{"1 firing", "1 resolved", "2 firing", "2 resolved", "3 firing"} {
			if n := seen[host+" "+k]; n != 1 {
				t.Errorf("%s marker %s: %d messages, want 1", host, k, n)
			}
		}
	}

	// One replica at a time per host, in order, nothing lost. A new owner
	// observes what it missed by replay (Replay set) before going live.
	obs := rec.snapshot()
	byHost := map[string][]observation{}
	replayed := map[string]bool{} // host, replica, batch
	seenAny := map[string]bool{}  // host, batch
	for _, o := range obs {
		seenAny[fmt.Sprint(o.host, o.batchSeq)] = true
		if o.replay {
			replayed[fmt.Sprint(o.host, o.replica, o.batchSeq)] = true
			continue
		}
		byHost[o.host] = append(byHost[o.host], o)
	}
	moved := 0
	for host, list := range byHost {
		var runs []observation // first observation of each run
		var lasts []uint64
		for i, o := range list {
			if i == 0 || o.replica != list[i-1].replica {
				runs = append(runs, o)
				lasts = append(lasts, o.batchSeq)
				continue
			}
			if o.batchSeq <= lasts[len(lasts)-1] {
				t.Errorf("%s: %s observed batch %d after %d", host, o.replica, o.batchSeq, lasts[len(lasts)-1])
			}
			lasts[len(lasts)-1] = o.batchSeq
		}
		var who []string
		for i, r := range runs {
			if slices.Contains(who, r.replica) {
				t.Errorf("%s: handled by %s again after another replica: runs %v", host, r.replica, runs)
			}
			who = append(who, r.replica)
			if i == 0 {
				continue
			}
			for s := lasts[i-1] + 1; s < r.batchSeq; s++ {
				if !replayed[fmt.Sprint(host, r.replica, s)] {
					t.Errorf("%s: batch %d, between %s and %s, neither live nor replayed by the new owner", host, s, runs[i-1].replica, r.replica)
				}
			}
		}
		if len(runs) > 1 {
			moved++
		}
		if len(runs) > 2 {
			t.Errorf("%s moved %d times, want at most once", host, len(runs)-1)
		}
		for s := uint64(1); s <= batches; s++ {
			if !seenAny[fmt.Sprint(host, s)] {
				t.Errorf("%s: batch %d never observed", host, s)
			}
		}
	}
	if moved == 0 {
		t.Error("no host moved: the kill did not hit anything")
	}

	// The dead replica is out of the group, its consumer gone, its
	// partitions with the others.
	waitFor(t, ctx, "the partitions to move", func() bool { return owned("r1")+owned("r3") == int64(partitions) })
	cfg, err := pcgroups.GetElasticConsumerGroupConfig(ctx, js, wire.EventsStream, "netpulse-detector-marker")
	if err != nil {
		t.Fatal(err)
	}
	members := slices.Sorted(slices.Values(cfg.Members))
	if !slices.Equal(members, []string{"r1", "r3"}) {
		t.Errorf("members after the kill %v", members)
	}
	if _, err := js.Consumer(ctx, stream, "r2"); err == nil {
		t.Error("the dead replica's consumer is still there")
	}
	// Failover: how long the moved hosts waited for their new owner.
	var waits []time.Duration
	for _, list := range byHost {
		for i := 1; i < len(list); i++ {
			if list[i].replica != list[i-1].replica {
				waits = append(waits, list[i].at.Sub(killed))
			}
		}
	}
	sort.Slice(waits, func(i, j int) bool { return waits[i] < waits[j] })
	if len(waits) > 0 {
		t.Logf("partitions before the kill %v; %d of %d hosts moved; new owner's first batch after the kill: min %s, median %s, max %s",
			before, moved, hosts, waits[0].Round(time.Millisecond), waits[len(waits)/2].Round(time.Millisecond), waits[len(waits)-1].Round(time.Millisecond))
	}
	for _, name := range []string{"r1", "r3"} {
		c := ds[name].Counters("marker")
		t.Logf("%s: messages %d, replayed %d, duplicates %d, takeovers %d, fired %d, resolved %d, hosts %d, partitions %d", name,
			c.Messages.Load(), c.Replayed.Load(), c.Duplicates.Load(), c.Takeovers.Load(), c.Fired.Load(), c.Resolved.Load(), c.Hosts.Load(), c.Partitions.Load())
	}
}
