package chschema

// Alerts holds every alert transition as published (see Doc).
var Alerts = Table{
	Name: "alerts",
	Doc: `Every alert message as the detectors published it (lib/alert.Alert
JSON from stream NETPULSE_ALERTS): first firing, reminders, resolution.
Alerts are few, so partitions are UTC months, not days. ORDER BY
(detector, host, fingerprint, sent_at): queries pick a detector or a
host, and one alert's history (its fingerprint) lies together in time
order. Labels are two parallel arrays sorted by name (18.16 has no Map):
label_values[indexOf(label_names, 'comm')]; annotations likewise
(annotation_values[indexOf(annotation_names, 'count')]). Rows stored
before alerts were shaped for Alertmanager have no annotation arrays and
hold the changing values (count, ratio, ...) and a 'detector' label among
their labels. evidence is the JSON object as published, empty when there
was none.`,
	Columns: []Column{
		// When this message was made (first firing, reminder, resolution).
		{Name: "sent_at", Modern: "DateTime64(3, 'UTC')", Legacy: "DateTime('UTC')", Codec: codecSeq},
		{Name: "fingerprint", Modern: "String", Codec: codecZSTD},
		{Name: "detector", Modern: lcString, Legacy: "String", Codec: codecZSTD},
		// firing or resolved.
		{Name: "status", Modern: lcString, Legacy: "String", Codec: codecZSTD},
		{Name: "severity", Modern: lcString, Legacy: "String", Codec: codecZSTD},
		{Name: "host", Modern: lcString, Legacy: "String", Codec: codecZSTD},
		{Name: "starts_at", Modern: "DateTime64(3, 'UTC')", Legacy: "DateTime('UTC')", Codec: codecSeq},
		// NULL while firing.
		{Name: "ends_at", Modern: "Nullable(DateTime64(3, 'UTC'))", Legacy: "Nullable(DateTime('UTC'))", Codec: codecZSTD},
		{Name: "label_names", Modern: "Array(LowCardinality(String))", Legacy: "Array(String)", Codec: codecZSTD},
		{Name: "label_values", Modern: "Array(String)", Codec: codecZSTD},
		{Name: "summary", Modern: "String", Codec: codecZSTD},
		{Name: "description", Modern: "String", Codec: codecZSTD},
		// What was observed and what it crossed (unit per detector).
		{Name: "value", Modern: "Float64"},
		{Name: "threshold", Modern: "Float64"},
		// JSON as published; '' when none.
		{Name: "evidence", Modern: "String", Codec: codecZSTD},
		// A ready query showing the underlying rows.
		{Name: "sql", Modern: "String", Codec: codecZSTD},
		{Name: "stream_seq", Modern: "UInt64", Codec: codecSeq},
		// Every annotation (summary and description too), sorted by name.
		{Name: "annotation_names", Modern: "Array(LowCardinality(String))", Legacy: "Array(String)", Codec: codecZSTD},
		{Name: "annotation_values", Modern: "Array(String)", Codec: codecZSTD},
		{Name: "generator_url", Modern: "String", Codec: codecZSTD},
	},
	Engine:     "MergeTree",
	TimeColumn: "sent_at",
	Monthly:    true,
	OrderBy:    "(detector, host, fingerprint, sent_at)",
	TTLFrom:    "toDateTime(sent_at)",
}
