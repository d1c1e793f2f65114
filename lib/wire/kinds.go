package wire

import "github.com/netpulse/netpulse/lib/eventpb"

// Event kinds: the last token of a raw-event subject.
const (
	KindState      = "state"      // STATE_CHANGE events
	KindRetransmit = "retransmit" // RETRANSMIT and SYNACK_RETRANSMIT events
	KindReset      = "reset"      // RESET_SENT and RESET_RECEIVED events
	KindError      = "error"      // SOCKET_ERROR and CONNECT_FAILED events
	KindConn       = "conn"       // finished connections (Batch.connections)
	KindSnapshot   = "snapshot"   // socket-table snapshots (Batch.snapshot)
	KindDrop       = "drop"       // packet-drop counts per interval (Batch.drops)
	KindStats      = "stats"      // probe counters, JSON
)

// DataKinds are the kinds whose messages are protobuf Batches: every kind
// but stats.
var DataKinds = []string{KindState, KindRetransmit, KindReset, KindError, KindConn, KindSnapshot, KindDrop}

// KindOf is the kind an event of type t is published under; "" for types
// this code does not know.
func KindOf(t eventpb.EventType) string {
	switch t {
	case eventpb.EventType_EVENT_TYPE_STATE_CHANGE:
		return KindState
	case eventpb.EventType_EVENT_TYPE_RETRANSMIT, eventpb.EventType_EVENT_TYPE_SYNACK_RETRANSMIT:
		return KindRetransmit
	case eventpb.EventType_EVENT_TYPE_RESET_SENT, eventpb.EventType_EVENT_TYPE_RESET_RECEIVED:
		return KindReset
	case eventpb.EventType_EVENT_TYPE_SOCKET_ERROR, eventpb.EventType_EVENT_TYPE_CONNECT_FAILED:
		return KindError
	}
	return ""
}

// Records is how many records batch b carries: its events, connections and
// drop counts, and for a snapshot one summary plus its groups, CLOSE_WAIT
// sockets and endpoint groups — the rows the sink makes of it. Consumers
// count their work in these.
func Records(b *eventpb.Batch) int {
	n := len(b.Events) + len(b.Connections) + len(b.Drops)
	if s := b.Snapshot; s != nil {
		n += 1 + len(s.Groups) + len(s.CloseWait) + len(s.Endpoints)
	}
	return n
}
