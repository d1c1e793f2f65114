package natstest

import (
	"context"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// A three-node cluster holds an R3 stream; killing its leader -9 elects
// another, and the stream keeps every message.
func TestClusterSurvivesLeaderKill(t *testing.T) {
	c := StartCluster(t, 3)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	nc, err := nats.Connect(c.URLs(), nats.MaxReconnects(-1), nats.ReconnectWait(100*time.Millisecond))
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	js, _ := jetstream.New(nc)
	if _, err := js.CreateStream(ctx, jetstream.StreamConfig{Name: "T", Subjects: []string{"t.>"}, Replicas: 3}); err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 10; i++ {
		if _, err := js.Publish(ctx, "t.a", []byte("x")); err != nil {
			t.Fatal(err)
		}
	}
	leader, err := c.StreamLeader(ctx, "T")
	if err != nil {
		t.Fatal(err)
	}
	leader.Kill()
	for {
		next, err := c.StreamLeader(ctx, "T")
		if err == nil && next != leader {
			break
		}
		select {
		case <-ctx.Done():
			t.Fatalf("no new leader after %s was killed: %v", leader.Name, err)
		case <-time.After(100 * time.Millisecond):
		}
	}
	// Published once acknowledged: a publish during the election may fail
	// and is tried again.
	for {
		if _, err := js.Publish(ctx, "t.a", []byte("y")); err == nil {
			break
		}
		select {
		case <-ctx.Done():
			t.Fatal("no publish accepted after the election")
		case <-time.After(100 * time.Millisecond):
		}
	}
	st, err := js.Stream(ctx, "T")
	if err != nil {
		t.Fatal(err)
	}
	info, err := st.Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if info.State.Msgs != 11 {
		t.Errorf("stream holds %d messages after the leader's death, want 11", info.State.Msgs)
	}
	if err := leader.Start(); err != nil { // it comes back and catches up
		t.Fatal(err)
	}
	if err := leader.WaitJetStream(ctx); err != nil {
		t.Fatal(err)
	}
}
