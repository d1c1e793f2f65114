CREATE TABLE IF NOT EXISTS netpulse.alerts
(
    sent_at      DateTime('UTC'),
    fingerprint  String,
    detector     String,
    status       String,
    severity     String,
    host         String,
    starts_at    DateTime('UTC'),
    ends_at      Nullable(DateTime('UTC')),
    label_names  Array(String),
    label_values Array(String),
    summary      String,
    description  String,
    value        Float64,
    threshold    Float64,
    evidence     String,
    sql          String,
    stream_seq   UInt64
)
ENGINE = MergeTree
PARTITION BY toYYYYMM(sent_at)
ORDER BY (detector, host, fingerprint, sent_at);
