package sockdiag

import (
	"testing"
)

func TestSockstatInuse(t *testing.T) {
	const v4 = "sockets: used 50\nTCP: inuse 18 orphan 0 tw 50496 alloc 19 mem 1057\nUDP: inuse 3 mem 0\n"
	const v6 = "TCP6: inuse 7\nUDP6: inuse 0\n"
	for _, tc := range []struct {
		name, text, prefix string
		want               int
	}{
		{"v4", v4, "TCP:", 18},
		{"v6", v6, "TCP6:", 7},
		{"v6 prefix in v4 file", v4, "TCP6:", 0},
		{"no value", "TCP: inuse\n", "TCP:", 0},
		{"garbage", "TCP: inuse lots\n", "TCP:", 0},
		{"negative", "TCP: inuse -4\n", "TCP:", 0},
		{"empty", "", "TCP:", 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := sockstatInuse([]byte(tc.text), tc.prefix); got != tc.want {
				t.Errorf("sockstatInuse = %d, want %d", got, tc.want)
			}
		})
	}
}

// TestCountHintCountsRealSockets reads the real files while the test holds
// 41 sockets: the hint counts them at least (other processes' sockets come
// and go, so only a lower bound holds).
func TestCountHintCountsRealSockets(t *testing.T) {
	newLoopback(t, "tcp4", "127.0.0.1:0", 20, 0) // a listener and 40 connected sockets
	if n := CountHint(); n < 41 {
		t.Errorf("CountHint = %d while this test holds 41 sockets", n)
	}
}
