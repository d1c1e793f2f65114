package wire

import (
	"strconv"

	"github.com/netpulse/netpulse/lib/alert"
)

// Message IDs (Nats-Msg-Id): JetStream stores a retried publish once.

// BatchMsgID is the ID of a probe's batch: <probe id>-<kind>-<batch seq>,
// the batch sequence counting per kind from 1 in each probe run.
func BatchMsgID(probeID, kind string, seq uint64) string {
	return probeID + "-" + kind + "-" + strconv.FormatUint(seq, 10)
}

// AlertMsgID is the ID of an alert message: <fingerprint>-<status>-<sentAt
// in Unix ns>, so a retry of the same message is stored once and a later
// transition is never mistaken for it.
func AlertMsgID(a alert.Alert) string {
	return a.Fingerprint + "-" + string(a.Status) + "-" + strconv.FormatInt(a.SentAt.UnixNano(), 10)
}

// DeadLetterMsgID is the ID of a message detector dead-letters:
// <detector>-<its NETPULSE_EVENTS sequence>.
func DeadLetterMsgID(detector string, seq uint64) string {
	return detector + "-" + strconv.FormatUint(seq, 10)
}
