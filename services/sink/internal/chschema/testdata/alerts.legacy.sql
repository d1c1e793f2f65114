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
    sent_at           DateTime('UTC'),
    fingerprint       String,
    detector          String,
    status            String,
    severity          String,
    host              String,
    starts_at         DateTime('UTC'),
    ends_at           Nullable(DateTime('UTC')),
    label_names       Array(String),
    label_values      Array(String),
    summary           String,
    description       String,
    value             Float64,
    threshold         Float64,
    evidence          String,
    sql               String,
    stream_seq        UInt64,
    annotation_names  Array(String),
    annotation_values Array(String),
    generator_url     String
)
ENGINE = MergeTree
PARTITION BY toYYYYMM(sent_at)
ORDER BY (detector, host, fingerprint, sent_at);
