package history

import (
	"context"
	"io"
	"log/slog"
	"testing"
	"time"

	"github.com/netpulse/netpulse/lib/config"
	"github.com/netpulse/netpulse/lib/natsutil"
	"github.com/netpulse/netpulse/lib/testutil/natstest"
	"github.com/netpulse/netpulse/lib/wire"
)

func TestReplayAndSeqAt(t *testing.T) {
	s := natstest.Start(t)
	_, js := natstest.Connect(t, s)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if _, err := natsutil.EnsureEventsStream(ctx, js, config.DefaultStream(), slog.New(slog.NewTextHandler(io.Discard, nil))); err != nil {
		t.Fatal(err)
	}
	pub := func(subj, data string) uint64 {
		a, err := js.Publish(ctx, subj, []byte(data))
		if err != nil {
			t.Fatal(err)
		}
		return a.Sequence
	}
	r := Reader{JS: js}
	if m, err := r.LastOf(ctx, "netpulse.events.h1.snapshot"); err != nil || m != nil {
		t.Fatalf("LastOf on an empty subject = %v, %v", m, err)
	}
	pub("netpulse.events.h1.state", "old")
	s1 := pub("netpulse.events.h1.snapshot", "snap1")
	pub("netpulse.events.h2.state", "other host")
	s2 := pub("netpulse.events.h1.state", "a")
	s3 := pub("netpulse.events.h1.retransmit", "b")
	pub("netpulse.events.h1.reset", "kind not asked for")
	s4 := pub("netpulse.events.h1.state", "c")
	old, err := js.Stream(ctx, wire.EventsStream)
	if err != nil {
		t.Fatal(err)
	}
	// The cut-off: the stored time of s1, so the first message is older.
	first, err := old.GetMsg(ctx, s1)
	if err != nil {
		t.Fatal(err)
	}
	since := first.Time

	seq, err := r.SeqAt(ctx, since)
	if err != nil || seq != s1 {
		t.Errorf("SeqAt = %d, %v; want %d", seq, err, s1)
	}
	seq, err = r.SeqAt(ctx, time.Now().Add(time.Hour))
	if err != nil || seq != s4+1 {
		t.Errorf("SeqAt(future) = %d, %v; want %d", seq, err, s4+1)
	}

	subjects := []string{"netpulse.events.h1.state", "netpulse.events.h1.retransmit", "netpulse.events.h1.snapshot"}
	var got []uint64
	if err := r.Replay(ctx, subjects, since, s4, func(m Msg) { got = append(got, m.Seq) }); err != nil {
		t.Fatal(err)
	}
	if want := []uint64{s1, s2, s3}; !equal(got, want) {
		t.Errorf("Replay before %d = %v, want %v", s4, got, want)
	}
	got = nil
	if err := r.Replay(ctx, subjects, since, ^uint64(0), func(m Msg) { got = append(got, m.Seq) }); err != nil {
		t.Fatal(err)
	}
	if want := []uint64{s1, s2, s3, s4}; !equal(got, want) {
		t.Errorf("Replay of everything = %v, want %v", got, want)
	}
	got = nil
	if err := r.Replay(ctx, []string{"netpulse.events.h9.state"}, since, ^uint64(0), func(m Msg) { got = append(got, m.Seq) }); err != nil || len(got) != 0 {
		t.Errorf("Replay of a silent host = %v, %v", got, err)
	}
	m, err := r.LastOf(ctx, "netpulse.events.h1.snapshot")
	if err != nil || m == nil || m.Seq != s1 || string(m.Data) != "snap1" {
		t.Errorf("LastOf = %+v, %v", m, err)
	}
	// The replay consumers are gone.
	info, err := old.Info(ctx)
	if err != nil || info.State.Consumers != 0 {
		t.Errorf("%d consumers left behind (%v)", info.State.Consumers, err)
	}
}

func equal(a, b []uint64) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}
