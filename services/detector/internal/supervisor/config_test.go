package supervisor

import (
	"errors"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/netpulse/netpulse/lib/config"
	"github.com/netpulse/netpulse/lib/config/configtest"
	"github.com/netpulse/netpulse/services/detector/detect"
	_ "github.com/netpulse/netpulse/services/detector/detectors/all"
	"github.com/netpulse/netpulse/services/detector/internal/pluginconf"
)

// config/detector.yaml documents every built-in detector's section.
func TestShippedConfigIsTheDefault(t *testing.T) {
	configtest.ShippedIsDefault(t, "detector", "../../../../config/detector.yaml", DefaultConfig)
}

// A plugin config with its own keys and its own validation.
type leakConfig struct {
	MinSockets int           `koanf:"min_sockets"`
	MinAge     time.Duration `koanf:"min_age"`
	Ports      []string      `koanf:"ports"`
}

func (c *leakConfig) Validate() error {
	if c.MinSockets < 1 {
		return errors.New("min_sockets: must be at least 1")
	}
	return nil
}

func configRegistry(t *testing.T) *detect.Registry {
	t.Helper()
	reg := &detect.Registry{}
	for _, p := range []detect.Plugin{
		{Name: "leak", Kinds: []string{"snapshot"}, Config: func() any { return &leakConfig{MinSockets: 10, MinAge: 30 * time.Second} }, New: newNop},
		{Name: "plain", Kinds: []string{"state"}, Config: func() any { return &struct{}{} }, New: newNop},
	} {
		if err := reg.Register(p); err != nil {
			t.Fatal(err)
		}
	}
	return reg
}

func load(t *testing.T, reg *detect.Registry, yaml string, env []string, args ...string) (Config, error) {
	t.Helper()
	cfg, err := DefaultConfigFor(reg)
	if err != nil {
		t.Fatal(err)
	}
	if yaml != "" {
		f := filepath.Join(t.TempDir(), "detector.yaml")
		if err := os.WriteFile(f, []byte(yaml), 0o644); err != nil {
			t.Fatal(err)
		}
		args = append([]string{"--config", f}, args...)
	}
	_, err = config.Loader{Service: "detector", Args: args, Environ: env, Output: io.Discard}.Load(&cfg)
	return cfg, err
}

func section(cfg Config, name string) *pluginconf.Section {
	for _, s := range pluginconf.List(cfg.Detector) {
		if s.Name == name {
			return s.Section
		}
	}
	return nil
}

func TestPluginSections(t *testing.T) {
	reg := configRegistry(t)
	cfg, err := load(t, reg, `
detectors: [leak]
detector:
  leak:
    for: 1m
    severity: critical
    min_sockets: 5
    ports: ["80", "443"]
  plain:
    enabled: false
`, []string{"NETPULSE_DETECTOR_LEAK_MIN_AGE=2m"}, "--detector.leak.repeat_interval=10m")
	if err != nil {
		t.Fatal(err)
	}
	s := section(cfg, "leak")
	lc := s.Settings.(*leakConfig)
	if s.For != time.Minute || s.RepeatInterval != 10*time.Minute || s.Severity != "critical" || !s.Enabled {
		t.Errorf("framework keys: %+v", s)
	}
	if lc.MinSockets != 5 || lc.MinAge != 2*time.Minute || strings.Join(lc.Ports, ",") != "80,443" {
		t.Errorf("plugin keys: %+v", lc)
	}
	if p := section(cfg, "plain"); p.Enabled || p.Settings != nil {
		t.Errorf("plain: %+v", p)
	}
	if sel := cfg.Selected(); len(sel) != 1 || sel[0].Name != "leak" {
		t.Errorf("selected %v", sel)
	}
	// The defaults of another load are untouched (each load has its own structs).
	def, _ := DefaultConfigFor(reg)
	if section(def, "leak").Settings.(*leakConfig).MinSockets != 10 {
		t.Error("loading changed the defaults")
	}
	// --detectors on the command line, comma-separated.
	cfg, err = load(t, reg, "", nil, "--detectors", "leak,plain")
	if err != nil {
		t.Fatal(err)
	}
	if sel := cfg.Selected(); len(sel) != 2 {
		t.Errorf("selected %v", sel)
	}
	// Empty: every enabled one.
	cfg, err = load(t, reg, "", nil)
	if err != nil || len(cfg.Selected()) != 2 {
		t.Errorf("selected %v, %v", cfg.Selected(), err)
	}
}

