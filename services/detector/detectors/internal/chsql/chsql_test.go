package chsql

import (
	"testing"
	"time"
)

func TestStr(t *testing.T) {
	for in, want := range map[string]string{
		"web-1":       `'web-1'`,
		`it's`:        `'it\'s'`,
		`a\b`:         `'a\\b'`,
		"x\ny\x00":    `'x\ny\0'`,
		"' OR 1=1 --": `'\' OR 1=1 --'`,
	} {
		if got := Str(in); got != want {
			t.Errorf("Str(%q) = %s, want %s", in, got, want)
		}
	}
}

func TestWindowRoundsOutward(t *testing.T) {
	from := time.Date(2026, 3, 2, 10, 0, 5, 700e6, time.FixedZone("x", 3600))
	to := time.Date(2026, 3, 2, 10, 0, 35, 100e6, time.UTC)
	want := "time >= '2026-03-02 09:00:05' AND time <= '2026-03-02 10:00:36'"
	if got := Window(from, to); got != want {
		t.Errorf("Window = %s, want %s", got, want)
	}
	if got := Window(to.Truncate(time.Second), to.Truncate(time.Second)); got != "time >= '2026-03-02 10:00:35' AND time <= '2026-03-02 10:00:35'" {
		t.Errorf("whole seconds changed: %s", got)
	}
}
