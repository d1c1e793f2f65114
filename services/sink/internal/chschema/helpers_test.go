package chschema

// Helpers only the tests need; the sink itself probes its server's features
// and runs statements() through Migrate.

// Modern is a server with every feature, e.g. any 24.x or 25.x release.
var Modern = Features{DateTime64: true, LowCardinality: true, Codecs: true, TTL: true}

// Render returns the statements that create the schema on a server with
// features f, in order: what Migrate runs first. The text is deterministic.
func Render(f Features, o Options) []string {
	var out []string
	for _, s := range statements(f, o) {
		out = append(out, s.sql)
	}
	return out
}

// Column returns the named column.
func (t *Table) Column(name string) (Column, bool) {
	for _, c := range t.Columns {
		if c.Name == name {
			return c, true
		}
	}
	return Column{}, false
}
