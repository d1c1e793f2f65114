package natsutil

import (
	"context"
	"io"
	"log/slog"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/netpulse/netpulse/lib/config"
	"github.com/netpulse/netpulse/lib/eventpb"
	"github.com/netpulse/netpulse/lib/testutil/natstest"
)

func TestSanitizeToken(t *testing.T) {
	tests := []struct{ in, repl, want string }{
		{"web-1", "_", "web-1"},
		{"web-1.prod.example.com", "_", "web-1_prod_example_com"},
		{"a*b>c d\te", "-", "a-b-c-d-e"},
		{"", "_", "unknown"},
		{"häßlich.de", "_", "häßlich_de"},
	}
	for _, tt := range tests {
		if got := SanitizeToken(tt.in, tt.repl); got != tt.want {
			t.Errorf("SanitizeToken(%q, %q) = %q, want %q", tt.in, tt.repl, got, tt.want)
		}
	}
}

func TestSubjects(t *testing.T) {
	if got := EventSubject("web-1", KindState); got != "netpulse.events.web-1.state" {
		t.Errorf("EventSubject = %q", got)
	}
	if got := KindSubjects(KindStats); got != "netpulse.events.*.stats" {
		t.Errorf("KindSubjects = %q", got)
	}
}

// Any service may create or update the stream at start, in any order.
func TestEnsureEventsStreamIsIdempotent(t *testing.T) {
	s := natstest.Start(t)
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	nc, err := Connect(config.DefaultNATS().WithURL(s.ClientURL()), "test", log)
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	js, _ := jetstream.New(nc)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	cfg := config.DefaultStream()
	for i := 0; i < 2; i++ {
		if _, err := EnsureEventsStream(ctx, js, cfg, log); err != nil {
			t.Fatalf("round %d: %v", i, err)
		}
	}
	cfg.MaxAge = 2 * time.Hour // a changed limit is applied in place
	st, err := EnsureEventsStream(ctx, js, cfg, log)
	if err != nil {
		t.Fatal(err)
	}
	info, err := st.Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if info.Config.MaxAge != 2*time.Hour || info.Config.MaxBytes != cfg.MaxBytes || info.Config.Subjects[0] != "netpulse.events.>" {
		t.Errorf("stream config %+v", info.Config)
	}
}

func TestSubjectKindAndKindOf(t *testing.T) {
	for subj, want := range map[string]string{
		"netpulse.events.h1.state":     "state",
		"netpulse.events.h.x.conn":     "conn",
		"netpulse.events.h1":           "",
		"netpulse.alerts.a.b.c":        "",
		"netpulse.events.h1.snapshot":  "snapshot",
		"netpulse.eventsX.h1.snapshot": "",
	} {
		if got := SubjectKind(subj); got != want {
			t.Errorf("SubjectKind(%q) = %q, want %q", subj, got, want)
		}
	}
	for v := range eventpb.EventType_name {
		typ := eventpb.EventType(v)
		if k := KindOf(typ); (k == "") != (typ == eventpb.EventType_EVENT_TYPE_UNSPECIFIED) {
			t.Errorf("KindOf(%s) = %q", typ, k)
		}
	}
}
