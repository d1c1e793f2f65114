// Package pluginconf gives every registered detector its own section of the
// detector's configuration, detector.<name>, holding the framework's keys
// (enabled, for, repeat_interval, severity) and the plugin's own keys side by
// side.
//
// The sections are typed: a struct built at start with one field per
// plugin, whose values are the plugins' own config structs. So the shared
// config.Loader sees every key with its default, refuses unknown ones naming
// them, and fills the plugins' structs from file, environment and flags like
// any other key (NETPULSE_DETECTOR_CONN_LEAK_FOR, --detector.conn_leak.for).
package pluginconf

import (
	"errors"
	"fmt"
	"reflect"
	"strings"
	"time"

	"github.com/knadh/koanf/providers/structs"

	"github.com/netpulse/netpulse/services/detector/detect"
)

// Section is one detector's configuration.
type Section struct {
	// Enabled detectors run when the command does not name which to run.
	Enabled bool `koanf:"enabled"`
	// For is how long a condition must hold before its alert fires.
	For time.Duration `koanf:"for"`
	// RepeatInterval re-sends a firing alert this often; 0 never.
	RepeatInterval time.Duration `koanf:"repeat_interval"`
	// Severity, when set, replaces the severity the detector chose.
	Severity string `koanf:"severity"`
	// Settings is the plugin's config struct (what Plugin.Config returned),
	// its keys next to the ones above. nil when the plugin has no keys.
	Settings any `koanf:",flatten,squash,omitempty"`
}

// frameworkKeys are the keys of Section a plugin must not use.
var frameworkKeys = map[string]bool{"enabled": true, "for": true, "repeat_interval": true, "severity": true}

// Defaults builds the detector.<name> tree for plugins: a pointer to a
// struct with one *Section per plugin holding the defaults (enabled, for 0,
// no reminders, the plugin's own defaults). It refuses a plugin whose
// Config is not a pointer to a struct or uses one of the framework's keys.
// With no plugins it returns nil.
func Defaults(plugins []detect.Plugin) (any, error) {
	if len(plugins) == 0 {
		return nil, nil
	}
	fields := make([]reflect.StructField, len(plugins))
	sections := make([]*Section, len(plugins))
	for i, p := range plugins {
		settings, err := pluginDefaults(p)
		if err != nil {
			return nil, err
		}
		fields[i] = reflect.StructField{
			Name: fmt.Sprintf("D%d", i),
			Type: reflect.TypeFor[*Section](),
			Tag:  reflect.StructTag(`koanf:"` + p.Name + `"`),
		}
		sections[i] = &Section{Enabled: true, Settings: settings}
	}
	tree := reflect.New(reflect.StructOf(fields))
	for i, s := range sections {
		tree.Elem().Field(i).Set(reflect.ValueOf(s))
	}
	return tree.Interface(), nil
}

func pluginDefaults(p detect.Plugin) (any, error) {
	cfg := p.Config()
	v := reflect.ValueOf(cfg)
	if !v.IsValid() || v.Kind() != reflect.Pointer || v.IsNil() || v.Elem().Kind() != reflect.Struct {
		return nil, fmt.Errorf("detector %s: Config must return a pointer to a struct, got %T", p.Name, cfg)
	}
	keys, err := structs.Provider(cfg, "koanf").Read()
	if err != nil {
		return nil, fmt.Errorf("detector %s: config struct: %w", p.Name, err)
	}
	for k := range keys {
		if frameworkKeys[k] {
			return nil, fmt.Errorf("detector %s: config key %q is the framework's (detector.%s.%s)", p.Name, k, p.Name, k)
		}
	}
	if len(keys) == 0 {
		return nil, nil // nothing to configure: no section keys beyond the framework's
	}
	return cfg, nil
}

// Named is one detector's section.
type Named struct {
	Name    string
	Section *Section
}

// List returns the sections of a tree made by Defaults, in plugin order.
func List(tree any) []Named {
	if tree == nil {
		return nil
	}
	v := reflect.ValueOf(tree).Elem()
	out := make([]Named, v.NumField())
	for i := range out {
		out[i] = Named{Name: v.Type().Field(i).Tag.Get("koanf"), Section: v.Field(i).Interface().(*Section)}
	}
	return out
}

// Validate checks the section of detector name, naming keys as
// detector.<name>.<key>; the plugin's own Validate, when it has one, names
// its keys relative to the section.
func (s *Section) Validate(name string) error {
	key := "detector." + name
	switch {
	case s.For < 0:
		return fmt.Errorf("%s.for: must not be negative, got %s", key, s.For)
	case s.RepeatInterval < 0:
		return fmt.Errorf("%s.repeat_interval: must not be negative, got %s", key, s.RepeatInterval)
	case s.Severity != "" && !detect.Severity(s.Severity).Valid():
		return fmt.Errorf("%s.severity: must be empty (the detector's choice), info, warning or critical, got %q", key, s.Severity)
	}
	v, ok := s.Settings.(interface{ Validate() error })
	if !ok {
		return nil
	}
	err := v.Validate()
	if err == nil {
		return nil
	}
	// "min_sockets: must be ..." becomes "detector.conn_leak.min_sockets: ...";
	// anything else is prefixed with the section.
	msg := err.Error()
	if first, _, found := strings.Cut(msg, ":"); found && !strings.ContainsAny(first, " \t") {
		return errors.New(key + "." + msg)
	}
	return fmt.Errorf("%s: %w", key, err)
}

// PluginConfig is the filled config to give to Plugin.New: the section's
// settings, or a fresh default when the plugin has no keys.
func (s *Section) PluginConfig(p detect.Plugin) any {
	if s.Settings != nil {
		return s.Settings
	}
	return p.Config()
}
