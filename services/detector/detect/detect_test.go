package detect

import (
	"strings"
	"testing"
	"time"
)

type nop struct{}

func (nop) Observe(Input)                  {}
func (nop) Evaluate(time.Time) []Condition { return nil }

func plugin(name string) Plugin {
	return Plugin{
		Name: name, Kinds: []string{"state"},
		Config: func() any { return &struct{}{} },
		New:    func(any, string) (Instance, error) { return nop{}, nil },
	}
}

func TestRegistryRefusesBadPlugins(t *testing.T) {
	var r Registry
	if err := r.Register(plugin("conn_leak")); err != nil {
		t.Fatal(err)
	}
	noNew := plugin("x")
	noNew.New = nil
	noKinds := plugin("y")
	noKinds.Kinds = nil
	for _, c := range []struct {
		p    Plugin
		want string
	}{
		{plugin(""), "empty name"},
		{plugin("conn_leak"), "registered twice"},
		{plugin("Conn-Leak"), "lower-case"},
		{noNew, "required"},
		{noKinds, "no event kinds"},
	} {
		err := r.Register(c.p)
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("Register(%q) = %v, want error containing %q", c.p.Name, err, c.want)
		}
	}
	if got := r.Names(); len(got) != 1 || got[0] != "conn_leak" {
		t.Errorf("Names() = %v", got)
	}
	if _, ok := r.Lookup("conn_leak"); !ok {
		t.Error("Lookup(conn_leak) failed")
	}
}
