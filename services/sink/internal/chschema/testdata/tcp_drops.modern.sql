-- TCP packets the kernel dropped, counted by the probe per interval (kind
-- drop, the proto's DropCount): one row per key that dropped in an
-- interval (start_time, time]. source 'kfree_skb' counts the packets
-- skb:kfree_skb saw freed as dropped, per reason (the kernel's name without
-- SKB_DROP_REASON_), this host's end (saddr, sport), the remote end (daddr,
-- dport), direction and owner where the socket names one; source
-- 'listener' counts a listener's own drops (its accept queue was full),
-- with reason LISTEN_OVERFLOW, accept_queue and backlog at time. A drop
-- rate is sum(count) over a time range divided by its length. Partitions
-- are UTC days. ORDER BY (host, toStartOfHour(time), reason, sport, time):
-- the questions are "which reason / which port dropped most in this time
-- range", and a reason's rows of one hour lie together.
CREATE TABLE IF NOT EXISTS netpulse.tcp_drops
(
    time         DateTime64(9, 'UTC') CODEC(Delta, ZSTD(1)),
    time_ns      UInt64 CODEC(Delta, ZSTD(1)),
    start_time   DateTime64(9, 'UTC') CODEC(Delta, ZSTD(1)),
    start_ns     UInt64 CODEC(Delta, ZSTD(1)),
    host         LowCardinality(String) CODEC(ZSTD(1)),
    source       Enum8('unspecified' = 0, 'kfree_skb' = 1, 'listener' = 2),
    reason       LowCardinality(String) CODEC(ZSTD(1)),
    family       Enum8('unknown' = 0, 'ipv4' = 4, 'ipv6' = 6),
    saddr        String CODEC(ZSTD(1)),
    sport        UInt16 CODEC(T64, ZSTD(1)),
    daddr        String CODEC(ZSTD(1)),
    dport        UInt16 CODEC(T64, ZSTD(1)),
    ingress      UInt8 CODEC(T64, ZSTD(1)),
    pid          UInt32 CODEC(T64, ZSTD(1)),
    comm         LowCardinality(String) CODEC(ZSTD(1)),
    cgroup_id    UInt64 CODEC(T64, ZSTD(1)),
    count        UInt64 CODEC(T64, ZSTD(1)),
    accept_queue UInt32 CODEC(T64, ZSTD(1)),
    backlog      UInt32 CODEC(T64, ZSTD(1)),
    probe_id     LowCardinality(String) CODEC(ZSTD(1)),
    seq          UInt64 CODEC(Delta, ZSTD(1)),
    stream_seq   UInt64 CODEC(Delta, ZSTD(1))
)
ENGINE = MergeTree
PARTITION BY toYYYYMMDD(time)
ORDER BY (host, toStartOfHour(time), reason, sport, time)
TTL toDateTime(time) + INTERVAL 30 DAY;
