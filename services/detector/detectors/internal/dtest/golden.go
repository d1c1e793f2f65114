package dtest

import (
	"bytes"
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"testing"

	"github.com/netpulse/netpulse/services/detector/detect"
)

var update = flag.Bool("update", false, "rewrite testdata/*.golden.json from the detectors' output")

// Golden compares got, as indented JSON, with testdata/<name>.golden.json,
// or rewrites that file under -update.
func Golden(t *testing.T, name string, got any) {
	t.Helper()
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false) // SQL reads better with its < and >
	enc.SetIndent("", "  ")
	if err := enc.Encode(got); err != nil {
		t.Fatalf("golden %s: %v", name, err)
	}
	b := buf.Bytes()
	path := filepath.Join("testdata", name+".golden.json")
	if *update {
		if err := os.WriteFile(path, b, 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("golden %s: %v (run with -update to create it)", name, err)
	}
	if !bytes.Equal(b, want) {
		t.Errorf("golden %s differs from %s (run with -update to accept):\n%s", name, path, diff(string(want), string(b)))
	}
}

// diff shows the first differing lines: enough to see what changed.
func diff(want, got string) string {
	wl, gl := strings.Split(want, "\n"), strings.Split(got, "\n")
	for i := 0; i < len(wl) || i < len(gl); i++ {
		var w, g string
		if i < len(wl) {
			w = wl[i]
		}
		if i < len(gl) {
			g = gl[i]
		}
		if w != g {
			return fmt.Sprintf("line %d:\n  want: %s\n  got:  %s", i+1, w, g)
		}
	}
	return "(same lines, different bytes)"
}

// signature identifies a set of conditions by identity, severity, value and
// threshold: details such as ages change at every step.
func signature(conds []detect.Condition) string {
	parts := make([]string, 0, len(conds))
	for _, c := range conds {
		parts = append(parts, fmt.Sprintf("%v|%s|%g|%g", sorted(c.Labels), c.Severity, c.Value, c.Threshold))
	}
	sort.Strings(parts)
	return strings.Join(parts, "\n")
}

func sorted(m map[string]string) string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	var b strings.Builder
	for _, k := range keys {
		b.WriteString(k + "=" + m[k] + ",")
	}
	return b.String()
}

// Labels is a condition's identity as one string, for assertions.
func Labels(c detect.Condition) string { return sorted(c.Labels) }
