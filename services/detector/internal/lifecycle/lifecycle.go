// Package lifecycle turns what a detector instance says at each evaluation
// (the conditions that hold now) into alert transitions: pending, firing,
// reminders, resolved. It is pure: time comes in as an argument, alerts go
// out as values; publishing is someone else's job.
package lifecycle

import (
	"maps"
	"net/url"
	"sort"
	"strings"
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
	// GeneratorURL is the alerts' generatorURL with {detector}, {host} and
	// {fingerprint} replaced by their query-escaped values; empty: none.
	GeneratorURL string
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
			// subject of the new severity. severity is a label, so for
			// Alertmanager (and subscribers of one severity's subjects)
			// the alert under the old one ends here.
			out = append(out, resolution(e.last, now))
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
		out = append(out, resolution(e.last, now))
	}
	// Stable: a severity change's resolution stays before its new firing.
	sort.SliceStable(out, func(i, j int) bool { return out[i].Fingerprint < out[j].Fingerprint })
	return out, dups
}

// resolution is the message that ends a, sent at now.
func resolution(a alert.Alert, now time.Time) alert.Alert {
	a.Status = alert.Resolved
	end := now
	a.EndsAt = &end
	a.SentAt = now
	return a
}

func (e *entry) send(out *[]alert.Alert, a alert.Alert, now time.Time) {
	a.SentAt = now
	e.last = a
	e.sentAt = now
	*out = append(*out, a)
}

// build makes the firing alert a condition describes, without its times:
// its identity labels and the routing ones as labels, its details as
// annotations beside the summary and description.
func (t *Tracker) build(fp string, c *detect.Condition) alert.Alert {
	sev := c.Severity
	if t.s.Severity != "" {
		sev = t.s.Severity
	}
	if !sev.Valid() {
		sev = detect.Warning
	}
	ann := make(map[string]string, len(c.Details)+2)
	maps.Copy(ann, c.Details)
	ann[alert.AnnotationSummary] = c.Summary
	ann[alert.AnnotationDescription] = c.Description
	return alert.Alert{
		Fingerprint:  fp,
		Detector:     t.s.Detector,
		Status:       alert.Firing,
		Severity:     string(sev),
		Host:         t.s.Host,
		Labels:       alert.Labels(t.s.Detector, string(sev), t.s.Host, c.Labels),
		Annotations:  ann,
		GeneratorURL: t.generatorURL(fp),
		Value:        c.Value,
		Threshold:    c.Threshold,
		Evidence:     c.Evidence,
		SQL:          c.SQL,
	}
}

func (t *Tracker) generatorURL(fp string) string {
	if t.s.GeneratorURL == "" {
		return ""
	}
	return strings.NewReplacer(
		"{detector}", url.QueryEscape(t.s.Detector),
		"{host}", url.QueryEscape(t.s.Host),
		"{fingerprint}", url.QueryEscape(fp),
	).Replace(t.s.GeneratorURL)
}
