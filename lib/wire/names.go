package wire

import (
	"strconv"
	"strings"

	"github.com/netpulse/netpulse/lib/eventpb"
)

// Enum is one contract enum's names as ClickHouse columns (Enum8, by the
// same numbers) and alert labels and evidence show them. A value this code
// does not know has the name and code of 0.
type Enum[E ~int32] struct {
	names []string // by number; "" for numbers not in use
}

func enum[E ~int32](names map[E]string) Enum[E] {
	n := 0
	for v := range names {
		n = max(n, int(v)+1)
	}
	e := Enum[E]{names: make([]string, n)}
	for v, name := range names {
		e.names[v] = name
	}
	return e
}

func (e Enum[E]) known(v E) bool { return v > 0 && int(v) < len(e.names) && e.names[v] != "" }

// Name is v's name, the name of 0 when v is not known.
func (e Enum[E]) Name(v E) string {
	if !e.known(v) {
		return e.names[0]
	}
	return e.names[v]
}

// Code is v's number in a ClickHouse Enum8 column: v, 0 when v is not known.
func (e Enum[E]) Code(v E) int8 {
	if !e.known(v) {
		return 0
	}
	return int8(v)
}

// Enum8 is the ClickHouse type that stores the enum under these names.
func (e Enum[E]) Enum8() string {
	var b strings.Builder
	b.WriteString("Enum8(")
	first := true
	for v, name := range e.names {
		if name == "" {
			continue
		}
		if !first {
			b.WriteString(", ")
		}
		first = false
		b.WriteString("'" + name + "' = " + strconv.Itoa(v))
	}
	b.WriteString(")")
	return b.String()
}

var (
	// EventTypes: tcp_events.type (a String column there).
	EventTypes = enum(map[eventpb.EventType]string{
		eventpb.EventType_EVENT_TYPE_UNSPECIFIED:       "unknown",
		eventpb.EventType_EVENT_TYPE_STATE_CHANGE:      "state_change",
		eventpb.EventType_EVENT_TYPE_RETRANSMIT:        "retransmit",
		eventpb.EventType_EVENT_TYPE_SYNACK_RETRANSMIT: "synack_retransmit",
		eventpb.EventType_EVENT_TYPE_RESET_SENT:        "reset_sent",
		eventpb.EventType_EVENT_TYPE_RESET_RECEIVED:    "reset_received",
		eventpb.EventType_EVENT_TYPE_SOCKET_ERROR:      "socket_error",
		eventpb.EventType_EVENT_TYPE_CONNECT_FAILED:    "connect_failed",
	})
	// States: the kernel's names without TCP_, by the kernel's numbers.
	States = enum(map[eventpb.TcpState]string{
		eventpb.TcpState_TCP_STATE_UNSPECIFIED:  "UNKNOWN",
		eventpb.TcpState_TCP_STATE_ESTABLISHED:  "ESTABLISHED",
		eventpb.TcpState_TCP_STATE_SYN_SENT:     "SYN_SENT",
		eventpb.TcpState_TCP_STATE_SYN_RECV:     "SYN_RECV",
		eventpb.TcpState_TCP_STATE_FIN_WAIT1:    "FIN_WAIT1",
		eventpb.TcpState_TCP_STATE_FIN_WAIT2:    "FIN_WAIT2",
		eventpb.TcpState_TCP_STATE_TIME_WAIT:    "TIME_WAIT",
		eventpb.TcpState_TCP_STATE_CLOSE:        "CLOSE",
		eventpb.TcpState_TCP_STATE_CLOSE_WAIT:   "CLOSE_WAIT",
		eventpb.TcpState_TCP_STATE_LAST_ACK:     "LAST_ACK",
		eventpb.TcpState_TCP_STATE_LISTEN:       "LISTEN",
		eventpb.TcpState_TCP_STATE_CLOSING:      "CLOSING",
		eventpb.TcpState_TCP_STATE_NEW_SYN_RECV: "NEW_SYN_RECV",
	})
	Sides = enum(map[eventpb.Side]string{
		eventpb.Side_SIDE_UNSPECIFIED: "unspecified",
		eventpb.Side_SIDE_CLIENT:      "client",
		eventpb.Side_SIDE_SERVER:      "server",
	})
	OwnerSources = enum(map[eventpb.OwnerSource]string{
		eventpb.OwnerSource_OWNER_SOURCE_UNKNOWN:  "unknown",
		eventpb.OwnerSource_OWNER_SOURCE_TASK:     "task",
		eventpb.OwnerSource_OWNER_SOURCE_SOCKET:   "socket",
		eventpb.OwnerSource_OWNER_SOURCE_LISTENER: "listener",
		eventpb.OwnerSource_OWNER_SOURCE_SCAN:     "scan",
	})
	Families = enum(map[eventpb.Family]string{
		eventpb.Family_FAMILY_UNSPECIFIED: "unknown",
		eventpb.Family_FAMILY_IPV4:        "ipv4",
		eventpb.Family_FAMILY_IPV6:        "ipv6",
	})
	DropSources = enum(map[eventpb.DropSource]string{
		eventpb.DropSource_DROP_SOURCE_UNSPECIFIED: "unspecified",
		eventpb.DropSource_DROP_SOURCE_KFREE_SKB:   "kfree_skb",
		eventpb.DropSource_DROP_SOURCE_LISTENER:    "listener",
	})
)
