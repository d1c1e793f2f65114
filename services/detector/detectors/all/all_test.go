package all

import (
	"reflect"
	"slices"
	"strings"
	"testing"

	"github.com/netpulse/netpulse/lib/wire"
	"github.com/netpulse/netpulse/services/detector/detect"
)

// Every built-in detector is registered with the contract's name, consumes
// data kinds only, and its defaults are valid, carry a koanf tag on every
// field and make a detector.
func TestBuiltinsRegistered(t *testing.T) {
	want := []string{"conn_failure", "conn_leak", "retransmit_spike", "slow_handshake"}
	for _, name := range want {
		p, ok := detect.Default.Lookup(name)
		if !ok {
			t.Errorf("%s is not registered", name)
			continue
		}
		for _, k := range p.Kinds {
			if !slices.Contains(wire.DataKinds, k) {
				t.Errorf("%s consumes unknown kind %q", name, k)
			}
		}
		cfg := p.Config()
		v, ok := cfg.(interface{ Validate() error })
		if !ok {
			t.Errorf("%s: config has no Validate", name)
		} else if err := v.Validate(); err != nil {
			t.Errorf("%s: defaults invalid: %v", name, err)
		}
		typ := reflect.TypeOf(cfg).Elem()
		for i := range typ.NumField() {
			f := typ.Field(i)
			if tag := f.Tag.Get("koanf"); tag == "" || strings.ToLower(tag) != tag {
				t.Errorf("%s: field %s has koanf tag %q", name, f.Name, tag)
			}
		}
		d, err := p.New(cfg, "h")
		if err != nil || d == nil {
			t.Fatalf("%s: New with defaults: %v", name, err)
		}
		if c, ok := d.(interface{ Counters() map[string]uint64 }); !ok || len(c.Counters()) == 0 {
			t.Errorf("%s: no Counters() for the framework to report", name)
		}
		if _, err := p.New(struct{}{}, "h"); err == nil {
			t.Errorf("%s: New accepted a config of the wrong type", name)
		}
	}
}
