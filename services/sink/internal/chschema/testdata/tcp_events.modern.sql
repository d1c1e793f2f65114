-- One row per kernel event (kinds state, retransmit, reset, error).
-- Partitions are UTC days: the sink computes each row's partition in Go so
-- that one INSERT is one partition and one atomic part. ORDER BY (host, type,
-- time): queries select a host and an event type over a time range; the
-- low-cardinality keys first also make the runs that compress best.
CREATE TABLE IF NOT EXISTS netpulse.tcp_events
(
    time                  DateTime64(9, 'UTC') CODEC(Delta, ZSTD(1)),
    time_ns               UInt64 CODEC(Delta, ZSTD(1)),
    host                  LowCardinality(String) CODEC(ZSTD(1)),
    type                  LowCardinality(String) CODEC(ZSTD(1)),
    pid                   UInt32 CODEC(T64, ZSTD(1)),
    tid                   UInt32 CODEC(T64, ZSTD(1)),
    comm                  LowCardinality(String) CODEC(ZSTD(1)),
    family                Enum8('unknown' = 0, 'ipv4' = 4, 'ipv6' = 6),
    saddr                 String CODEC(ZSTD(1)),
    sport                 UInt16 CODEC(T64, ZSTD(1)),
    daddr                 String CODEC(ZSTD(1)),
    dport                 UInt16 CODEC(T64, ZSTD(1)),
    old_state             Enum8('UNKNOWN' = 0, 'ESTABLISHED' = 1, 'SYN_SENT' = 2, 'SYN_RECV' = 3, 'FIN_WAIT1' = 4, 'FIN_WAIT2' = 5, 'TIME_WAIT' = 6, 'CLOSE' = 7, 'CLOSE_WAIT' = 8, 'LAST_ACK' = 9, 'LISTEN' = 10, 'CLOSING' = 11, 'NEW_SYN_RECV' = 12),
    new_state             Enum8('UNKNOWN' = 0, 'ESTABLISHED' = 1, 'SYN_SENT' = 2, 'SYN_RECV' = 3, 'FIN_WAIT1' = 4, 'FIN_WAIT2' = 5, 'TIME_WAIT' = 6, 'CLOSE' = 7, 'CLOSE_WAIT' = 8, 'LAST_ACK' = 9, 'LISTEN' = 10, 'CLOSING' = 11, 'NEW_SYN_RECV' = 12),
    state_duration_us     UInt64 CODEC(T64, ZSTD(1)),
    sock_id               UInt64 CODEC(ZSTD(1)),
    owner_source          Enum8('unknown' = 0, 'task' = 1, 'socket' = 2, 'listener' = 3, 'scan' = 4),
    cgroup_id             UInt64 CODEC(T64, ZSTD(1)),
    error                 Int32 CODEC(T64, ZSTD(1)),
    handshake_us          UInt64 CODEC(T64, ZSTD(1)),
    handshake_retransmits UInt32 CODEC(T64, ZSTD(1)),
    side                  Enum8('unspecified' = 0, 'client' = 1, 'server' = 2),
    segments              UInt32 CODEC(T64, ZSTD(1)),
    cookie                UInt64 CODEC(ZSTD(1)),
    segs_out              UInt32 CODEC(T64, ZSTD(1)),
    probe_id              LowCardinality(String) CODEC(ZSTD(1)),
    seq                   UInt64 CODEC(Delta, ZSTD(1)),
    stream_seq            UInt64 CODEC(Delta, ZSTD(1))
)
ENGINE = MergeTree
PARTITION BY toYYYYMMDD(time)
ORDER BY (host, type, time)
TTL toDateTime(time) + INTERVAL 30 DAY;
