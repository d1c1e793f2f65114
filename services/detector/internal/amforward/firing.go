package amforward

import (
	"sort"
	"sync"
	"time"

	"github.com/netpulse/netpulse/lib/alert"
)

// firingSet is what fires now, netpulse-wide: the detectors' active-alerts
// bucket as its watcher delivers it, less what the stream already said
// ended (the watcher may lag the stream, and a re-send must never revive
// a resolved alert).
type firingSet struct {
	mu     sync.Mutex
	alerts map[string]alert.Alert // by bucket key
	// ended: the resolutions seen on the stream, by Alertmanager identity,
	// with when they were sent; a record of that identity sent no later is
	// stale.
	ended map[identity]time.Time
}

// identity is what Alertmanager tells alerts apart by: netpulse's
// fingerprint covers the labels but severity.
type identity struct{ fingerprint, severity string }

func identityOf(a *alert.Alert) identity { return identity{a.Fingerprint, a.Severity} }

func newFiringSet() *firingSet {
	return &firingSet{alerts: map[string]alert.Alert{}, ended: map[identity]time.Time{}}
}

// stored takes a bucket update: the record under key now holds a, or the
// key was deleted (a nil a).
func (s *firingSet) stored(key string, a *alert.Alert) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if a == nil || a.Status != alert.Firing {
		delete(s.alerts, key)
		return
	}
	if end, ok := s.ended[identityOf(a)]; ok && !a.SentAt.After(end) {
		return
	}
	s.alerts[key] = *a
}

// resolved takes a resolution read from the stream.
func (s *firingSet) resolved(a *alert.Alert) {
	s.mu.Lock()
	defer s.mu.Unlock()
	id := identityOf(a)
	if a.SentAt.After(s.ended[id]) {
		s.ended[id] = a.SentAt
	}
	for k, f := range s.alerts {
		if identityOf(&f) == id && !f.SentAt.After(a.SentAt) {
			delete(s.alerts, k)
		}
	}
}

// prune forgets resolutions sent before cutoff: by then the watcher has
// long delivered the deletes that follow them.
func (s *firingSet) prune(cutoff time.Time) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for id, t := range s.ended {
		if t.Before(cutoff) {
			delete(s.ended, id)
		}
	}
}

// snapshot is every firing alert, in a stable order.
func (s *firingSet) snapshot() []alert.Alert {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([]alert.Alert, 0, len(s.alerts))
	for _, a := range s.alerts {
		out = append(out, a)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Fingerprint < out[j].Fingerprint })
	return out
}

func (s *firingSet) len() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.alerts)
}
