-- One row per kernel event (kinds state, retransmit, reset, error).
-- Partitions are UTC days: the sink computes each row's partition in Go so
-- that one INSERT is one partition and one atomic part. ORDER BY (host, type,
-- time): queries select a host and an event type over a time range; the
-- low-cardinality keys first also make the runs that compress best.
CREATE TABLE IF NOT EXISTS netpulse.tcp_events
(
    time                  DateTime('UTC'),
    time_ns               UInt64,
    host                  String,
    type                  String,
    pid                   UInt32,
    tid                   UInt32,
    comm                  String,
    family                Enum8('unknown' = 0, 'ipv4' = 4, 'ipv6' = 6),
    saddr                 String,
    sport                 UInt16,
    daddr                 String,
    dport                 UInt16,
    old_state             Enum8('UNKNOWN' = 0, 'ESTABLISHED' = 1, 'SYN_SENT' = 2, 'SYN_RECV' = 3, 'FIN_WAIT1' = 4, 'FIN_WAIT2' = 5, 'TIME_WAIT' = 6, 'CLOSE' = 7, 'CLOSE_WAIT' = 8, 'LAST_ACK' = 9, 'LISTEN' = 10, 'CLOSING' = 11, 'NEW_SYN_RECV' = 12),
    new_state             Enum8('UNKNOWN' = 0, 'ESTABLISHED' = 1, 'SYN_SENT' = 2, 'SYN_RECV' = 3, 'FIN_WAIT1' = 4, 'FIN_WAIT2' = 5, 'TIME_WAIT' = 6, 'CLOSE' = 7, 'CLOSE_WAIT' = 8, 'LAST_ACK' = 9, 'LISTEN' = 10, 'CLOSING' = 11, 'NEW_SYN_RECV' = 12),
    state_duration_us     UInt64,
    sock_id               UInt64,
    owner_source          Enum8('unknown' = 0, 'task' = 1, 'socket' = 2, 'listener' = 3, 'scan' = 4),
    cgroup_id             UInt64,
    error                 Int32,
    handshake_us          UInt64,
    handshake_retransmits UInt32,
    side                  Enum8('unspecified' = 0, 'client' = 1, 'server' = 2),
    segments              UInt32,
    cookie                UInt64,
    segs_out              UInt32,
    probe_id              String,
    seq                   UInt64,
    stream_seq            UInt64
)
ENGINE = MergeTree
PARTITION BY toYYYYMMDD(time)
ORDER BY (host, type, time);
