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
    time                  DateTime64(9, 'UTC') CODEC(Delta, ZSTD(1)),
    time_ns               UInt64 CODEC(Delta, ZSTD(1)),
    host                  LowCardinality(String) CODEC(ZSTD(1)),
    pid                   UInt32 CODEC(T64, ZSTD(1)),
    comm                  LowCardinality(String) CODEC(ZSTD(1)),
    cgroup_id             UInt64 CODEC(T64, ZSTD(1)),
    owner_source          Enum8('unknown' = 0, 'task' = 1, 'socket' = 2, 'listener' = 3, 'scan' = 4),
    side                  Enum8('unspecified' = 0, 'client' = 1, 'server' = 2),
    family                Enum8('unknown' = 0, 'ipv4' = 4, 'ipv6' = 6),
    saddr                 String CODEC(ZSTD(1)),
    sport                 UInt16 CODEC(T64, ZSTD(1)),
    daddr                 String CODEC(ZSTD(1)),
    dport                 UInt16 CODEC(T64, ZSTD(1)),
    start_time            DateTime64(9, 'UTC') CODEC(Delta, ZSTD(1)),
    start_ns              UInt64 CODEC(Delta, ZSTD(1)),
    duration_us           UInt64 CODEC(T64, ZSTD(1)),
    bytes_sent            UInt64 CODEC(T64, ZSTD(1)),
    bytes_received        UInt64 CODEC(T64, ZSTD(1)),
    segments_out          UInt32 CODEC(T64, ZSTD(1)),
    segments_in           UInt32 CODEC(T64, ZSTD(1)),
    retransmits           UInt32 CODEC(T64, ZSTD(1)),
    srtt_us               UInt32 CODEC(T64, ZSTD(1)),
    handshake_us          UInt64 CODEC(T64, ZSTD(1)),
    handshake_retransmits UInt32 CODEC(T64, ZSTD(1)),
    last_state            Enum8('UNKNOWN' = 0, 'ESTABLISHED' = 1, 'SYN_SENT' = 2, 'SYN_RECV' = 3, 'FIN_WAIT1' = 4, 'FIN_WAIT2' = 5, 'TIME_WAIT' = 6, 'CLOSE' = 7, 'CLOSE_WAIT' = 8, 'LAST_ACK' = 9, 'LISTEN' = 10, 'CLOSING' = 11, 'NEW_SYN_RECV' = 12),
    error                 Int32 CODEC(T64, ZSTD(1)),
    sock_id               UInt64 CODEC(ZSTD(1)),
    cookie                UInt64 CODEC(ZSTD(1)),
    probe_id              LowCardinality(String) CODEC(ZSTD(1)),
    seq                   UInt64 CODEC(Delta, ZSTD(1)),
    stream_seq            UInt64 CODEC(Delta, ZSTD(1))
)
ENGINE = MergeTree
PARTITION BY toYYYYMMDD(time)
ORDER BY (host, toStartOfHour(time), comm, daddr, time)
TTL toDateTime(time) + INTERVAL 30 DAY;
