package grafana

import (
	"fmt"
	"math"
	"regexp"
	"strings"
	"testing"
	"time"
)

// request is what Grafana sends for one panel query: the dashboard's time
// range and the panel's interval, and the host variable's selection.
type request struct {
	from, to time.Time
	interval time.Duration
	hosts    []string // selected hosts; nil selects All
	allHosts []string // the variable's values (what All stands for)
}

// interpolate turns a panel's rawSql into the SQL the plugin sends: first
// what its frontend does (applyTemplateVariables in src/data/CHDatasource.ts:
// $__conditionalAll, then Grafana's template variables), then its backend's
// macros (pkg/macros/macros.go, expanded by grafana/macropro).
func interpolate(sql string, r request) (string, error) {
	sql, err := conditionalAll(sql, r)
	if err != nil {
		return "", err
	}
	if sql, err = templateVariables(sql, r); err != nil {
		return "", err
	}
	return expandMacros(sql, r)
}

// conditionalAll: $__conditionalAll(expr, $var) is expr, or 1=1 when $var
// is All (or empty). The plugin scans from the last occurrence backwards and
// splits the arguments at the commas directly inside the macro's parens.
func conditionalAll(sql string, r request) (string, error) {
	const macro = "$__conditionalAll("
	for i := strings.LastIndex(sql, macro); i >= 0; i = strings.LastIndex(sql, macro) {
		args, end, err := macroArgs(sql, i+len(macro)-1)
		if err != nil || len(args) != 2 {
			return "", fmt.Errorf("$__conditionalAll at %d: want (expr, $variable)", i)
		}
		name := strings.Trim(strings.TrimSpace(args[1]), "${}")
		if name != "host" {
			return "", fmt.Errorf("$__conditionalAll on $%s: the test knows only $host", name)
		}
		phrase := args[0]
		if r.hosts == nil {
			phrase = "1=1"
		}
		sql = sql[:i] + phrase + sql[end+1:]
	}
	return sql, nil
}

// templateVariables replaces $host, ${host} and ${host:singlequote}. The
// variable is multi-valued, so both render as a quoted list: the plugin's
// own formatter joins arrays as 'a','b' and Grafana's singlequote does the
// same (escaping a ' in a value as \', which host names do not have).
func templateVariables(sql string, r request) (string, error) {
	values := r.hosts
	if values == nil {
		values = r.allHosts
	}
	var err error
	out := regexp.MustCompile(`\$\{(\w+)(?::(\w+))?\}|\$(\w+)`).ReplaceAllStringFunc(sql, func(m string) string {
		sm := regexp.MustCompile(`^\$\{(\w+)(?::(\w+))?\}$|^\$(\w+)$`).FindStringSubmatch(m)
		name, format := sm[1]+sm[3], sm[2]
		if strings.HasPrefix(name, "__") {
			return m // a macro, Grafana's or the plugin's
		}
		if name != "host" {
			err = fmt.Errorf("variable $%s: the test knows only $host", name)
			return m
		}
		if format != "" && format != "singlequote" {
			err = fmt.Errorf("${host:%s}: the test knows only the singlequote format", format)
			return m
		}
		quoted := make([]string, len(values))
		for i, v := range values {
			quoted[i] = "'" + v + "'"
		}
		return strings.Join(quoted, ",")
	})
	return out, err
}

