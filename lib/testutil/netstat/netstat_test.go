package netstat

import "testing"

// The counters are there and only grow.
func TestTcpExt(t *testing.T) {
	a := TcpExt(t, "ListenOverflows")
	if b := TcpExt(t, "ListenOverflows"); b < a {
		t.Errorf("ListenOverflows went from %d to %d", a, b)
	}
}
