package alert

import "testing"

func TestFingerprint(t *testing.T) {
	a := Fingerprint("conn_leak", "h1", map[string]string{"pid": "1", "comm": "x"})
	if a != Fingerprint("conn_leak", "h1", map[string]string{"comm": "x", "pid": "1"}) {
		t.Error("fingerprint depends on map order")
	}
	for _, other := range []string{
		Fingerprint("conn_leak", "h2", map[string]string{"pid": "1", "comm": "x"}),
		Fingerprint("slow_handshake", "h1", map[string]string{"pid": "1", "comm": "x"}),
		Fingerprint("conn_leak", "h1", map[string]string{"pid": "1", "comm": "y"}),
		Fingerprint("conn_leak", "h1", map[string]string{"pid": "1c", "omm": "x"}),
	} {
		if other == a {
			t.Errorf("different alerts share fingerprint %s", a)
		}
	}
	if len(a) != 16 {
		t.Errorf("fingerprint %q: want 16 hex digits", a)
	}
}