// expandMacros expands the plugin's backend macros the dashboards use, as
// grafana-clickhouse-datasource 4.x (pkg/macros/macros.go) does. Any other
// $__name fails: the plugin would leave it in the SQL.
func expandMacros(sql string, r request) (string, error) {
	secs := int(math.Max(r.interval.Seconds(), 1))
	dt := func(t time.Time) string { return fmt.Sprintf("toDateTime(%d)", t.Unix()) }
	macros := map[string]func(args []string) (string, error){
		"timeFilter": func(args []string) (string, error) {
			if len(args) != 1 {
				return "", fmt.Errorf("want 1 argument")
			}
			c := args[0]
			return fmt.Sprintf("%s >= %s AND %s <= %s", c, dt(r.from), c, dt(r.to)), nil
		},
		"fromTime": func([]string) (string, error) { return dt(r.from), nil },
		"toTime":   func([]string) (string, error) { return dt(r.to), nil },
		"timeInterval": func(args []string) (string, error) {
			if len(args) != 1 {
				return "", fmt.Errorf("want 1 argument")
			}
			return fmt.Sprintf("toStartOfInterval(toDateTime(%s), INTERVAL %d second)", args[0], secs), nil
		},
		"interval_s": func([]string) (string, error) { return fmt.Sprint(secs), nil },
	}
	var b strings.Builder
	for {
		i := strings.Index(sql, "$__")
		if i < 0 {
			b.WriteString(sql)
			return b.String(), nil
		}
		b.WriteString(sql[:i])
		j := i + len("$__")
		for j < len(sql) && isNameChar(sql[j]) {
			j++
		}
		name := sql[i+len("$__") : j]
		fn := macros[name]
		if fn == nil {
			return "", fmt.Errorf("macro $__%s: not one the test expands", name)
		}
		var args []string
		if j < len(sql) && sql[j] == '(' {
			var end int
			var err error
			if args, end, err = macroArgs(sql, j); err != nil {
				return "", fmt.Errorf("macro $__%s: %w", name, err)
			}
			j = end + 1
			if len(args) == 1 && args[0] == "" {
				args = nil
			}
		}
		out, err := fn(args)
		if err != nil {
			return "", fmt.Errorf("macro $__%s(%s): %w", name, strings.Join(args, ", "), err)
		}
		b.WriteString(out)
		sql = sql[j:]
	}
}

func isNameChar(c byte) bool {
	return c == '_' || c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9'
}

// macroArgs splits the argument list whose '(' is at s[open] at the commas
// outside nested parens and quotes, trimmed; end is the index of its ')'.
func macroArgs(s string, open int) (args []string, end int, err error) {
	depth, start := 0, open+1
	for i := open; i < len(s); i++ {
		switch c := s[i]; c {
		case '\'', '"':
			for i++; i < len(s) && s[i] != c; i++ {
			}
		case '(':
			depth++
		case ')':
			depth--
			if depth == 0 {
				return append(args, strings.TrimSpace(s[start:i])), i, nil
			}
		case ',':
			if depth == 1 {
				args = append(args, strings.TrimSpace(s[start:i]))
				start = i + 1
			}
		}
	}
	return nil, 0, fmt.Errorf("unbalanced parentheses")
}

// The expansion matches the plugin's own test cases (pkg/macros/macros_test.go)
// and the frontend's $__conditionalAll.
func TestInterpolate(t *testing.T) {
	from := time.Date(2014, 11, 12, 11, 45, 26, 371e6, time.UTC)
	to := time.Date(2015, 11, 12, 11, 45, 26, 371e6, time.UTC)
	all := request{from: from, to: to, interval: 20 * time.Second, allHosts: []string{"a", "b"}}
	one := all
	one.hosts = []string{"b"}
	for _, c := range []struct {
		r         request
		sql, want string
	}{
		{all, "WHERE $__timeFilter(time)", "WHERE time >= toDateTime(1415792726) AND time <= toDateTime(1447328726)"},
		{all, "x > $__fromTime AND x < $__toTime", "x > toDateTime(1415792726) AND x < toDateTime(1447328726)"},
		{all, "SELECT $__timeInterval(col) AS t", "SELECT toStartOfInterval(toDateTime(col), INTERVAL 20 second) AS t"},
		{all, "INTERVAL $__interval_s second", "INTERVAL 20 second"},
		{all, "WHERE $__conditionalAll(host IN (${host:singlequote}), $host) AND 1", "WHERE 1=1 AND 1"},
		{one, "WHERE $__conditionalAll(host IN (${host:singlequote}), $host) AND 1", "WHERE host IN ('b') AND 1"},
		{all, "host IN ($host)", "host IN ('a','b')"},
	} {
		got, err := interpolate(c.sql, c.r)
		if err != nil || got != c.want {
			t.Errorf("interpolate(%q) = %q, %v; want %q", c.sql, got, err, c.want)
		}
	}
	for _, bad := range []string{"$__timeFilter(a, b)", "$__timeFilter_ms(t)", "$__timeFilter(t", "$nope", "${host:csv}"} {
		if got, err := interpolate(bad, all); err == nil {
			t.Errorf("interpolate(%q) = %q, want an error", bad, got)
		}
	}
}
