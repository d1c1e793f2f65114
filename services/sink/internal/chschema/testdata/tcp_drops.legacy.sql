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
    time         DateTime('UTC'),
    time_ns      UInt64,
    start_time   DateTime('UTC'),
    start_ns     UInt64,
    host         String,
    source       Enum8('unspecified' = 0, 'kfree_skb' = 1, 'listener' = 2),
    reason       String,
    family       Enum8('unknown' = 0, 'ipv4' = 4, 'ipv6' = 6),
    saddr        String,
    sport        UInt16,
    daddr        String,
    dport        UInt16,
    ingress      UInt8,
    pid          UInt32,
    comm         String,
    cgroup_id    UInt64,
    count        UInt64,
    accept_queue UInt32,
    backlog      UInt32,
    probe_id     String,
    seq          UInt64,
    stream_seq   UInt64
)
ENGINE = MergeTree
PARTITION BY toYYYYMMDD(time)
ORDER BY (host, toStartOfHour(time), reason, sport, time);
