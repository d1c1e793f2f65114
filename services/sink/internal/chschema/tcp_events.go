package chschema

// Enum8 value lists shared with the insert code's codes (chwriter appends
// the numbers, not the names).
const (
	familyEnum = "Enum8('unknown' = 0, 'ipv4' = 4, 'ipv6' = 6)"
	stateEnum  = "Enum8('UNKNOWN' = 0, 'ESTABLISHED' = 1, 'SYN_SENT' = 2, 'SYN_RECV' = 3, " +
		"'FIN_WAIT1' = 4, 'FIN_WAIT2' = 5, 'TIME_WAIT' = 6, 'CLOSE' = 7, 'CLOSE_WAIT' = 8, " +
		"'LAST_ACK' = 9, 'LISTEN' = 10, 'CLOSING' = 11, 'NEW_SYN_RECV' = 12)"
	// The contract's OwnerSource and Side, numbered like the proto enums.
	ownerEnum = "Enum8('unknown' = 0, 'task' = 1, 'socket' = 2, 'listener' = 3, 'scan' = 4)"
	sideEnum  = "Enum8('unspecified' = 0, 'client' = 1, 'server' = 2)"
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
