package chschema

// TCPConnections holds one row per finished connection (see Doc).
var TCPConnections = Table{
	Name: "tcp_connections",
	Doc: `One row per finished connection (kind conn, the proto's Connection):
what tcplife prints, and more. time is when it closed. Partitions are UTC
days. ORDER BY (host, toStartOfHour(time), comm, daddr, time): the
questions asked here are "which process / which remote had the most
retransmits or bytes in this time range". The hour bucket lets a query
over the last hour read only that hour of a day; inside it the rows of one
process and remote lie together, so GROUP BY comm or daddr reads long
runs, which also compress best.`,
	Columns: []Column{
		// When it closed.
		{Name: "time", Modern: "DateTime64(9, 'UTC')", Legacy: "DateTime('UTC')", Codec: codecSeq},
		{Name: "time_ns", Modern: "UInt64", Codec: codecSeq},
		{Name: "host", Modern: lcString, Legacy: "String", Codec: codecZSTD},
		{Name: "pid", Modern: "UInt32", Codec: codecSmall},
		{Name: "comm", Modern: lcString, Legacy: "String", Codec: codecZSTD},
		{Name: "cgroup_id", Modern: "UInt64", Codec: codecSmall},
		{Name: "owner_source", Modern: ownerEnum},
		// client: this host connected; server: it accepted.
		{Name: "side", Modern: sideEnum},
		{Name: "family", Modern: familyEnum},
		{Name: "saddr", Modern: "String", Codec: codecZSTD},
		{Name: "sport", Modern: "UInt16", Codec: codecSmall},
		{Name: "daddr", Modern: "String", Codec: codecZSTD},
		{Name: "dport", Modern: "UInt16", Codec: codecSmall},
		// When the probe saw it open; 1970-01-01 (start_ns 0) when it is
		// older than the probe.
		{Name: "start_time", Modern: "DateTime64(9, 'UTC')", Legacy: "DateTime('UTC')", Codec: codecSeq},
		{Name: "start_ns", Modern: "UInt64", Codec: codecSeq},
		// From start to close; 0 when the start is unknown.
		{Name: "duration_us", Modern: "UInt64", Codec: codecSmall},
		{Name: "bytes_sent", Modern: "UInt64", Codec: codecSmall},
		{Name: "bytes_received", Modern: "UInt64", Codec: codecSmall},
		{Name: "segments_out", Modern: "UInt32", Codec: codecSmall},
		{Name: "segments_in", Modern: "UInt32", Codec: codecSmall},
		{Name: "retransmits", Modern: "UInt32", Codec: codecSmall},
		{Name: "srtt_us", Modern: "UInt32", Codec: codecSmall},
		{Name: "handshake_us", Modern: "UInt64", Codec: codecSmall},
		{Name: "handshake_retransmits", Modern: "UInt32", Codec: codecSmall},
		// The state it left for CLOSE.
		{Name: "last_state", Modern: stateEnum},
		// sk_err at close (positive errno), 0 when none.
		{Name: "error", Modern: "Int32", Codec: codecSmall},
		{Name: "sock_id", Modern: "UInt64", Codec: codecZSTD},
		{Name: "cookie", Modern: "UInt64", Codec: codecZSTD},
		{Name: "probe_id", Modern: lcString, Legacy: "String", Codec: codecZSTD},
		{Name: "seq", Modern: "UInt64", Codec: codecSeq},
		{Name: "stream_seq", Modern: "UInt64", Codec: codecSeq},
	},
	Engine:     "MergeTree",
	TimeColumn: "time",
	OrderBy:    "(host, toStartOfHour(time), comm, daddr, time)",
	TTLFrom:    "toDateTime(time)",
}
