// Package wire is the wire contract of netpulse in one place: the streams
// and subjects (built and parsed), the event kinds, the names of the enums as
// ClickHouse and alert labels show them, the message IDs, and the one decode
// of an event batch that every reader runs. The probe writes what it says,
// the sink and the detectors read it; none of them derives these facts again.
//
// The payloads themselves are eventpb (raw events, protobuf) and alert (the
// alert JSON).
package wire

import (
	"strings"
)

// Streams and the subjects they hold.
const (
	// EventsStream holds every raw event: netpulse.events.<host>.<kind>.
	EventsStream = "NETPULSE_EVENTS"
	EventsPrefix = "netpulse.events"
	// AlertsStream holds every alert transition:
	// netpulse.alerts.<detector>.<severity>.<host>.
	AlertsStream = "NETPULSE_ALERTS"
	AlertsPrefix = "netpulse.alerts"
	// DeadLetterStream holds the messages a service could not use, with
	// the reason in HeaderReason: netpulse.deadletter.<service>.<name>.
	DeadLetterStream = "NETPULSE_DEADLETTER"
	DeadLetterPrefix = "netpulse.deadletter"
)

// Headers of a dead-lettered message.
const (
	HeaderReason    = "Netpulse-Reason"     // why it was not used
	HeaderSubject   = "Netpulse-Subject"    // the subject it came on
	HeaderStreamSeq = "Netpulse-Stream-Seq" // its NETPULSE_EVENTS sequence
	HeaderDetector  = "Netpulse-Detector"   // the detector that refused it
)

// EventSubject is the subject of events of kind from host.
func EventSubject(host, kind string) string {
	return EventsPrefix + "." + host + "." + kind
}

// KindSubjects matches the events of kind from every host.
func KindSubjects(kind string) string { return EventSubject("*", kind) }

// ParseEventSubject splits netpulse.events.<host>.<kind>; ok is false for
// any other subject.
func ParseEventSubject(s string) (host, kind string, ok bool) {
	rest, ok := strings.CutPrefix(s, EventsPrefix+".")
	if !ok {
		return "", "", false
	}
	host, kind, ok = strings.Cut(rest, ".")
	if !ok || host == "" || kind == "" || strings.Contains(kind, ".") {
		return "", "", false
	}
	return host, kind, true
}

// AlertSubject is the subject of an alert.
func AlertSubject(detector, severity, host string) string {
	return AlertsPrefix + "." + detector + "." + severity + "." + host
}

// AllAlerts matches every alert subject.
const AllAlerts = AlertsPrefix + ".>"

// DetectorDeadLetterSubject is where detector name moves what it cannot use.
func DetectorDeadLetterSubject(detector string) string {
	return DeadLetterPrefix + ".detector." + detector
}

// SanitizeToken makes name usable as one subject token (a host name, say):
// characters a token cannot hold ('.', '*', '>', white space, control
// characters) become repl. An empty name becomes "unknown".
func SanitizeToken(name, repl string) string {
	var b strings.Builder
	for _, r := range name {
		if r == '.' || r == '*' || r == '>' || r <= ' ' || r == 0x7f {
			b.WriteString(repl)
			continue
		}
		b.WriteRune(r)
	}
	if b.Len() == 0 {
		return "unknown"
	}
	return b.String()
}
