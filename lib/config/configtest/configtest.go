// Package configtest holds checks every service's configuration shares.
package configtest

import (
	"io"
	"reflect"
	"testing"

	"github.com/netpulse/netpulse/lib/config"
)

// ShippedIsDefault checks that file (config/<service>.yaml) says exactly
// what defaults() holds, and that the defaults validate: the file documents
// the defaults, so it must not drift from the code.
func ShippedIsDefault[T any, PT interface {
	*T
	config.Validator
}](t *testing.T, service, file string, defaults func() T) {
	t.Helper()
	got := defaults()
	if _, err := (config.Loader{Service: service, Args: []string{"--config", file}, Output: io.Discard}).Load(PT(&got)); err != nil {
		t.Fatalf("loading %s: %v", file, err)
	}
	if want := defaults(); !reflect.DeepEqual(got, want) {
		t.Errorf("%s differs from the defaults in the code:\n file %+v\n code %+v", file, got, want)
	}
	if err := PT(&got).Validate(); err != nil {
		t.Errorf("defaults do not validate: %v", err)
	}
}
