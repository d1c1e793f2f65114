package probe

import (
	"io"
	"reflect"
	"testing"

	"github.com/netpulse/netpulse/lib/config"
)

// config/probe.yaml documents the defaults: it must say exactly what the code
// does without it.
func TestShippedConfigIsTheDefault(t *testing.T) {
	got := DefaultConfig()
	if _, err := (config.Loader{Service: "probe", Args: []string{"--config", "../../../../config/probe.yaml"}, Output: io.Discard}).Load(&got); err != nil {
		t.Fatalf("loading the shipped config: %v", err)
	}
	if want := DefaultConfig(); !reflect.DeepEqual(got, want) {
		t.Errorf("config/probe.yaml differs from DefaultConfig():\n file %+v\n code %+v", got, want)
	}
	if err := got.Validate(); err != nil {
		t.Errorf("defaults do not validate: %v", err)
	}
}
