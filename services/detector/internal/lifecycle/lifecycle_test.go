package lifecycle

import (
	"bytes"
	"encoding/json"
	"flag"
	"fmt"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"github.com/netpulse/netpulse/lib/alert"
	"github.com/netpulse/netpulse/services/detector/detect"
)

var update = flag.Bool("update", false, "rewrite the golden files")

var t0 = time.Date(2026, 11, 24, 12, 0, 0, 0, time.UTC)

func leak(pid string, count string) detect.Condition {
	return detect.Condition{
		Labels:   map[string]string{"pid": pid, "comm": "srv", "local_port": "8080"},
		Details:  map[string]string{"count": count, "summary": "not-this"},
		Severity: detect.Warning, Value: 12, Threshold: 10,
		Summary: "srv (pid " + pid + ") holds " + count + " sockets in CLOSE_WAIT",
		SQL:     "SELECT 1",
	}
}

// step is one evaluation: at an offset from t0, these conditions hold.
type step struct {
	at    time.Duration
	conds []detect.Condition
}

func TestLifecycleGoldens(t *testing.T) {
	crit := leak("7", "40")
	crit.Severity = detect.Critical
	firing := alert.Alert{
		Fingerprint: alert.Fingerprint("conn_leak", "h1", leak("7", "").Labels), Detector: "conn_leak",
		Status: alert.Firing, Severity: "warning", Host: "h1", StartsAt: t0.Add(-time.Hour), SentAt: t0.Add(-time.Hour),
		Labels: map[string]string{"pid": "7", "comm": "srv", "local_port": "8080", "count": "99", "detector": "conn_leak", "host": "h1", "severity": "warning"},
	}
	tests := []struct {
		name    string
		set     Settings
		restore []alert.Alert
		steps   []step
	}{
		{"pending_then_firing_then_resolved", Settings{For: 3 * time.Second}, nil, []step{
			{0, []detect.Condition{leak("7", "12")}},
			{time.Second, []detect.Condition{leak("7", "13")}},
			{3 * time.Second, []detect.Condition{leak("7", "14")}}, // fires
			{4 * time.Second, []detect.Condition{leak("7", "15")}}, // still firing: nothing
			{5 * time.Second, nil},                                 // resolved, with the last count
			{6 * time.Second, nil},
		}},
		{"pending_that_vanishes_is_silent", Settings{For: 10 * time.Second}, nil, []step{
			{0, []detect.Condition{leak("7", "12")}},
			{5 * time.Second, []detect.Condition{leak("7", "12")}},
			{6 * time.Second, nil},
			{7 * time.Second, []detect.Condition{leak("7", "12")}}, // pending again, from scratch
			{16 * time.Second, []detect.Condition{leak("7", "12")}},
			{17 * time.Second, []detect.Condition{leak("7", "12")}}, // 10 s after 7 s: fires
		}},
		{"reminders", Settings{RepeatInterval: 10 * time.Second}, nil, []step{
			{0, []detect.Condition{leak("7", "12")}}, // for 0: fires at once
			{5 * time.Second, []detect.Condition{leak("7", "12")}},
			{10 * time.Second, []detect.Condition{leak("7", "20")}}, // reminder
			{15 * time.Second, []detect.Condition{leak("7", "20")}},
			{21 * time.Second, []detect.Condition{leak("7", "30")}}, // reminder
			{22 * time.Second, nil},
		}},
		{"severity_change_is_sent", Settings{}, nil, []step{
			{0, []detect.Condition{leak("7", "12")}},
			{time.Second, []detect.Condition{crit}},
			{2 * time.Second, []detect.Condition{crit}},
			{3 * time.Second, nil},
		}},
		{"severity_override", Settings{Severity: detect.Critical, GeneratorURL: "http://grafana:3000/d/x?host={host}&fp={fingerprint}"}, nil, []step{
			{0, []detect.Condition{leak("7", "12")}},
		}},
		{"two_conditions_and_a_duplicate", Settings{}, nil, []step{
			{0, []detect.Condition{leak("7", "12"), leak("8", "11"), leak("7", "99")}},
			{time.Second, []detect.Condition{leak("8", "11")}},
		}},
		{"restored_firing_is_not_refired", Settings{For: 5 * time.Second}, []alert.Alert{firing}, []step{
			{0, []detect.Condition{leak("7", "12")}},
			{time.Second, []detect.Condition{leak("7", "13")}},
			{2 * time.Second, nil}, // resolved with the original startsAt
		}},
		{"restored_firing_that_ended_during_the_move", Settings{}, []alert.Alert{firing}, []step{
			{0, nil},
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tt.set.Detector, tt.set.Host = "conn_leak", "h1"
			tr := New(tt.set)
			for _, a := range tt.restore {
				tr.Restore(a)
			}
			var buf bytes.Buffer
			for _, s := range tt.steps {
				out, dups := tr.Update(t0.Add(s.at), s.conds)
				p, f := tr.Counts()
				fmt.Fprintf(&buf, "# +%s: %d pending, %d firing, %d duplicate conditions\n", s.at, p, f, dups)
				for _, a := range out {
					j, err := json.MarshalIndent(a, "", "  ")
					if err != nil {
						t.Fatal(err)
					}
					buf.Write(j)
					buf.WriteByte('\n')
				}
			}
			golden := filepath.Join("testdata", tt.name+".golden")
			if *update {
				if err := os.WriteFile(golden, buf.Bytes(), 0o644); err != nil {
					t.Fatal(err)
				}
			}
			want, err := os.ReadFile(golden)
			if err != nil {
				t.Fatalf("%v (run with -update to create it)", err)
			}
			if !bytes.Equal(buf.Bytes(), want) {
				t.Errorf("transitions differ from %s:\n%s", golden, buf.String())
			}
		})
	}
}

