package deploytest

import (
	"bufio"
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/netpulse/netpulse/lib/testutil/priv"
	"github.com/netpulse/netpulse/services/detector/detect"
)

// The units of deploy/systemd, by service.
var units = map[string]string{
	"probe":    "netpulse-probe.service",
	"sink":     "netpulse-sink.service",
	"detector": "netpulse-detector@.service",
}

// unit is a parsed unit file: section -> key -> values, each assignment
// one value (an empty assignment resets the list, as systemd does).
type unit map[string]map[string][]string

func parseUnit(t *testing.T, file string) unit {
	t.Helper()
	b, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	u := unit{}
	section := ""
	sc := bufio.NewScanner(bytes.NewReader(b))
	for n := 1; sc.Scan(); n++ {
		line := strings.TrimSpace(sc.Text())
		switch {
		case line == "" || line[0] == '#' || line[0] == ';':
		case line[0] == '[' && line[len(line)-1] == ']':
			section = line[1 : len(line)-1]
			if u[section] == nil {
				u[section] = map[string][]string{}
			}
		case strings.HasSuffix(line, `\`):
			t.Fatalf("%s:%d: continued lines are not supported here", file, n)
		default:
			k, v, ok := strings.Cut(line, "=")
			if !ok || section == "" {
				t.Fatalf("%s:%d: not a key=value in a section: %q", file, n, line)
			}
			k, v = strings.TrimSpace(k), strings.TrimSpace(v)
			if v == "" {
				u[section][k] = []string{}
			} else {
				u[section][k] = append(u[section][k], v)
			}
		}
	}
	return u
}

// get is the one value of key in [Service] ("" when unset).
func (u unit) get(t *testing.T, key string) string {
	t.Helper()
	vs := u["Service"][key]
	if len(vs) > 1 {
		t.Errorf("%s set %d times", key, len(vs))
	}
	if len(vs) == 0 {
		return ""
	}
	return vs[len(vs)-1]
}

// words is every space-separated word of key's values in [Service], sorted.
func (u unit) words(key string) []string {
	var out []string
	for _, v := range u["Service"][key] {
		out = append(out, strings.Fields(v)...)
	}
	slices.Sort(out)
	return out
}

func unitPath(t *testing.T, service string) string {
	return repoPath(t, "deploy/systemd/"+units[service])
}

// probeUnitCapabilities is the probe unit's AmbientCapabilities, the set
// the Kubernetes DaemonSet must grant too. TestSystemdUnitGrantsRequired in
// services/probe/internal/caps holds the unit to caps.Required.
func probeUnitCapabilities(t *testing.T) []string {
	t.Helper()
	return parseUnit(t, unitPath(t, "probe")).words("AmbientCapabilities")
}

func TestSystemdUnits(t *testing.T) {
	for service, name := range units {
		t.Run(service, func(t *testing.T) {
			u := parseUnit(t, unitPath(t, service))
			start := u.get(t, "ExecStart")
			want := "/usr/local/bin/netpulse-" + service + " --config /etc/netpulse/" + service + ".yaml"
			if start != want && !strings.HasPrefix(start, want+" ") {
				t.Errorf("%s: ExecStart=%s, want %s ...", name, start, want)
			}
			if user := u.get(t, "User"); user == "" || user == "root" || user == "0" {
				t.Errorf("%s: User=%q: want a user of its own", name, user)
			}
			if u.get(t, "Restart") != "on-failure" {
				t.Errorf("%s: Restart=%q, want on-failure", name, u.get(t, "Restart"))
			}
			if u.get(t, "NoNewPrivileges") != "yes" {
				t.Errorf("%s: NoNewPrivileges is not yes", name)
			}
			if u.get(t, "ProtectSystem") != "strict" {
				t.Errorf("%s: ProtectSystem is not strict", name)
			}
			stop, err := time.ParseDuration(u.get(t, "TimeoutStopSec"))
			if err != nil {
				t.Errorf("%s: TimeoutStopSec: %v", name, err)
			}
			grace := map[string]time.Duration{"probe": probeFlushGrace * time.Second, "sink": sinkFinalFlush * time.Second}[service]
			if stop <= grace {
				t.Errorf("%s: TimeoutStopSec=%s, want more than the %s the service may take to stop", name, stop, grace)
			}
			ambient, bounding := u.words("AmbientCapabilities"), u.words("CapabilityBoundingSet")
			switch service {
			case "probe":
				if len(ambient) == 0 || !slices.Equal(ambient, bounding) {
					t.Errorf("%s: AmbientCapabilities %v and CapabilityBoundingSet %v must be the same set", name, ambient, bounding)
				}
				// Each of these would take from the probe what it needs.
				for _, k := range []string{"PrivateNetwork", "PrivateUsers", "ProtectProc", "ProcSubset", "DynamicUser"} {
					if v := u.get(t, k); v != "" && v != "no" && v != "default" && v != "all" {
						t.Errorf("%s: %s=%s breaks the probe", name, k, v)
					}
				}
			default:
				if _, ok := u["Service"]["CapabilityBoundingSet"]; !ok || len(bounding) > 0 || len(ambient) > 0 {
					t.Errorf("%s: want CapabilityBoundingSet= (none) and no ambient capabilities, got %v / %v", name, bounding, ambient)
				}
			}
			if service == "detector" && !strings.HasSuffix(start, " --detectors %i") {
				t.Errorf("%s: ExecStart=%s: want the instance as --detectors %%i", name, start)
			}
		})
	}
}

// TestSystemdAnalyzeVerify runs systemd-analyze verify on the units, with
// ExecStart pointing at stub executables (verify wants the binary to
// exist), and each detector's instance of the template. Any line it prints
// about them fails the test: verify reports unknown keys and bad values as
// warnings and still exits 0.
func TestSystemdAnalyzeVerify(t *testing.T) {
	analyze, err := exec.LookPath("systemd-analyze")
	if err != nil {
		priv.Skip(t, "systemd-analyze is not installed (apt-get install systemd)")
	}
	dir := t.TempDir()
	bin := filepath.Join(dir, "bin")
	if err := os.Mkdir(bin, 0o755); err != nil {
		t.Fatal(err)
	}
	var paths []string
	for service, name := range units {
		if err := os.WriteFile(filepath.Join(bin, "netpulse-"+service), []byte("#!/bin/sh\nexit 0\n"), 0o755); err != nil {
			t.Fatal(err)
		}
		b, err := os.ReadFile(unitPath(t, service))
		if err != nil {
			t.Fatal(err)
		}
		b = bytes.ReplaceAll(b, []byte("ExecStart=/usr/local/bin/"), []byte("ExecStart="+bin+"/"))
		targets := []string{name}
		if service == "detector" {
			for _, d := range detect.Default.Names() {
				targets = append(targets, strings.Replace(name, "@.", "@"+d+".", 1))
			}
		}
		for _, n := range targets {
			p := filepath.Join(dir, n)
			if err := os.WriteFile(p, b, 0o644); err != nil {
				t.Fatal(err)
			}
			paths = append(paths, p)
		}
	}
	slices.Sort(paths)
	cmd := exec.Command(analyze, append([]string{"verify", "--man=no"}, paths...)...)
	cmd.Env = append(os.Environ(), "SYSTEMD_LOG_COLOR=0", "SYSTEMD_PAGER=")
	out, err := cmd.CombinedOutput()
	t.Logf("systemd-analyze verify %d units: %s", len(paths), bytes.TrimSpace(out))
	if err != nil {
		t.Errorf("systemd-analyze verify: %v\n%s", err, out)
	}
	for _, line := range strings.Split(string(out), "\n") {
		if strings.Contains(line, dir) || strings.Contains(line, "netpulse") {
			t.Errorf("systemd-analyze verify: %s", strings.ReplaceAll(line, dir, "deploy/systemd"))
		}
	}
}
