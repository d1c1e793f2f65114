package grafana

import (
	"fmt"
	"os"
	"regexp"
	"slices"
	"strings"
	"sync"
	"testing"

	"github.com/netpulse/netpulse/lib/testutil/repofile"
)

// series is a metric family README.md documents.
type series struct {
	kind   string // counter, gauge, histogram
	labels []string
}

var (
	readmeOnce    sync.Once
	readmeMetrics map[string]series
	readmeErr     error
)

// readmeSeries returns the families of README.md's section "Metrics, health
// and version": its table (`| `name`, `_suffix` | type | `label`, ... |
// what |`, a name starting with _ continuing the first name's
// netpulse_<service> prefix) and netpulse_build_info{...} from the /metrics
// bullet.
func readmeSeries(t *testing.T) map[string]series {
	t.Helper()
	readmeOnce.Do(func() { readmeMetrics, readmeErr = parseReadmeSeries() })
	if readmeErr != nil {
		t.Fatal(readmeErr)
	}
	return readmeMetrics
}

var (
	backticked = regexp.MustCompile("`([^`]+)`")
	buildInfo  = regexp.MustCompile("`(netpulse_build_info)\\{([a-z_,]+)\\}`")
	inParens   = regexp.MustCompile(`\([^)]*\)`)
)

func parseReadmeSeries() (map[string]series, error) {
	path, err := repofile.Find("README.md")
	if err != nil {
		return nil, err
	}
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	_, section, ok := strings.Cut(string(data), "\n## Metrics, health and version\n")
	if !ok {
		return nil, fmt.Errorf("README.md has no section ## Metrics, health and version")
	}
	if end := strings.Index(section, "\n## "); end >= 0 {
		section = section[:end]
	}
	out := map[string]series{}
	for _, line := range strings.Split(section, "\n") {
		if m := buildInfo.FindStringSubmatch(line); m != nil {
			out[m[1]] = series{kind: "gauge", labels: strings.Split(m[2], ",")}
		}
		if !strings.HasPrefix(line, "| `") {
			continue
		}
		cols := strings.Split(line, "|")
		if len(cols) < 5 {
			return nil, fmt.Errorf("README metrics row %q: want 4 columns", line)
		}
		kind := strings.TrimSpace(cols[2])
		if kind != "counter" && kind != "gauge" && kind != "histogram" {
			return nil, fmt.Errorf("README metrics row %q: type %q", line, kind)
		}
		var labels []string
		for _, m := range backticked.FindAllStringSubmatch(inParens.ReplaceAllString(cols[3], ""), -1) {
			labels = append(labels, m[1])
		}
		var prefix string
		for i, m := range backticked.FindAllStringSubmatch(cols[1], -1) {
			name := m[1]
			if i == 0 {
				parts := strings.SplitN(name, "_", 3)
				if len(parts) < 3 || parts[0] != "netpulse" {
					return nil, fmt.Errorf("README metrics row %q: %s is not netpulse_<service>_...", line, name)
				}
				prefix = parts[0] + "_" + parts[1]
			}
			if strings.HasPrefix(name, "_") {
				name = prefix + name
			}
			out[name] = series{kind: kind, labels: labels}
		}
	}
	if len(out) < 10 {
		return nil, fmt.Errorf("README.md's metrics table lists only %d series", len(out))
	}
	return out, nil
}

// PromQL the dashboards may use: functions and aggregations, keywords.
var (
	promFuncs = []string{
		"sum", "max", "min", "avg", "count", "topk", "bottomk", "quantile",
		"rate", "irate", "increase", "delta", "deriv", "histogram_quantile", "clamp_min", "clamp_max",
		"abs", "round", "time", "timestamp", "vector", "scalar", "absent", "max_over_time", "min_over_time",
		"avg_over_time", "changes", "resets", "label_replace",
	}
	promKeywords  = []string{"by", "without", "on", "ignoring", "group_left", "group_right", "bool", "offset", "and", "or", "unless"}
	grafanaRanges = []string{"$__rate_interval", "$__interval", "$__range"}
	targetLabels  = []string{"instance", "job"}
	promToken     = regexp.MustCompile(`\$\{?[A-Za-z_]\w*\}?|[A-Za-z_:][A-Za-z0-9_:]*|[0-9]+(\.[0-9]+)?([eE][+-]?[0-9]+)?[smhdwy]?|"(?:[^"\\]|\\.)*"|[(){}\[\],]|=~|!~|!=|==|<=|>=|[-+*/%^<>=]`)
	legendLabel   = regexp.MustCompile(`\{\{\s*([A-Za-z_]\w*)\s*\}\}`)
)

