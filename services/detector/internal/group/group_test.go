package group

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/synadia-io/orbit.go/pcgroups"

	"github.com/netpulse/netpulse/lib/config"
	"github.com/netpulse/netpulse/lib/natsutil"
	"github.com/netpulse/netpulse/lib/testutil/natstest"
	"github.com/netpulse/netpulse/lib/wire"
)

func setup(t *testing.T) (jetstream.JetStream, context.Context) {
	t.Helper()
	s := natstest.Start(t)
	_, js := natstest.Connect(t, s)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	t.Cleanup(cancel)
	if _, err := natsutil.EnsureEventsStream(ctx, js, config.DefaultStream(), slog.New(slog.NewTextHandler(io.Discard, nil))); err != nil {
		t.Fatal(err)
	}
	return js, ctx
}

// Partition must agree with the server's partition() transform: the worker
// a message is routed to and the consumer that receives it are one.
func TestPartitionMatchesTheServer(t *testing.T) {
	js, ctx := setup(t)
	spec := Spec{Name: "t", Kinds: []string{wire.KindState, wire.KindConn}, Partitions: 7}
	if err := Ensure(ctx, js, spec); err != nil {
		t.Fatal(err)
	}
	want := map[string]bool{}
	for i := 0; i < 300; i++ {
		host := fmt.Sprintf("host-%d.x", i*7919)
		host = wire.SanitizeToken(host, "_")
		kind := spec.Kinds[i%2]
		if _, err := js.Publish(ctx, wire.EventSubject(host, kind), nil); err != nil {
			t.Fatal(err)
		}
		want[fmt.Sprintf("%d.%s", Partition(host, 7), wire.EventSubject(host, kind))] = true
	}
	st, err := js.Stream(ctx, StreamName("t"))
	if err != nil {
		t.Fatal(err)
	}
	var got map[string]uint64
	deadline := time.Now().Add(20 * time.Second)
	for len(got) < len(want) && time.Now().Before(deadline) {
		info, err := st.Info(ctx, jetstream.WithSubjectFilter(">"))
		if err != nil {
			t.Fatal(err)
		}
		got = info.State.Subjects
		<-time.After(10 * time.Millisecond) // poll: sourcing is asynchronous
	}
	if len(got) != len(want) {
		t.Fatalf("the group stream holds %d subjects, want %d", len(got), len(want))
	}
	for subj := range got {
		if !want[subj] {
			t.Errorf("server partitioned %s differently", subj)
		}
	}
}

func TestOwnedSplitsEveryPartitionOnce(t *testing.T) {
	for members := 1; members <= 5; members++ {
		var names []string
		for i := 0; i < members; i++ {
			names = append(names, fmt.Sprintf("r%d", i))
		}
		cfg := pcgroups.ElasticConsumerGroupConfig{MaxMembers: 16, Members: names,
			PartitioningFilters: []pcgroups.PartitioningFilter{{Filter: "netpulse.events.*.state", PartitioningWildcards: []int{1}}}}
		count := make([]int, 16)
		for _, n := range names {
			for p, own := range Owned(cfg, n, 16) {
				if own {
					count[p]++
				}
			}
		}
		for p, c := range count {
			if c != 1 {
				t.Errorf("%d members: partition %d owned %d times", members, p, c)
			}
		}
	}
	if slices.Contains(Owned(pcgroups.ElasticConsumerGroupConfig{MaxMembers: 4, Members: []string{"a"}}, "b", 4), true) {
		t.Error("a non-member owns partitions")
	}
}

func TestEnsureRefusesAnotherShape(t *testing.T) {
	js, ctx := setup(t)
	spec := Spec{Name: "t", Kinds: []string{wire.KindState}, Partitions: 4}
	for i := 0; i < 2; i++ { // idempotent
		if err := Ensure(ctx, js, spec); err != nil {
			t.Fatalf("round %d: %v", i, err)
		}
	}
	spec.Partitions = 8
	err := Ensure(ctx, js, spec)
	if !errors.Is(err, ErrMismatch) || !strings.Contains(err.Error(), "group.partitions") {
		t.Errorf("Ensure with other partitions = %v", err)
	}
}

// A replica that stops beating is dropped by the lowest live one, with its
// consumer; one that leaves is gone at once.
func TestMembershipFollowsHeartbeats(t *testing.T) {
	js, ctx := setup(t)
	spec := Spec{Name: "t", Kinds: []string{wire.KindState}, Partitions: 4}
	if err := Ensure(ctx, js, spec); err != nil {
		t.Fatal(err)
	}
	ttl := time.Second
	kv, err := EnsureReplicasBucket(ctx, js, "test-replicas", ttl, 1)
	if err != nil {
		t.Fatal(err)
	}
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	m := func(name string) *Membership {
		return &Membership{JS: js, Replicas: kv, Group: "t", Detector: "d", Member: name, TTL: ttl, Log: log}
	}
	a, b, c := m("a"), m("b"), m("c")
	for _, x := range []*Membership{a, b, c} {
		if err := x.Reconcile(ctx); err != nil {
			t.Fatal(err)
		}
	}
	members := func() []string {
		cfg, err := pcgroups.GetElasticConsumerGroupConfig(ctx, js, wire.EventsStream, "t")
		if err != nil {
			t.Fatal(err)
		}
		s := slices.Clone(cfg.Members)
		slices.Sort(s)
		return s
	}
	if got := members(); !slices.Equal(got, []string{"a", "b", "c"}) {
		t.Fatalf("members %v", got)
	}
	// b stops beating; a and c go on. Within about a TTL b is dropped.
	start := time.Now()
	runCtx, stop := context.WithCancel(ctx)
	done := make(chan struct{}, 2)
	for _, x := range []*Membership{a, c} {
		go func() { x.Run(runCtx); done <- struct{}{} }()
	}
	for !slices.Equal(members(), []string{"a", "c"}) {
		if time.Since(start) > 10*ttl {
			t.Fatalf("b still a member after %s: %v", time.Since(start), members())
		}
		<-time.After(10 * time.Millisecond)
	}
	t.Logf("silent member dropped after %s (ttl %s)", time.Since(start).Round(10*time.Millisecond), ttl)
	stop()
	<-done
	<-done
	c.Leave(ctx)
	if got := members(); !slices.Equal(got, []string{"a"}) {
		t.Errorf("after c left: %v", got)
	}
}
