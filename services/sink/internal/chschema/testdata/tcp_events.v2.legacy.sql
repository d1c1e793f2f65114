-- tcp_events as the sink created it on 18.16 before segs_out (commit d0666b2's
-- parent), frozen: TestMigrateFromOlderReleases creates it, adds a row and
-- migrates it to the current shape.
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
    probe_id              String,
    seq                   UInt64,
    stream_seq            UInt64
)
ENGINE = MergeTree
PARTITION BY toYYYYMMDD(time)
ORDER BY (host, type, time);
