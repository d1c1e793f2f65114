package top

import (
	"testing"

	"github.com/netpulse/netpulse/lib/eventpb"
)

func TestOwners(t *testing.T) {
	var o Owners
	if _, ok := o.Main(); ok {
		t.Fatal("Main of nothing")
	}
	for i := range 100 {
		o.Add(100, "api")
		if i%10 == 0 {
			o.Add(uint32(1000+i), "noise") // many rare ones share the last places
		}
	}
	m, _ := o.Main()
	if m.Pid != 100 || m.Comm != "api" {
		t.Errorf("main %+v, want api", m)
	}
	if l := o.List(); len(l) != 3 || l[0].Comm != "api" || l[0].N < l[1].N {
		t.Errorf("list %+v", l)
	}
	o.Decay()
	if m, _ := o.Main(); m.N != 50 {
		t.Errorf("after decay %d, want 50", m.N)
	}
	if p, c := Name(7, "swapper/0", eventpb.OwnerSource_OWNER_SOURCE_UNKNOWN); p != 0 || c != "unknown" {
		t.Errorf("unknown owner named %d %s", p, c)
	}
}
