// Package alert is the alert payload of the public contract: JSON shaped
// like a Prometheus Alertmanager alert, published by the detectors on
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

// Annotations are for humans.
type Annotations struct {
	Summary     string `json:"summary"`
	Description string `json:"description"`
}

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
	SentAt      time.Time         `json:"sentAt"`
	Labels      map[string]string `json:"labels"`
	Annotations Annotations       `json:"annotations"`
	// Value is what was observed, Threshold what it crossed (unit per detector).
	Value     float64 `json:"value"`
	Threshold float64 `json:"threshold"`
	// Evidence: counts, sample sockets or connections.
	Evidence map[string]any `json:"evidence,omitempty"`
	// SQL is a ready ClickHouse query showing the underlying events.
	SQL string `json:"sql,omitempty"`
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
