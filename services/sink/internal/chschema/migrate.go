package chschema

import (
	"context"
	"fmt"
	"maps"
	"regexp"
	"strconv"
	"strings"

	"github.com/ClickHouse/clickhouse-go/v2/lib/driver"
)

// Migrate creates the schema where it is missing and upgrades what exists:
// columns of the definition that a table lacks are added (in definition
// order), Enum8 columns gain the values the definition added (a metadata
// change that keeps every row, checked on 18.16), and on servers with TTL
// support the table TTL is set to match o.TTLDays. It never drops a column
// or retypes one otherwise. Running it again changes nothing.
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
		if err := t.addMissingColumns(ctx, conn, f, o, t.stored(o)); err != nil {
			return err
		}
		if err := t.widenEnums(ctx, conn, o, t.stored(o)); err != nil {
			return err
		}
		if o.Cluster != "" {
			if err := t.syncDistributed(ctx, conn, o); err != nil {
				return err
			}
		}
		if f.TTL {
			if err := t.syncTTL(ctx, conn, f, o); err != nil {
				return err
			}
		}
	}
	return nil
}

// addMissingColumns adds, in definition order, the columns that table
// name (t or, on a cluster, one of its tables) lacks. 18.16 has no ADD
// COLUMN IF NOT EXISTS, so look first; a column that a concurrent Migrate
// added in between is not an error.
func (t *Table) addMissingColumns(ctx context.Context, conn driver.Conn, f Features, o Options, name string) error {
	have, err := existingColumns(ctx, conn, o, name)
	if err != nil {
		return err
	}
	for i, c := range t.Columns {
		if have[c.Name] != "" {
			continue
		}
		alter := fmt.Sprintf("ALTER TABLE %s%s ADD COLUMN %s", o.in(name), o.onCluster(), c.def(f, 0))
		if i > 0 {
			alter += " AFTER " + quoteIdent(t.Columns[i-1].Name)
		}
		if err := conn.Exec(ctx, alter); err != nil {
			if now, lerr := existingColumns(ctx, conn, o, name); lerr == nil && now[c.Name] != "" {
				continue
			}
			return fmt.Errorf("clickhouse schema: add column %s to %s: %w", c.Name, o.in(name), err)
		}
		have[c.Name] = c.Type(f)
	}
	return nil
}

// syncDistributed makes the Distributed table's columns those of the
// local table it reads, after a migration changed them. 18.16 refuses
// ALTER ON CLUSTER of a table that is not replicated on a cluster whose
// shards are, so the Distributed table, which holds no rows, is made
// again ON CLUSTER from the local table (queries through it fail for the
// moment in between).
func (t *Table) syncDistributed(ctx context.Context, conn driver.Conn, o Options) error {
	local, err := existingColumns(ctx, conn, o, t.stored(o))
	if err != nil {
		return err
	}
	dist, err := existingColumns(ctx, conn, o, t.Name)
	if err != nil {
		return err
	}
	if maps.Equal(local, dist) {
		return nil
	}
	if err := conn.Exec(ctx, "DROP TABLE IF EXISTS "+t.qualified(o)+o.onCluster()); err != nil {
		return fmt.Errorf("clickhouse schema: drop %s to make it again with the new columns: %w", t.qualified(o), err)
	}
	if err := conn.Exec(ctx, t.distributed(o)); err != nil {
		return fmt.Errorf("clickhouse schema: make %s again with the new columns: %w", t.qualified(o), err)
	}
	return nil
}

// widenEnums gives the table's Enum8 columns the values their definition
// has and the table lacks (a newer contract added a value). Only adding
// is done: a column whose values conflict with the definition (a name
// with another number, a value the definition dropped) is an error, as
// the sink's inserts would fail on it.
func (t *Table) widenEnums(ctx context.Context, conn driver.Conn, o Options, name string) error {
	have, err := existingColumns(ctx, conn, o, name)
	if err != nil {
		return err
	}
	for _, c := range t.Columns {
		typ := have[c.Name]
		if !strings.HasPrefix(c.Modern, "Enum8(") || typ == "" || typ == c.Modern {
			continue
		}
		if !strings.HasPrefix(typ, "Enum8(") {
			return fmt.Errorf("clickhouse schema: column %s of %s is %s, want %s", c.Name, o.in(name), typ, c.Modern)
		}
		want, got := enumValues(c.Modern), enumValues(typ)
		for value, code := range got {
			if w, ok := want[value]; !ok || w != code {
				return fmt.Errorf("clickhouse schema: column %s of %s is %s, which conflicts with %s: "+
					"not widening it", c.Name, o.in(name), typ, c.Modern)
			}
		}
		if len(got) == len(want) {
			continue // same values, spelled differently
		}
		alter := fmt.Sprintf("ALTER TABLE %s%s MODIFY COLUMN %s %s", o.in(name), o.onCluster(), quoteIdent(c.Name), c.Modern)
		if err := conn.Exec(ctx, alter); err != nil {
			return fmt.Errorf("clickhouse schema: add enum values to column %s of %s: %w", c.Name, o.in(name), err)
		}
	}
	return nil
}

var enumValue = regexp.MustCompile(`'((?:[^'\\]|\\.)*)'\s*=\s*(-?\d+)`)

// enumValues parses an Enum8 type into name -> number.
func enumValues(typ string) map[string]int {
	out := map[string]int{}
	for _, m := range enumValue.FindAllStringSubmatch(typ, -1) {
		n, _ := strconv.Atoi(m[2])
		out[m[1]] = n
	}
	return out
}

// existingColumns returns the columns of table name and their types (on
// a cluster: as the server conn talks to has them; ON CLUSTER statements
// change every server alike).
func existingColumns(ctx context.Context, conn driver.Conn, o Options, name string) (map[string]string, error) {
	rows, err := conn.Query(ctx,
		"SELECT name, type FROM system.columns WHERE database = ? AND table = ?", o.database(), name)
	if err != nil {
		return nil, fmt.Errorf("clickhouse schema: columns of %s: %w", o.in(name), err)
	}
	defer rows.Close()
	have := map[string]string{}
	for rows.Next() {
		var col, typ string
		if err := rows.Scan(&col, &typ); err != nil {
			return nil, fmt.Errorf("clickhouse schema: columns of %s: %w", o.in(name), err)
		}
		have[col] = typ
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("clickhouse schema: columns of %s: %w", o.in(name), err)
	}
	return have, nil
}

// syncTTL makes the table's TTL what f and o ask for. The current TTL is
// read from system.tables.engine_full, where the server prints it
// normalised (INTERVAL 30 DAY as toIntervalDay(30)).
func (t *Table) syncTTL(ctx context.Context, conn driver.Conn, f Features, o Options) error {
	var engineFull string
	err := conn.QueryRow(ctx,
		"SELECT engine_full FROM system.tables WHERE database = ? AND name = ?", o.database(), t.stored(o)).Scan(&engineFull)
	if err != nil {
		return fmt.Errorf("clickhouse schema: TTL of %s: %w", o.in(t.stored(o)), err)
	}
	alter := ttlAlter(o.in(t.stored(o))+o.onCluster(), tableTTL(engineFull), t.ttl(f, o))
	if alter == "" {
		return nil
	}
	if err := conn.Exec(ctx, alter); err != nil {
		return fmt.Errorf("clickhouse schema: set TTL of %s to %d days: %w", o.in(t.stored(o)), o.TTLDays, err)
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
