package chschema

import (
	"os"
	"strings"
	"testing"
)

// readmeTableLists returns, per table name, the column lists README.md
// gives: the bullet that starts "- **`<table>`**", up to the next bullet, a
// blank line or a heading.
func readmeTableLists(t *testing.T) map[string][]string {
	t.Helper()
	b, err := os.ReadFile("../../../../README.md")
	if err != nil {
		t.Fatalf("reading the README: %v", err)
	}
	lists := map[string][]string{}
	var name string
	var cur *strings.Builder
	end := func() {
		if cur != nil {
			lists[name] = append(lists[name], cur.String())
			cur = nil
		}
	}
	for _, line := range strings.Split(string(b), "\n") {
		if rest, ok := strings.CutPrefix(line, "- **`"); ok {
			end()
			if n, _, ok := strings.Cut(rest, "`**"); ok {
				name, cur = n, &strings.Builder{}
				cur.WriteString(line)
			}
			continue
		}
		if cur == nil {
			continue
		}
		if strings.TrimSpace(line) == "" || strings.HasPrefix(line, "#") || strings.HasPrefix(line, "- ") {
			end()
			continue
		}
		cur.WriteString(" " + strings.TrimSpace(line))
	}
	end()
	return lists
}

// README.md lists the columns of every table the sink manages, once per
// table and completely, with its sort order.
func TestReadmeColumnLists(t *testing.T) {
	lists := readmeTableLists(t)
	if len(Tables) == 0 {
		t.Fatal("no tables")
	}
	for _, tab := range Tables {
		got := lists[tab.Name]
		if len(got) != 1 {
			t.Errorf("README has %d column lists (- **`%s`**: ...) for table %s, want 1", len(got), tab.Name, tab.Name)
			continue
		}
		list := got[0]
		for _, c := range tab.Columns {
			if !strings.Contains(list, "`"+c.Name+"`") {
				t.Errorf("README's list of %s lacks column `%s`", tab.Name, c.Name)
			}
		}
		if order := "`ORDER BY " + tab.OrderBy + "`"; !strings.Contains(list, order) {
			t.Errorf("README's list of %s does not say %s", tab.Name, order)
		}
	}
}
