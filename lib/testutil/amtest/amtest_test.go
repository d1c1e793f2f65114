package amtest

import "testing"

// flushes reads Alertmanager 0.25's debug lines (as logged, quotes escaped).
func TestFlushes(t *testing.T) {
	log := `ts=2026-12-03T16:24:55.596Z caller=dispatch.go:515 level=debug component=dispatcher aggrGroup="{}:{alertname=\"conn_leak\", host=\"web-1\"}" msg=flushing alerts=[conn_leak[2855fa0][active]]
ts=2026-12-03T16:24:56.596Z caller=dispatch.go:515 level=debug component=dispatcher aggrGroup="{}:{alertname=\"conn_leak\", host=\"web-1\"}" msg=flushing alerts=[conn_leak[2855fa0][active]]
ts=2026-12-03T16:24:56.597Z caller=dispatch.go:515 level=debug component=dispatcher aggrGroup="{}:{alertname=\"conn_leak\", host=\"web-2\"}" msg=flushing alerts=[conn_leak[1][active]]
ts=2026-12-03T16:24:56.598Z caller=dispatch.go:163 level=debug component=dispatcher msg="Received alert" alert=conn_leak[2855fa0][active]
`
	got := flushes(log)
	if len(got) != 2 || got[`{}:{alertname=\"conn_leak\", host=\"web-1\"}`] != 2 || got[`{}:{alertname=\"conn_leak\", host=\"web-2\"}`] != 1 {
		t.Errorf("flushes: %v", got)
	}
}