// checkPromQL checks expr without a Prometheus: balanced (), {} and [];
// every function is a known one; every other name is a series README.md
// documents (a histogram's as _bucket, _sum or _count); every label in a
// matcher, in by/without (...) and in legend is one of those series' (or
// instance, job, le of a _bucket); ranges are Grafana's interval variables
// or durations; $variables are Grafana's or the dashboard's.
func checkPromQL(expr, legend string, known map[string]series, vars map[string]bool) error {
	// Every character must belong to a token or be white space.
	if rest := strings.TrimSpace(promToken.ReplaceAllString(expr, " ")); rest != "" {
		return fmt.Errorf("characters no PromQL token: %q", rest)
	}
	toks := promToken.FindAllString(expr, -1)
	var stack []string
	closing := map[string]string{")": "(", "}": "{", "]": "["}
	labels := map[string]bool{}
	for _, l := range targetLabels {
		labels[l] = true
	}
	var used []string   // series names
	var wanted []string // labels the expression needs
	grouping := false   // after by/without: the next ( ... ) lists labels
	inGroup := false
	for i, tok := range toks {
		next := ""
		if i+1 < len(toks) {
			next = toks[i+1]
		}
		top := ""
		if len(stack) > 0 {
			top = stack[len(stack)-1]
		}
		switch {
		case tok == "(" || tok == "{" || tok == "[":
			stack = append(stack, tok)
			if tok == "(" && grouping {
				inGroup, grouping = true, false
			}
			continue
		case closing[tok] != "":
			if top != closing[tok] {
				return fmt.Errorf("unbalanced %s", tok)
			}
			stack = stack[:len(stack)-1]
			if tok == ")" {
				inGroup = false
			}
			continue
		}
		switch {
		case top == "[":
			if !slices.Contains(grafanaRanges, tok) && !regexp.MustCompile(`^[0-9]+[smhdwy]$`).MatchString(tok) {
				return fmt.Errorf("range [%s]: want a duration or one of %v", tok, grafanaRanges)
			}
		case strings.HasPrefix(tok, "$"):
			name := strings.Trim(tok, "${}")
			if !slices.Contains(grafanaRanges, "$"+name) && !vars[name] {
				return fmt.Errorf("%s is no Grafana or dashboard variable", tok)
			}
		case inGroup:
			if tok != "," {
				wanted = append(wanted, tok)
			}
		case top == "{":
			if regexp.MustCompile(`^[A-Za-z_]\w*$`).MatchString(tok) {
				wanted = append(wanted, tok)
			}
		case slices.Contains(promKeywords, tok):
			grouping = tok != "bool" && tok != "offset" && tok != "and" && tok != "or" && tok != "unless"
		case regexp.MustCompile(`^[A-Za-z_:]`).MatchString(tok):
			if next == "(" || (slices.Contains(promFuncs, tok) && (next == "by" || next == "without")) {
				if !slices.Contains(promFuncs, tok) {
					return fmt.Errorf("%s( is no PromQL function this check knows", tok)
				}
				continue
			}
			s, ok := known[tok]
			base := tok
			if !ok {
				for _, suffix := range []string{"_bucket", "_sum", "_count"} {
					if b, cut := strings.CutSuffix(tok, suffix); cut && known[b].kind == "histogram" {
						s, ok, base = known[b], true, b
						if suffix == "_bucket" {
							labels["le"] = true
						}
					}
				}
			}
			if !ok {
				return fmt.Errorf("series %s is not in README.md's metrics table", tok)
			}
			used = append(used, base)
			for _, l := range s.labels {
				labels[l] = true
			}
		}
	}
	if len(stack) > 0 {
		return fmt.Errorf("unclosed %s", strings.Join(stack, ""))
	}
	if len(used) == 0 {
		return fmt.Errorf("no netpulse series")
	}
	for _, m := range legendLabel.FindAllStringSubmatch(legend, -1) {
		wanted = append(wanted, m[1])
	}
	for _, l := range wanted {
		if !labels[l] {
			return fmt.Errorf("label %s: not one of %v's (README.md)", l, used)
		}
	}
	return nil
}

