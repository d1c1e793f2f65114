package chwriter

import (
	"encoding/json"
	"errors"
	"fmt"
	"sort"
	"time"

	"github.com/netpulse/netpulse/lib/alert"
)

// AlertMessage is one alert message as the sink stores it: the contract's
// Alert, with its evidence kept as the JSON it came as (decoding it into
// map[string]any and back would reorder keys and round numbers).
type AlertMessage struct {
	alert.Alert
	Evidence json.RawMessage `json:"evidence,omitempty"` // shadows Alert.Evidence
}

// ErrInvalidAlert is wrapped by DecodeAlert's errors for alerts that parse
// but lack what the contract requires.
var ErrInvalidAlert = errors.New("invalid alert")

// DecodeAlert parses an alert message and checks what the table needs:
// fingerprint, detector, status firing or resolved, and sentAt (the
// partition key).
func DecodeAlert(data []byte) (*AlertMessage, error) {
	var a AlertMessage
	if err := json.Unmarshal(data, &a); err != nil {
		return nil, err
	}
	switch {
	case a.Fingerprint == "":
		return nil, fmt.Errorf("%w: no fingerprint", ErrInvalidAlert)
	case a.Detector == "":
		return nil, fmt.Errorf("%w: no detector", ErrInvalidAlert)
	case a.Status != alert.Firing && a.Status != alert.Resolved:
		return nil, fmt.Errorf("%w: status %q is neither %s nor %s", ErrInvalidAlert, a.Status, alert.Firing, alert.Resolved)
	case a.SentAt.IsZero():
		return nil, fmt.Errorf("%w: no sentAt", ErrInvalidAlert)
	case badTime(a.SentAt):
		return nil, fmt.Errorf("%w: sentAt %s out of range", ErrInvalidAlert, a.SentAt)
	case badTime(a.StartsAt):
		return nil, fmt.Errorf("%w: startsAt %s missing or out of range", ErrInvalidAlert, a.StartsAt)
	case a.EndsAt != nil && badTime(*a.EndsAt):
		return nil, fmt.Errorf("%w: endsAt %s out of range", ErrInvalidAlert, *a.EndsAt)
	}
	return &a, nil
}

// alertRows are alerts rows.
type alertRows struct {
	bufState
	sentAt, startsAt                              []time.Time
	endsAt                                        []*time.Time
	fingerprint, detector, status, severity, host []string
	labelNames, labelValues                       [][]string
	annotationNames, annotationValues             [][]string
	summary, description, evidence, sql           []string
	generatorURL                                  []string
	value, threshold                              []float64
	sSeq                                          []uint64
}

func (r *alertRows) add(streamSeq uint64, a *AlertMessage) {
	r.sentAt = append(r.sentAt, a.SentAt.UTC())
	r.fingerprint = append(r.fingerprint, a.Fingerprint)
	r.detector = append(r.detector, a.Detector)
	r.status = append(r.status, string(a.Status))
	r.severity = append(r.severity, a.Severity)
	r.host = append(r.host, a.Host)
	r.startsAt = append(r.startsAt, a.StartsAt.UTC())
	var ends *time.Time
	if a.EndsAt != nil && !a.EndsAt.IsZero() {
		t := a.EndsAt.UTC()
		ends = &t
	}
	r.endsAt = append(r.endsAt, ends)
	names, values := sortedPairs(a.Labels)
	r.labelNames = append(r.labelNames, names)
	r.labelValues = append(r.labelValues, values)
	names, values = sortedPairs(a.Annotations)
	r.annotationNames = append(r.annotationNames, names)
	r.annotationValues = append(r.annotationValues, values)
	r.summary = append(r.summary, a.Annotations[alert.AnnotationSummary])
	r.description = append(r.description, a.Annotations[alert.AnnotationDescription])
	r.generatorURL = append(r.generatorURL, a.GeneratorURL)
	r.value = append(r.value, a.Value)
	r.threshold = append(r.threshold, a.Threshold)
	ev := ""
	if len(a.Evidence) > 0 && string(a.Evidence) != "null" {
		ev = string(a.Evidence)
	}
	r.evidence = append(r.evidence, ev)
	r.sql = append(r.sql, a.SQL)
	r.sSeq = append(r.sSeq, streamSeq)
	r.added(streamSeq)
}

func (r *alertRows) values() []any {
	return []any{
		r.sentAt, r.fingerprint, r.detector, r.status, r.severity, r.host, r.startsAt, r.endsAt,
		r.labelNames, r.labelValues, r.summary, r.description, r.value, r.threshold,
		r.evidence, r.sql, r.sSeq, r.annotationNames, r.annotationValues, r.generatorURL,
	}
}

// sortedPairs is m as parallel arrays sorted by name (18.16 has no Map).
func sortedPairs(m map[string]string) (names, values []string) {
	names = make([]string, 0, len(m))
	for k := range m {
		names = append(names, k)
	}
	sort.Strings(names)
	values = make([]string, len(names))
	for i, k := range names {
		values[i] = m[k]
	}
	return names, values
}

func (r *alertRows) reset() {
	r.resetState()
	r.sentAt, r.startsAt, r.endsAt = r.sentAt[:0], r.startsAt[:0], r.endsAt[:0]
	r.fingerprint, r.detector, r.status, r.severity, r.host = r.fingerprint[:0], r.detector[:0], r.status[:0], r.severity[:0], r.host[:0]
	r.labelNames, r.labelValues = r.labelNames[:0], r.labelValues[:0]
	r.annotationNames, r.annotationValues, r.generatorURL = r.annotationNames[:0], r.annotationValues[:0], r.generatorURL[:0]
	r.summary, r.description, r.evidence, r.sql = r.summary[:0], r.description[:0], r.evidence[:0], r.sql[:0]
	r.value, r.threshold, r.sSeq = r.value[:0], r.threshold[:0], r.sSeq[:0]
}
