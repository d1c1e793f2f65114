-- The probe's periodic socket-table snapshots (kind snapshot, the
-- proto's Snapshot), flattened so that plain SQL answers "which process had
-- the most CLOSE_WAIT sockets in the last hour" and "which CLOSE_WAIT
-- sockets are older than 10 minutes now". Every row of a snapshot carries
-- its time, host, probe_id and seq (the snapshot's); row_kind says what
-- else it holds:
--   'summary'    one per snapshot, the whole table: sockets_total,
--                groups_cut, close_wait_total, close_wait_cut, seeded, the
--                host's tcp_out_segs and tcp_retrans_segs counters (since
--                boot), interval_ms; time_wait, fin_wait2 (sockets in
--                those states, the probe's network namespace),
--                time_wait_entered (since the previous snapshot, every
--                namespace), endpoints_cut, endpoints_read, and the
--                settings: port_range_low, port_range_high (the ephemeral
--                ports), fin_timeout_s, max_tw_buckets, tw_reuse;
--                events_seq (the seq of the last event the probe's table
--                held: later events have a higher seq).
--   'group'      one per SocketGroup (sockets per state, process and local
--                port): state, pid, comm, cgroup_id, local_port (0 for
--                client sockets), side, count.
--   'close_wait' one per listed CLOSE_WAIT socket, oldest first: state
--                CLOSE_WAIT, pid, comm, cgroup_id, owner_source, side,
--                family, saddr, local_port, daddr, dport, sock_id, cookie,
--                age_us, age_estimated, recv_queue, count 1.
--   'endpoint'   one per EndpointGroup, the largest first: sockets of one
--                local address (saddr) towards one remote endpoint (daddr,
--                dport), or for connections this host accepted towards its
--                listener local_port from daddr (dport 0): time_wait,
--                fin_wait2, live (the table's other sockets there),
--                count (their sum: the 4-tuples, i.e. local ports, in use),
--                time_wait_entered since the previous snapshot, age_us
--                (the oldest FIN_WAIT2's wait), and pid, comm, cgroup_id of
--                the process that closes towards it.
-- Columns a row kind does not use hold their defaults (0, empty, UNKNOWN).
-- Partitions are UTC days. ORDER BY (host, row_kind, state, time): every
-- query names a row kind, group queries a state, then a time range. The
-- latest snapshot of a host is the one with max(time_ns) of its summary
-- rows.
CREATE TABLE IF NOT EXISTS netpulse.socket_snapshots
(
    time              DateTime64(9, 'UTC') CODEC(Delta, ZSTD(1)),
    time_ns           UInt64 CODEC(Delta, ZSTD(1)),
    host              LowCardinality(String) CODEC(ZSTD(1)),
    row_kind          Enum8('summary' = 0, 'group' = 1, 'close_wait' = 2, 'endpoint' = 3),
    state             Enum8('UNKNOWN' = 0, 'ESTABLISHED' = 1, 'SYN_SENT' = 2, 'SYN_RECV' = 3, 'FIN_WAIT1' = 4, 'FIN_WAIT2' = 5, 'TIME_WAIT' = 6, 'CLOSE' = 7, 'CLOSE_WAIT' = 8, 'LAST_ACK' = 9, 'LISTEN' = 10, 'CLOSING' = 11, 'NEW_SYN_RECV' = 12),
    pid               UInt32 CODEC(T64, ZSTD(1)),
    comm              LowCardinality(String) CODEC(ZSTD(1)),
    cgroup_id         UInt64 CODEC(T64, ZSTD(1)),
    owner_source      Enum8('unknown' = 0, 'task' = 1, 'socket' = 2, 'listener' = 3, 'scan' = 4),
    side              Enum8('unspecified' = 0, 'client' = 1, 'server' = 2),
    local_port        UInt16 CODEC(T64, ZSTD(1)),
    count             UInt32 CODEC(T64, ZSTD(1)),
    family            Enum8('unknown' = 0, 'ipv4' = 4, 'ipv6' = 6),
    saddr             String CODEC(ZSTD(1)),
    daddr             String CODEC(ZSTD(1)),
    dport             UInt16 CODEC(T64, ZSTD(1)),
    sock_id           UInt64 CODEC(ZSTD(1)),
    cookie            UInt64 CODEC(ZSTD(1)),
    age_us            UInt64 CODEC(T64, ZSTD(1)),
    age_estimated     UInt8,
    recv_queue        UInt32 CODEC(T64, ZSTD(1)),
    groups_cut        UInt32 CODEC(T64, ZSTD(1)),
    close_wait_total  UInt32 CODEC(T64, ZSTD(1)),
    close_wait_cut    UInt32 CODEC(T64, ZSTD(1)),
    sockets_total     UInt32 CODEC(T64, ZSTD(1)),
    seeded            UInt8,
    tcp_out_segs      UInt64 CODEC(Delta, ZSTD(1)),
    tcp_retrans_segs  UInt64 CODEC(Delta, ZSTD(1)),
    interval_ms       UInt32 CODEC(T64, ZSTD(1)),
    time_wait         UInt32 CODEC(T64, ZSTD(1)),
    fin_wait2         UInt32 CODEC(T64, ZSTD(1)),
    live              UInt32 CODEC(T64, ZSTD(1)),
    time_wait_entered UInt64 CODEC(T64, ZSTD(1)),
    endpoints_cut     UInt32 CODEC(T64, ZSTD(1)),
    endpoints_read    UInt8,
    port_range_low    UInt16 CODEC(T64, ZSTD(1)),
    port_range_high   UInt16 CODEC(T64, ZSTD(1)),
    fin_timeout_s     UInt32 CODEC(T64, ZSTD(1)),
    max_tw_buckets    UInt32 CODEC(T64, ZSTD(1)),
    tw_reuse          UInt8,
    events_seq        UInt64 CODEC(Delta, ZSTD(1)),
    probe_id          LowCardinality(String) CODEC(ZSTD(1)),
    seq               UInt64 CODEC(Delta, ZSTD(1)),
    stream_seq        UInt64 CODEC(Delta, ZSTD(1))
)
ENGINE = MergeTree
PARTITION BY toYYYYMMDD(time)
ORDER BY (host, row_kind, state, time)
TTL toDateTime(time) + INTERVAL 30 DAY;