func TestPluginSectionErrorsNameTheKey(t *testing.T) {
	reg := configRegistry(t)
	for _, tt := range []struct {
		name, yaml string
		args       []string
		want       string
	}{
		{"unknown key in a section", "detector:\n  leak:\n    min_sokets: 3\n", nil, `"detector.leak.min_sokets"`},
		{"unknown detector section", "detector:\n  lek:\n    for: 1s\n", nil, `"detector.lek.for"`},
		{"unknown key as a flag", "", []string{"--detector.plain.threshold=3"}, "detector.plain.threshold"},
		{"plugin validation", "detector:\n  leak:\n    min_sockets: 0\n", nil, "detector.leak.min_sockets: must be at least 1"},
		{"bad value type", "detector:\n  leak:\n    min_age: soon\n", nil, "min_age"},
		{"negative for", "", []string{"--detector.leak.for=-1s"}, "detector.leak.for: must not be negative"},
		{"bad severity", "", []string{"--detector.plain.severity=fatal"}, "detector.plain.severity"},
		{"unknown detector to run", "", []string{"--detectors=leak,nope"}, `detectors: no detector "nope"`},
		{"disabled detector to run", "detector:\n  plain:\n    enabled: false\n", []string{"--detectors=plain"}, "detector.plain.enabled: false"},
		{"group partitions", "", []string{"--group.partitions=0"}, "group.partitions"},
		{"alerts stream", "", []string{"--alerts_stream.replicas=9"}, "alerts_stream.replicas"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			_, err := load(t, reg, tt.yaml, nil, tt.args...)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("err = %v, want it to contain %s", err, tt.want)
			}
		})
	}
}

func TestNothingToRun(t *testing.T) {
	reg := configRegistry(t)
	cfg, err := load(t, reg, "detector:\n  plain:\n    enabled: false\n  leak:\n    enabled: false\n", nil)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := New(cfg, reg, quietLog()); err == nil || !strings.Contains(err.Error(), "detectors: nothing to run") {
		t.Errorf("New = %v", err)
	}
}

func TestPluginConfigThatCannotBeASection(t *testing.T) {
	for _, tt := range []struct {
		cfg  func() any
		want string
	}{
		{func() any { return leakConfig{} }, "pointer to a struct"},
		{func() any {
			return &struct {
				For time.Duration `koanf:"for"`
			}{}
		}, `"for" is the framework's`},
	} {
		reg := &detect.Registry{}
		if err := reg.Register(detect.Plugin{Name: "bad", Kinds: []string{"state"}, Config: tt.cfg, New: newNop}); err != nil {
			t.Fatal(err)
		}
		if _, err := DefaultConfigFor(reg); err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("err = %v, want %q", err, tt.want)
		}
	}
}

// The built-in detectors' keys are set and checked like any other.
func TestBuiltinSections(t *testing.T) {
	cfg := DefaultConfig()
	_, err := config.Loader{Service: "detector", Args: []string{"--detector.conn_leak.min_sockets=0"}, Output: io.Discard}.Load(&cfg)
	if err == nil || !strings.HasPrefix(err.Error(), "config: detector.conn_leak.min_sockets: ") {
		t.Errorf("err = %v", err)
	}
	cfg = DefaultConfig()
	if _, err := (config.Loader{Service: "detector", Args: []string{"--detectors=conn_leak", "--detector.slow_handshake.ceiling=1s"},
		Environ: []string{"NETPULSE_DETECTOR_CONN_LEAK_FOR=45s"}, Output: io.Discard}).Load(&cfg); err != nil {
		t.Fatal(err)
	}
	if s := section(cfg, "conn_leak"); s.For != 45*time.Second {
		t.Errorf("conn_leak.for = %s", s.For)
	}
	if sel := cfg.Selected(); len(sel) != 1 || sel[0].Name != "conn_leak" {
		t.Errorf("selected %v", sel)
	}
	for _, name := range []string{"conn_leak", "slow_handshake", "retransmit_spike", "conn_failure"} {
		if section(cfg, name) == nil {
			t.Errorf("no section for built-in %s", name)
		}
	}
}