// The checker itself: what it must refuse.
func TestCheckPromQL(t *testing.T) {
	known := map[string]series{
		"netpulse_sink_rows_inserted_total":     {kind: "counter", labels: []string{"consumer"}},
		"netpulse_sink_insert_duration_seconds": {kind: "histogram", labels: []string{"table"}},
	}
	good := []struct{ expr, legend string }{
		{`sum by (consumer) (rate(netpulse_sink_rows_inserted_total[$__rate_interval]))`, "{{consumer}}"},
		{`histogram_quantile(0.99, sum by (table, le) (rate(netpulse_sink_insert_duration_seconds_bucket{table="alerts"}[5m])))`, "{{table}}"},
		{`netpulse_sink_rows_inserted_total{consumer=~"data|alerts", instance!=""} > 0`, ""},
	}
	for _, g := range good {
		if err := checkPromQL(g.expr, g.legend, known, nil); err != nil {
			t.Errorf("%s: %v", g.expr, err)
		}
	}
	bad := []struct{ expr, legend string }{
		{`sum(rate(netpulse_sink_rows_inserted_total[5m])`, ""},                         // unclosed
		{`sum(rate(netpulse_sink_rows_inserted_total[5m])))`, ""},                       // extra )
		{`sum(rate(netpulse_sink_rows_inserted_total[5m)))`, ""},                        // [ closed by )
		{`rate(netpulse_sink_rows_insertd_total[5m])`, ""},                              // unknown series
		{`rate(netpulse_sink_rows_inserted_total_bucket[5m])`, ""},                      // not a histogram
		{`sum by (table) (rate(netpulse_sink_rows_inserted_total[5m]))`, ""},            // label of another series
		{`sum by (consumer) (rate(netpulse_sink_rows_inserted_total[5m]))`, "{{host}}"}, // legend label
		{`frobnicate(netpulse_sink_rows_inserted_total)`, ""},                           // unknown function
		{`rate(netpulse_sink_rows_inserted_total[$nope])`, ""},                          // unknown variable
		{`rate(netpulse_sink_rows_inserted_total[5m]) @ 1`, ""},                         // stray token
		{`1 + 1`, ""}, // no series
	}
	for _, b := range bad {
		if err := checkPromQL(b.expr, b.legend, known, nil); err == nil {
			t.Errorf("%s (legend %q): accepted", b.expr, b.legend)
		}
	}
}

// The README parse finds the families the dashboards need, including those
// of the shorthand rows (`netpulse_detector_messages_total`, `_events_total`)
// and netpulse_build_info from the /metrics bullet.
func TestReadmeSeriesParsed(t *testing.T) {
	s := readmeSeries(t)
	for name, kind := range map[string]string{
		"netpulse_probe_events_published_total":        "counter",
		"netpulse_detector_events_total":               "counter", // `_events_total` after netpulse_detector_messages_total
		"netpulse_detector_alert_publish_errors_total": "counter",
		"netpulse_sink_insert_duration_seconds":        "histogram",
		"netpulse_sink_consumer_pending_messages":      "gauge",
		"netpulse_build_info":                          "gauge",
	} {
		if s[name].kind != kind {
			t.Errorf("README series %s: kind %q, want %q", name, s[name].kind, kind)
		}
	}
	if got := s["netpulse_detector_alerts_total"].labels; !slices.Equal(got, []string{"detector", "status"}) {
		t.Errorf("netpulse_detector_alerts_total labels %v, want [detector status]", got)
	}
}
