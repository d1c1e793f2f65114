-- One row per finished connection (kind conn, the proto's Connection):
-- what tcplife prints, and more. time is when it closed. Partitions are UTC
-- days. ORDER BY (host, toStartOfHour(time), comm, daddr, time): the
-- questions asked here are "which process / which remote had the most
-- retransmits or bytes in this time range". The hour bucket lets a query
-- over the last hour read only that hour of a day; inside it the rows of one
-- process and remote lie together, so GROUP BY comm or daddr reads long
-- runs, which also compress best.
CREATE TABLE IF NOT EXISTS netpulse.tcp_connections
(
    time                  DateTime('UTC'),
    time_ns               UInt64,
    host                  String,
    pid                   UInt32,
    comm                  String,
    cgroup_id             UInt64,
    owner_source          Enum8('unknown' = 0, 'task' = 1, 'socket' = 2, 'listener' = 3, 'scan' = 4),
    side                  Enum8('unspecified' = 0, 'client' = 1, 'server' = 2),
    family                Enum8('unknown' = 0, 'ipv4' = 4, 'ipv6' = 6),
    saddr                 String,
    sport                 UInt16,
    daddr                 String,
    dport                 UInt16,
    start_time            DateTime('UTC'),
    start_ns              UInt64,
    duration_us           UInt64,
    bytes_sent            UInt64,
    bytes_received        UInt64,
    segments_out          UInt32,
    segments_in           UInt32,
    retransmits           UInt32,
    srtt_us               UInt32,
    handshake_us          UInt64,
    handshake_retransmits UInt32,
    last_state            Enum8('UNKNOWN' = 0, 'ESTABLISHED' = 1, 'SYN_SENT' = 2, 'SYN_RECV' = 3, 'FIN_WAIT1' = 4, 'FIN_WAIT2' = 5, 'TIME_WAIT' = 6, 'CLOSE' = 7, 'CLOSE_WAIT' = 8, 'LAST_ACK' = 9, 'LISTEN' = 10, 'CLOSING' = 11, 'NEW_SYN_RECV' = 12),
    error                 Int32,
    sock_id               UInt64,
    cookie                UInt64,
    probe_id              String,
    seq                   UInt64,
    stream_seq            UInt64
)
ENGINE = MergeTree
PARTITION BY toYYYYMMDD(time)
ORDER BY (host, toStartOfHour(time), comm, daddr, time);
