-- Every alert message as the detectors published it (lib/alert.Alert
-- JSON from stream NETPULSE_ALERTS): first firing, reminders, resolution.
-- Alerts are few, so partitions are UTC months, not days. ORDER BY
-- (detector, host, fingerprint, sent_at): queries pick a detector or a
-- host, and one alert's history (its fingerprint) lies together in time
-- order. Labels are two parallel arrays sorted by name (18.16 has no Map):
-- label_values[indexOf(label_names, 'comm')]; annotations likewise
-- (annotation_values[indexOf(annotation_names, 'count')]). Rows stored
-- before alerts were shaped for Alertmanager have no annotation arrays and
-- hold the changing values (count, ratio, ...) and a 'detector' label among
-- their labels. evidence is the JSON object as published, empty when there
-- was none.
CREATE TABLE IF NOT EXISTS netpulse.alerts
(
    sent_at           DateTime64(3, 'UTC') CODEC(Delta, ZSTD(1)),
    fingerprint       String CODEC(ZSTD(1)),
    detector          LowCardinality(String) CODEC(ZSTD(1)),
    status            LowCardinality(String) CODEC(ZSTD(1)),
    severity          LowCardinality(String) CODEC(ZSTD(1)),
    host              LowCardinality(String) CODEC(ZSTD(1)),
    starts_at         DateTime64(3, 'UTC') CODEC(Delta, ZSTD(1)),
    ends_at           Nullable(DateTime64(3, 'UTC')) CODEC(ZSTD(1)),
    label_names       Array(LowCardinality(String)) CODEC(ZSTD(1)),
    label_values      Array(String) CODEC(ZSTD(1)),
    summary           String CODEC(ZSTD(1)),
    description       String CODEC(ZSTD(1)),
    value             Float64,
    threshold         Float64,
    evidence          String CODEC(ZSTD(1)),
    sql               String CODEC(ZSTD(1)),
    stream_seq        UInt64 CODEC(Delta, ZSTD(1)),
    annotation_names  Array(LowCardinality(String)) CODEC(ZSTD(1)),
    annotation_values Array(String) CODEC(ZSTD(1)),
    generator_url     String CODEC(ZSTD(1))
)
ENGINE = MergeTree
PARTITION BY toYYYYMM(sent_at)
ORDER BY (detector, host, fingerprint, sent_at)
TTL toDateTime(sent_at) + INTERVAL 30 DAY;
