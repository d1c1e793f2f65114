package chschema

// Row kinds of socket_snapshots.
const rowKindEnum = "Enum8('summary' = 0, 'group' = 1, 'close_wait' = 2, 'endpoint' = 3)"

// SocketSnapshots holds the probe's periodic socket-table snapshots (see Doc).
var SocketSnapshots = Table{
	Name: "socket_snapshots",
	Doc: `The probe's periodic socket-table snapshots (kind snapshot, the
proto's Snapshot), flattened so that plain SQL answers "which process had
the most CLOSE_WAIT sockets in the last hour" and "which CLOSE_WAIT
sockets are older than 10 minutes now". Every row of a snapshot carries
its time, host, probe_id and seq (the snapshot's); row_kind says what
else it holds:
  'summary'    one per snapshot, the whole table: sockets_total,
               groups_cut, close_wait_total, close_wait_cut, seeded, the
               host's tcp_out_segs and tcp_retrans_segs counters (since
               boot), interval_ms; time_wait, fin_wait2 (sockets in
               those states, the probe's network namespace),
               time_wait_entered (since the previous snapshot, every
               namespace), endpoints_cut, endpoints_read, and the
               settings: port_range_low, port_range_high (the ephemeral
               ports), fin_timeout_s, max_tw_buckets, tw_reuse;
               events_seq (the seq of the last event the probe's table
               held: later events have a higher seq).
  'group'      one per SocketGroup (sockets per state, process and local
               port): state, pid, comm, cgroup_id, local_port (0 for
               client sockets), side, count.
  'close_wait' one per listed CLOSE_WAIT socket, oldest first: state
               CLOSE_WAIT, pid, comm, cgroup_id, owner_source, side,
               family, saddr, local_port, daddr, dport, sock_id, cookie,
               age_us, age_estimated, recv_queue, count 1.
  'endpoint'   one per EndpointGroup, the largest first: sockets of one
               local address (saddr) towards one remote endpoint (daddr,
               dport), or for connections this host accepted towards its
               listener local_port from daddr (dport 0): time_wait,
               fin_wait2, live (the table's other sockets there),
               count (their sum: the 4-tuples, i.e. local ports, in use),
               time_wait_entered since the previous snapshot, age_us
               (the oldest FIN_WAIT2's wait), and pid, comm, cgroup_id of
               the process that closes towards it.
Columns a row kind does not use hold their defaults (0, empty, UNKNOWN).
Partitions are UTC days. ORDER BY (host, row_kind, state, time): every
query names a row kind, group queries a state, then a time range. The
latest snapshot of a host is the one with max(time_ns) of its summary
rows.`,
	Columns: []Column{
		{Name: "time", Modern: "DateTime64(9, 'UTC')", Legacy: "DateTime('UTC')", Codec: codecSeq},
		{Name: "time_ns", Modern: "UInt64", Codec: codecSeq},
		{Name: "host", Modern: lcString, Legacy: "String", Codec: codecZSTD},
		{Name: "row_kind", Modern: rowKindEnum},
		{Name: "state", Modern: stateEnum},
		{Name: "pid", Modern: "UInt32", Codec: codecSmall},
		{Name: "comm", Modern: lcString, Legacy: "String", Codec: codecZSTD},
		{Name: "cgroup_id", Modern: "UInt64", Codec: codecSmall},
		{Name: "owner_source", Modern: ownerEnum},
		{Name: "side", Modern: sideEnum},
		{Name: "local_port", Modern: "UInt16", Codec: codecSmall},
		// Sockets the row stands for: the group's size, 1 for a socket.
		{Name: "count", Modern: "UInt32", Codec: codecSmall},
		{Name: "family", Modern: familyEnum},
		{Name: "saddr", Modern: "String", Codec: codecZSTD},
		{Name: "daddr", Modern: "String", Codec: codecZSTD},
		{Name: "dport", Modern: "UInt16", Codec: codecSmall},
		{Name: "sock_id", Modern: "UInt64", Codec: codecZSTD},
		{Name: "cookie", Modern: "UInt64", Codec: codecZSTD},
		// Time in CLOSE_WAIT at the snapshot's time.
		{Name: "age_us", Modern: "UInt64", Codec: codecSmall},
		// 1: the socket predates the probe; age_us is a lower bound.
		{Name: "age_estimated", Modern: "UInt8"},
		{Name: "recv_queue", Modern: "UInt32", Codec: codecSmall},
		{Name: "groups_cut", Modern: "UInt32", Codec: codecSmall},
		{Name: "close_wait_total", Modern: "UInt32", Codec: codecSmall},
		{Name: "close_wait_cut", Modern: "UInt32", Codec: codecSmall},
		{Name: "sockets_total", Modern: "UInt32", Codec: codecSmall},
		{Name: "seeded", Modern: "UInt8"},
		{Name: "tcp_out_segs", Modern: "UInt64", Codec: codecSeq},
		{Name: "tcp_retrans_segs", Modern: "UInt64", Codec: codecSeq},
		{Name: "interval_ms", Modern: "UInt32", Codec: codecSmall},
		{Name: "time_wait", Modern: "UInt32", Codec: codecSmall},
		{Name: "fin_wait2", Modern: "UInt32", Codec: codecSmall},
		{Name: "live", Modern: "UInt32", Codec: codecSmall},
		{Name: "time_wait_entered", Modern: "UInt64", Codec: codecSmall},
		{Name: "endpoints_cut", Modern: "UInt32", Codec: codecSmall},
		{Name: "endpoints_read", Modern: "UInt8"},
		{Name: "port_range_low", Modern: "UInt16", Codec: codecSmall},
		{Name: "port_range_high", Modern: "UInt16", Codec: codecSmall},
		{Name: "fin_timeout_s", Modern: "UInt32", Codec: codecSmall},
		{Name: "max_tw_buckets", Modern: "UInt32", Codec: codecSmall},
		{Name: "tw_reuse", Modern: "UInt8"},
		{Name: "events_seq", Modern: "UInt64", Codec: codecSeq},
		{Name: "probe_id", Modern: lcString, Legacy: "String", Codec: codecZSTD},
		// The snapshot's seq (per probe run).
		{Name: "seq", Modern: "UInt64", Codec: codecSeq},
		{Name: "stream_seq", Modern: "UInt64", Codec: codecSeq},
	},
	Engine:     "MergeTree",
	TimeColumn: "time",
	OrderBy:    "(host, row_kind, state, time)",
	TTLFrom:    "toDateTime(time)",
}
