package endpoint

import (
	"net/netip"
	"testing"

	"github.com/netpulse/netpulse/lib/eventpb"
)

func TestIsServer(t *testing.T) {
	listen := func(p uint32) bool { return p == 40000 }
	for _, c := range []struct {
		side         eventpb.Side
		sport, dport uint32
		listening    func(uint32) bool
		want         bool
	}{
		{eventpb.Side_SIDE_SERVER, 50000, 80, nil, true},
		{eventpb.Side_SIDE_CLIENT, 80, 50000, nil, false},
		{eventpb.Side_SIDE_UNSPECIFIED, 8080, 50000, nil, true},
		{eventpb.Side_SIDE_UNSPECIFIED, 50000, 5432, nil, false},
		{eventpb.Side_SIDE_UNSPECIFIED, 40000, 41000, listen, true}, // a listener in the ephemeral range
		{eventpb.Side_SIDE_UNSPECIFIED, 80, 443, nil, false},
	} {
		if got := IsServer(c.side, c.sport, c.dport, c.listening); got != c.want {
			t.Errorf("IsServer(%v, %d, %d) = %v", c.side, c.sport, c.dport, got)
		}
	}
}

func TestNames(t *testing.T) {
	a, ok := Addr([]byte{10, 0, 0, 1})
	if !ok || HostPort(a, 5432) != "10.0.0.1:5432" || String(a) != "10.0.0.1" {
		t.Errorf("IPv4: %v %s", ok, HostPort(a, 5432))
	}
	b := netip.MustParseAddr("2001:db8::1").As16()
	a6, _ := Addr(b[:])
	if HostPort(a6, 443) != "[2001:db8::1]:443" {
		t.Errorf("IPv6: %s", HostPort(a6, 443))
	}
	if _, ok := Addr([]byte{1, 2, 3}); ok {
		t.Error("3-byte address accepted")
	}
	if HostPort(netip.Addr{}, 80) != "?:80" || String(netip.Addr{}) != "" {
		t.Error("invalid address")
	}
	if Listener(8080) != "*:8080" {
		t.Error("Listener")
	}
}
