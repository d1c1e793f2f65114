// Package lifecycle turns what a detector instance says at each evaluation
// (the conditions that hold now) into alert transitions: pending, firing,
// reminders, resolved. It is pure: time comes in as an argument, alerts go
// out as values; publishing is someone else's job.
package lifecycle

import (
	"maps"
	"sort"
	"time"

	"github.com/netpulse/netpulse/lib/alert"
	"github.com/netpulse/netpulse/services/detector/detect"
)

// Settings are one detector's lifecycle rules for one host.
type Settings struct {
	Detector string
	Host     string
	// For is how long a condition must hold before it fires; 0 fires at
	// first sight.
	For time.Duration
	// RepeatInterval re-sends a firing alert this often; 0 never.
	RepeatInterval time.Duration
	// Severity overrides the conditions' severity when set.
	Severity detect.Severity
}

// Tracker follows the alerts of one detector instance (one host).
type Tracker struct {
	s      Settings
	alerts map[string]*entry
}

type entry struct {
	firing bool
	// pendingSince is when the condition was first seen (pending only).
	pendingSince time.Time
	// last is the alert as last built: what a reminder or the resolution
	// repeats when the condition is gone.
	last alert.Alert
	// sentAt is when the last message for this alert was made.
	sentAt time.Time
}

// New makes an empty tracker.
func New(s Settings) *Tracker {
	return &Tracker{s: s, alerts: map[string]*entry{}}
}

// Restore takes over a firing alert that another replica (or an earlier
// run) published: it will not be fired again while its condition holds, and
// it is resolved when the condition is gone.
func (t *Tracker) Restore(a alert.Alert) {
	if a.Status != alert.Firing {
		return
	}
	t.alerts[a.Fingerprint] = &entry{firing: true, last: a, sentAt: a.SentAt}
}

// Counts returns how many alerts are pending and firing.
func (t *Tracker) Counts() (pending, firing int) {
	for _, e := range t.alerts {
		if e.firing {
			firing++
		} else {
			pending++
		}
	}
	return pending, firing
}

// Update takes the conditions that hold at now and returns the messages to
// publish, ordered by fingerprint: a first firing, a reminder or a severity
// change (status firing), or a resolution. A condition listed twice (same
// fingerprint) counts once, the first one winning; dups says how many
// were ignored.
func (t *Tracker) Update(now time.Time, conds []detect.Condition) (out []alert.Alert, dups int) {
	seen := make(map[string]bool, len(conds))
	for i := range conds {
		c := &conds[i]
		fp := alert.Fingerprint(t.s.Detector, t.s.Host, c.Labels)
		if seen[fp] {
			dups++
			continue
		}
		seen[fp] = true
		e, ok := t.alerts[fp]
		if !ok {
			e = &entry{pendingSince: now}
			t.alerts[fp] = e
		}
		a := t.build(fp, c)
		switch {
		case !e.firing:
			if now.Sub(e.pendingSince) < t.s.For {
				continue
			}
			e.firing = true
			a.StartsAt = now
			e.send(&out, a, now)
		case a.Severity != e.last.Severity:
			// Escalation or de-escalation is news: say it now, on the
			// subject of the new severity.
			a.StartsAt = e.last.StartsAt
			e.send(&out, a, now)
		case t.s.RepeatInterval > 0 && now.Sub(e.sentAt) >= t.s.RepeatInterval:
			a.StartsAt = e.last.StartsAt
			e.send(&out, a, now)
		default:
			a.StartsAt = e.last.StartsAt
			a.SentAt = e.last.SentAt
			e.last = a
		}
	}
	for fp, e := range t.alerts {
		if seen[fp] {
			continue
		}
		delete(t.alerts, fp)
		if !e.firing {
			continue // a pending condition that went away never existed for users
		}
		r := e.last
		r.Status = alert.Resolved
		end := now
		r.EndsAt = &end
		r.SentAt = now
		out = append(out, r)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Fingerprint < out[j].Fingerprint })
	return out, dups
}

func (e *entry) send(out *[]alert.Alert, a alert.Alert, now time.Time) {
	a.SentAt = now
	e.last = a
	e.sentAt = now
	*out = append(*out, a)
}

// build makes the firing alert a condition describes, without its times.
func (t *Tracker) build(fp string, c *detect.Condition) alert.Alert {
	sev := c.Severity
	if t.s.Severity != "" {
		sev = t.s.Severity
	}
	if !sev.Valid() {
		sev = detect.Warning
	}
	labels := make(map[string]string, len(c.Labels)+len(c.Details)+3)
	maps.Copy(labels, c.Details)
	maps.Copy(labels, c.Labels) // identity wins over a detail of the same name
	labels["detector"] = t.s.Detector
	labels["host"] = t.s.Host
	labels["severity"] = string(sev)
	return alert.Alert{
		Fingerprint: fp,
		Detector:    t.s.Detector,
		Status:      alert.Firing,
		Severity:    string(sev),
		Host:        t.s.Host,
		Labels:      labels,
		Annotations: alert.Annotations{Summary: c.Summary, Description: c.Description},
		Value:       c.Value,
		Threshold:   c.Threshold,
		Evidence:    c.Evidence,
		SQL:         c.SQL,
	}
}
