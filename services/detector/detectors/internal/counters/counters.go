// Package counters turns a detector's Stats struct into named counters
// (snake_case field names), the form a framework logs or exports without
// knowing each detector's type.
package counters

import (
	"reflect"
	"strings"
	"unicode"
)

// Map returns the uint64 fields of the struct s (or *s) by snake_case name.
func Map(s any) map[string]uint64 {
	v := reflect.Indirect(reflect.ValueOf(s))
	out := map[string]uint64{}
	if v.Kind() != reflect.Struct {
		return out
	}
	t := v.Type()
	for i := range t.NumField() {
		f := t.Field(i)
		if f.IsExported() && f.Type.Kind() == reflect.Uint64 {
			out[snake(f.Name)] = v.Field(i).Uint()
		}
	}
	return out
}

func snake(s string) string {
	var b strings.Builder
	rs := []rune(s)
	for i, r := range rs {
		if unicode.IsUpper(r) {
			// A new word starts at an upper-case letter after a lower-case
			// one, or before a lower-case one inside an acronym.
			if i > 0 && (unicode.IsLower(rs[i-1]) || i+1 < len(rs) && unicode.IsLower(rs[i+1]) && unicode.IsUpper(rs[i-1])) {
				b.WriteByte('_')
			}
			r = unicode.ToLower(r)
		}
		b.WriteRune(r)
	}
	return b.String()
}
