package chschema

import (
	"context"
	"fmt"
	"regexp"

	"github.com/ClickHouse/clickhouse-go/v2/lib/driver"
)

// Migrate creates the schema where it is missing and upgrades what exists:
// columns of the definition that a table lacks are added (in definition
// order), and on servers with TTL support the table TTL is set to match
// o.TTLDays. It never drops or retypes a column. Running it again changes
// nothing.
func Migrate(ctx context.Context, conn driver.Conn, f Features, o Options) error {
	if o.TTLDays < 0 {
		return fmt.Errorf("clickhouse schema: TTL of %d days: must be 0 (keep forever) or more", o.TTLDays)
	}
	for _, s := range statements(f, o) {
		if err := conn.Exec(ctx, s.sql); err != nil {
			return fmt.Errorf("clickhouse schema: %s: %w", s.what, err)
		}
	}
	for _, t := range Tables {
		if err := t.addMissingColumns(ctx, conn, f, o); err != nil {
			return err
		}
		if f.TTL {
			if err := t.syncTTL(ctx, conn, f, o); err != nil {
				return err
			}
		}
	}
	return nil
}

// addMissingColumns adds, in definition order, the columns t's table lacks.
// 18.16 has no ADD COLUMN IF NOT EXISTS, so look first; a column that a
// concurrent Migrate added in between is not an error.
func (t *Table) addMissingColumns(ctx context.Context, conn driver.Conn, f Features, o Options) error {
	have, err := t.existingColumns(ctx, conn, o)
	if err != nil {
		return err
	}
	for i, c := range t.Columns {
		if have[c.Name] {
			continue
		}
		alter := fmt.Sprintf("ALTER TABLE %s ADD COLUMN %s", t.qualified(o), c.def(f, 0))
		if i > 0 {
			alter += " AFTER " + quoteIdent(t.Columns[i-1].Name)
		}
		if err := conn.Exec(ctx, alter); err != nil {
			if now, lerr := t.existingColumns(ctx, conn, o); lerr == nil && now[c.Name] {
				continue
			}
			return fmt.Errorf("clickhouse schema: add column %s to %s: %w", c.Name, t.qualified(o), err)
		}
		have[c.Name] = true
	}
	return nil
}

func (t *Table) existingColumns(ctx context.Context, conn driver.Conn, o Options) (map[string]bool, error) {
	rows, err := conn.Query(ctx,
		"SELECT name FROM system.columns WHERE database = ? AND table = ?", o.database(), t.Name)
	if err != nil {
		return nil, fmt.Errorf("clickhouse schema: columns of %s: %w", t.qualified(o), err)
	}
	defer rows.Close()
	have := map[string]bool{}
	for rows.Next() {
		var name string
		if err := rows.Scan(&name); err != nil {
			return nil, fmt.Errorf("clickhouse schema: columns of %s: %w", t.qualified(o), err)
		}
		have[name] = true
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("clickhouse schema: columns of %s: %w", t.qualified(o), err)
	}
	return have, nil
}

// syncTTL makes the table's TTL what f and o ask for. The current TTL is
// read from system.tables.engine_full, where the server prints it
// normalised (INTERVAL 30 DAY as toIntervalDay(30)).
func (t *Table) syncTTL(ctx context.Context, conn driver.Conn, f Features, o Options) error {
	var engineFull string
	err := conn.QueryRow(ctx,
		"SELECT engine_full FROM system.tables WHERE database = ? AND name = ?", o.database(), t.Name).Scan(&engineFull)
	if err != nil {
		return fmt.Errorf("clickhouse schema: TTL of %s: %w", t.qualified(o), err)
	}
	alter := ttlAlter(t.qualified(o), tableTTL(engineFull), t.ttl(f, o))
	if alter == "" {
		return nil
	}
	if err := conn.Exec(ctx, alter); err != nil {
		return fmt.Errorf("clickhouse schema: set TTL of %s to %d days: %w", t.qualified(o), o.TTLDays, err)
	}
	return nil
}

// ttlAlter is the ALTER that turns TTL have into want, "" when they agree.
func ttlAlter(table, have, want string) string {
	switch {
	case normTTL(have) == normTTL(want):
		return ""
	case want == "":
		return "ALTER TABLE " + table + " REMOVE TTL"
	default:
		return "ALTER TABLE " + table + " MODIFY TTL " + want
	}
}

var (
	ttlClause   = regexp.MustCompile(`\bTTL\s+(.*?)\s*(?:\bSETTINGS\b.*)?$`)
	intervalDay = regexp.MustCompile(`(?i)\bINTERVAL\s+(\d+)\s+DAY\b`)
	space       = regexp.MustCompile(`\s+`)
)

// tableTTL extracts the TTL expression from an engine_full value.
func tableTTL(engineFull string) string {
	m := ttlClause.FindStringSubmatch(engineFull)
	if m == nil {
		return ""
	}
	return m[1]
}

// normTTL makes the rendered and the server's spelling comparable.
func normTTL(s string) string {
	s = intervalDay.ReplaceAllString(s, "toIntervalDay($1)")
	return space.ReplaceAllString(s, "")
}