// The fingerprint and the labels ignore details, so a count that grows is
// the same alert, and the label set is the same from firing to resolved:
// exactly the routing labels and the identity ones.
func TestLabelsStayFromFiringToResolved(t *testing.T) {
	tr := New(Settings{Detector: "conn_leak", Host: "h1", RepeatInterval: time.Second})
	a, _ := tr.Update(t0, []detect.Condition{leak("7", "12")})
	b, _ := tr.Update(t0.Add(time.Second), []detect.Condition{leak("7", "13")}) // reminder
	c, _ := tr.Update(t0.Add(2*time.Second), nil)                               // resolved
	if len(a) != 1 || len(b) != 1 || len(c) != 1 {
		t.Fatalf("sent %d, %d, %d; want 1 each", len(a), len(b), len(c))
	}
	want := map[string]string{"alertname": "conn_leak", "severity": "warning", "host": "h1", "pid": "7", "comm": "srv", "local_port": "8080"}
	for _, m := range []alert.Alert{a[0], b[0], c[0]} {
		if !maps.Equal(m.Labels, want) || m.Fingerprint != a[0].Fingerprint {
			t.Errorf("%s: labels %v fingerprint %s; want %v and %s", m.Status, m.Labels, m.Fingerprint, want, a[0].Fingerprint)
		}
	}
	if a[0].Annotations["count"] != "12" || b[0].Annotations["count"] != "13" || c[0].Annotations["count"] != "13" {
		t.Errorf("count annotations %q %q %q, want 12 13 13", a[0].Annotations["count"], b[0].Annotations["count"], c[0].Annotations["count"])
	}
	if s := a[0].Summary(); s != "srv (pid 7) holds 12 sockets in CLOSE_WAIT" {
		t.Errorf("summary %q: the condition's summary must win over a detail of that name", s)
	}
}

// A severity change ends the alert under the old severity (another label
// set for Alertmanager) before it fires under the new one.
func TestSeverityChangeResolvesTheOldLabelSet(t *testing.T) {
	tr := New(Settings{Detector: "conn_leak", Host: "h1"})
	crit := leak("7", "40")
	crit.Severity = detect.Critical
	tr.Update(t0, []detect.Condition{leak("7", "12")})
	out, _ := tr.Update(t0.Add(time.Second), []detect.Condition{crit, leak("8", "1")})
	var got []string
	for _, a := range out {
		got = append(got, a.Labels["pid"]+" "+a.Labels["severity"]+" "+string(a.Status))
	}
	if want := []string{"7 warning resolved", "7 critical firing", "8 warning firing"}; !slices.Equal(sortedByFingerprint(got, out), want) {
		t.Errorf("sent %v, want %v", got, want)
	}
}

// sortedByFingerprint keeps got as sent but puts pid 7 first whatever the
// fingerprints' order, so the expectation does not depend on hash values.
func sortedByFingerprint(got []string, out []alert.Alert) []string {
	var first, rest []string
	for i, a := range out {
		if a.Labels["pid"] == "7" {
			first = append(first, got[i])
		} else {
			rest = append(rest, got[i])
		}
	}
	return append(first, rest...)
}
