package chschema

import "github.com/netpulse/netpulse/lib/wire"

// Enum8 value lists: the wire contract's names and numbers, which chwriter
// appends as codes (wire's Code), so the two cannot drift apart.
var (
	familyEnum = wire.Families.Enum8()
	stateEnum  = wire.States.Enum8()
	ownerEnum  = wire.OwnerSources.Enum8()
	sideEnum   = wire.Sides.Enum8()
)

// Codecs: Delta before ZSTD for values that grow along the sort order
// (timestamps, sequences); T64 before ZSTD for integers with a small range
// (ids, ports, durations); ZSTD for strings and other values. Enums keep
// the default LZ4: one byte each, in long runs.
const (
	codecSeq   = "Delta, ZSTD(1)"
	codecSmall = "T64, ZSTD(1)"
	codecZSTD  = "ZSTD(1)"
	lcString   = "LowCardinality(String)"
)

// TCPEvents holds one row per kernel event (see Doc).
var TCPEvents = Table{
	Name: "tcp_events",
	Doc: `One row per kernel event (kinds state, retransmit, reset, error).
Partitions are UTC days: the sink computes each row's partition in Go so
that one INSERT is one partition and one atomic part. ORDER BY (host, type,
time): queries select a host and an event type over a time range; the
low-cardinality keys first also make the runs that compress best.`,
	Columns: []Column{
		{Name: "time", Modern: "DateTime64(9, 'UTC')", Legacy: "DateTime('UTC')", Codec: codecSeq},
		// Unix nanoseconds: exact ordering where time has only seconds.
		{Name: "time_ns", Modern: "UInt64", Codec: codecSeq},
		{Name: "host", Modern: lcString, Legacy: "String", Codec: codecZSTD},
		// state_change, retransmit, synack_retransmit, reset_sent,
		// reset_received, socket_error, connect_failed. A String, not an
		// Enum8: a new event type needs no ALTER.
		{Name: "type", Modern: lcString, Legacy: "String", Codec: codecZSTD},
		{Name: "pid", Modern: "UInt32", Codec: codecSmall},
		{Name: "tid", Modern: "UInt32", Codec: codecSmall},
		{Name: "comm", Modern: lcString, Legacy: "String", Codec: codecZSTD},
		{Name: "family", Modern: familyEnum},
		{Name: "saddr", Modern: "String", Codec: codecZSTD},
		{Name: "sport", Modern: "UInt16", Codec: codecSmall},
		{Name: "daddr", Modern: "String", Codec: codecZSTD},
		{Name: "dport", Modern: "UInt16", Codec: codecSmall},
		{Name: "old_state", Modern: stateEnum},
		{Name: "new_state", Modern: stateEnum},
		{Name: "state_duration_us", Modern: "UInt64", Codec: codecSmall},
		{Name: "sock_id", Modern: "UInt64", Codec: codecZSTD},
		// Where pid/comm come from (the proto's OwnerSource).
		{Name: "owner_source", Modern: ownerEnum},
		{Name: "cgroup_id", Modern: "UInt64", Codec: codecSmall},
		// Positive errno, 0 when none.
		{Name: "error", Modern: "Int32", Codec: codecSmall},
		// On the change to ESTABLISHED.
		{Name: "handshake_us", Modern: "UInt64", Codec: codecSmall},
		{Name: "handshake_retransmits", Modern: "UInt32", Codec: codecSmall},
		{Name: "side", Modern: sideEnum},
		// Retransmitted segments (retransmit, synack_retransmit).
		{Name: "segments", Modern: "UInt32", Codec: codecSmall},
		// Kernel socket cookie, 0 when none.
		{Name: "cookie", Modern: "UInt64", Codec: codecZSTD},
		// retransmit: segments the connection has sent so far, retransmits
		// included (tcp_sock.segs_out); 0 on other types. Between two
		// retransmit rows of one sock_id, its growth is what was sent meanwhile.
		{Name: "segs_out", Modern: "UInt32", Codec: codecSmall},
		{Name: "probe_id", Modern: lcString, Legacy: "String", Codec: codecZSTD},
		// Per probe run.
		{Name: "seq", Modern: "UInt64", Codec: codecSeq},
		// JetStream stream sequence of the message the row came from: the
		// sink's redelivery dedup.
		{Name: "stream_seq", Modern: "UInt64", Codec: codecSeq},
	},
	Engine:     "MergeTree",
	TimeColumn: "time",
	OrderBy:    "(host, type, time)",
	TTLFrom:    "toDateTime(time)",
}
