// Package configtest holds checks every service's configuration shares.
package configtest

import (
	"io"
	"reflect"
	"testing"

	"github.com/knadh/koanf/parsers/yaml"
	"github.com/knadh/koanf/providers/file"
	"github.com/knadh/koanf/providers/structs"
	"github.com/knadh/koanf/v2"

	"github.com/netpulse/netpulse/lib/config"
)

// ShippedIsDefault checks that path (config/<service>.yaml) says exactly
// what defaults() holds, that it lists every key, and that the defaults
// validate: the file documents the defaults, so it must not drift from the
// code.
func ShippedIsDefault[T any, PT interface {
	*T
	config.Validator
}](t *testing.T, service, path string, defaults func() T) {
	t.Helper()
	got := defaults()
	if _, err := (config.Loader{Service: service, Args: []string{"--config", path}, Output: io.Discard}).Load(PT(&got)); err != nil {
		t.Fatalf("loading %s: %v", path, err)
	}
	if want := defaults(); !reflect.DeepEqual(got, want) {
		t.Errorf("%s differs from the defaults in the code:\n file %+v\n code %+v", path, got, want)
	}
	if err := PT(&got).Validate(); err != nil {
		t.Errorf("defaults do not validate: %v", err)
	}
	// Every key is there, with its comment: the file is the reference.
	fk := koanf.New(".")
	if err := fk.Load(file.Provider(path), yaml.Parser()); err != nil {
		t.Fatalf("reading %s: %v", path, err)
	}
	def := defaults()
	sk := koanf.New(".")
	if err := sk.Load(structs.Provider(PT(&def), "koanf"), nil); err != nil {
		t.Fatal(err)
	}
	for _, key := range sk.Keys() {
		if !fk.Exists(key) {
			t.Errorf("%s does not document key %s", path, key)
		}
	}
}
