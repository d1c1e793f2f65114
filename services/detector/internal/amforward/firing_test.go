package amforward

import (
	"testing"
	"time"

	"github.com/netpulse/netpulse/lib/alert"
)

// A re-send never revives what the stream said ended, whichever of the
// bucket's watcher and the stream is late; a severity change's new firing
// (sent at the same instant as the old one's end) stays.
func TestFiringSetOrder(t *testing.T) {
	t0 := time.Date(2026, 12, 3, 12, 0, 0, 0, time.UTC)
	fire := func(sev string, at time.Time) *alert.Alert {
		return &alert.Alert{Fingerprint: "f1", Status: alert.Firing, Severity: sev, SentAt: at}
	}
	end := func(sev string, at time.Time) *alert.Alert {
		a := fire(sev, at)
		a.Status = alert.Resolved
		return a
	}
	s := newFiringSet()
	s.stored("k", fire("warning", t0))
	s.resolved(end("warning", t0.Add(time.Second))) // stream first
	if s.len() != 0 {
		t.Fatal("resolved on the stream, still re-sent")
	}
	s.stored("k", fire("warning", t0)) // the watcher, late, delivers the old record
	if s.len() != 0 {
		t.Fatal("a late bucket update revived a resolved alert")
	}
	s.stored("k", fire("critical", t0.Add(time.Second))) // severity change at the same instant
	if got := s.snapshot(); len(got) != 1 || got[0].Severity != "critical" {
		t.Fatalf("after a severity change: %v, want the critical alert", got)
	}
	s.stored("k", fire("warning", t0.Add(2*time.Second))) // fires again later under warning
	if got := s.snapshot(); len(got) != 1 || got[0].Severity != "warning" {
		t.Fatalf("a later firing: %v", got)
	}
	s.stored("k", nil) // deleted
	if s.len() != 0 {
		t.Fatal("deleted record still re-sent")
	}
	s.prune(t0.Add(time.Hour))
	if len(s.ended) != 0 {
		t.Error("prune kept old resolutions")
	}
}
