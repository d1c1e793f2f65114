// Package chsql writes the small ClickHouse queries that alerts carry. The
// queries must run on every server the sink supports (Debian's 18.16 as well
// as 24.x), so they use plain SQL only: string literals for times (compared
// in the column's UTC zone, valid for DateTime and DateTime64 alike), no
// parameters, no newer functions.
package chsql

import (
	"strings"
	"time"
)

// Database is the sink's default database (the contract's netpulse).
const Database = "netpulse"

// Table is the qualified name of one of the contract's tables.
func Table(name string) string { return Database + "." + name }

// Str is s as a ClickHouse string literal.
func Str(s string) string {
	var b strings.Builder
	b.Grow(len(s) + 2)
	b.WriteByte('\'')
	for i := 0; i < len(s); i++ {
		switch c := s[i]; c {
		case '\'', '\\':
			b.WriteByte('\\')
			b.WriteByte(c)
		case 0:
			b.WriteString(`\0`)
		case '\n':
			b.WriteString(`\n`)
		default:
			b.WriteByte(c)
		}
	}
	b.WriteByte('\'')
	return b.String()
}

// Time is t as a UTC DateTime literal with whole seconds (DateTime on old
// servers has no fraction).
func Time(t time.Time) string {
	return "'" + t.UTC().Format(time.DateTime) + "'"
}

// Window is the condition "time in [from, to]" with from rounded down and
// to rounded up to whole seconds, so no event of the window is left out.
func Window(from, to time.Time) string {
	from = from.Truncate(time.Second)
	if r := to.Truncate(time.Second); !r.Equal(to) {
		to = r.Add(time.Second)
	}
	return "time >= " + Time(from) + " AND time <= " + Time(to)
}
