// Package alert is the alert payload of the public contract: JSON an
// Alertmanager takes as it is, published by the detectors on
// netpulse.alerts.<detector>.<severity>.<host> and stored by the sink.
package alert

import (
	"crypto/sha256"
	"encoding/hex"
	"sort"
	"time"
)

// Status of an alert transition.
type Status string

const (
	Firing   Status = "firing"
	Resolved Status = "resolved"
)

// The labels every alert carries, besides its detector's identity labels:
// what Alertmanager routes on.
const (
	LabelAlertname = "alertname" // the detector
	LabelSeverity  = "severity"
	LabelHost      = "host"
)

// The annotations every alert carries, besides the values that change while
// it lasts.
const (
	AnnotationSummary     = "summary"
	AnnotationDescription = "description"
)

// Alert is one alert transition (or a reminder of a firing alert).
type Alert struct {
	Fingerprint string    `json:"fingerprint"`
	Detector    string    `json:"detector"`
	Status      Status    `json:"status"`
	Severity    string    `json:"severity"`
	Host        string    `json:"host"`
	StartsAt    time.Time `json:"startsAt"`
	// EndsAt is set when Status is resolved.
	EndsAt *time.Time `json:"endsAt,omitempty"`
	// SentAt is when this message was made (the first firing, a reminder or
	// the resolution).
	SentAt time.Time `json:"sentAt"`
	// Labels are alertname, severity, host and the detector's identity
	// labels (see Labels): nothing that changes while the alert lasts.
	Labels map[string]string `json:"labels"`
	// Annotations are summary, description and the values that change while
	// the alert lasts (counts, ages, ratios).
	Annotations map[string]string `json:"annotations"`
	// GeneratorURL links to where the alert can be looked into.
	GeneratorURL string `json:"generatorURL,omitempty"`
	// Value is what was observed, Threshold what it crossed (unit per detector).
	Value     float64 `json:"value"`
	Threshold float64 `json:"threshold"`
	// Evidence: counts, sample sockets or connections.
	Evidence map[string]any `json:"evidence,omitempty"`
	// SQL is a ready ClickHouse query showing the underlying events.
	SQL string `json:"sql,omitempty"`
}

// Summary is the one-line annotation.
func (a *Alert) Summary() string { return a.Annotations[AnnotationSummary] }

// Labels is the label set of an alert of detector at severity on host with
// the given identity labels; the routing labels win over identity labels of
// the same name.
func Labels(detector, severity, host string, identity map[string]string) map[string]string {
	l := make(map[string]string, len(identity)+3)
	for k, v := range identity {
		l[k] = v
	}
	l[LabelAlertname] = detector
	l[LabelSeverity] = severity
	l[LabelHost] = host
	return l
}

// Fingerprint identifies an alert across its life: the detector, the host
// and the identity labels (not the ones whose values change while it lasts).
// 16 hex digits.
func Fingerprint(detector, host string, labels map[string]string) string {
	keys := make([]string, 0, len(labels))
	for k := range labels {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	h := sha256.New()
	write := func(s string) {
		h.Write([]byte(s))
		h.Write([]byte{0}) // separator: "a","bc" must differ from "ab","c"
	}
	write(detector)
	write(host)
	for _, k := range keys {
		write(k)
		write(labels[k])
	}
	return hex.EncodeToString(h.Sum(nil)[:8])
}
