package caps

import (
	"errors"
	"os"
	"strings"
	"testing"

	"golang.org/x/sys/unix"
)

func bits(cs ...int) uint64 {
	var v uint64
	for _, c := range cs {
		v |= 1 << uint(c)
	}
	return v
}

func TestParseEffective(t *testing.T) {
	status := "Name:\tnetpulse-probe\nUmask:\t0022\nCapInh:\t0000000000000000\nCapPrm:\t000000c000080004\n" +
		"CapEff:\t000000c000080004\nCapBnd:\t000001ffffffffff\nCapAmb:\t000000c000080004\nNoNewPrivs:\t0\n"
	got, err := ParseEffective([]byte(status))
	if err != nil {
		t.Fatal(err)
	}
	if want := bits(unix.CAP_BPF, unix.CAP_PERFMON, unix.CAP_DAC_READ_SEARCH, unix.CAP_SYS_PTRACE); got != want {
		t.Errorf("CapEff = %#x, want %#x", got, want)
	}
	for _, bad := range []string{"Name:\tx\n", "CapEff:\tzz\n", "CapEff:\t\n"} {
		if _, err := ParseEffective([]byte(bad)); err == nil {
			t.Errorf("ParseEffective(%q) succeeded", bad)
		}
	}
}

// This process's own status parses (whatever it holds).
func TestParseOwnStatus(t *testing.T) {
	b, err := os.ReadFile("/proc/self/status")
	if err != nil {
		t.Skip(err)
	}
	if _, err := ParseEffective(b); err != nil {
		t.Fatal(err)
	}
}

func capList(rs []Requirement) string {
	s := make([]string, len(rs))
	for i, r := range rs {
		s[i] = Name(r.Cap)
	}
	return strings.Join(s, ",")
}

func TestRequired(t *testing.T) {
	for _, tc := range []struct {
		opts Options
		want string
	}{
		{Options{}, "CAP_BPF,CAP_PERFMON,CAP_DAC_READ_SEARCH"},
		{Options{ProcScan: true}, "CAP_BPF,CAP_PERFMON,CAP_DAC_READ_SEARCH,CAP_SYS_PTRACE"},
		{Options{ProcScan: true, MountTracefs: true}, "CAP_BPF,CAP_PERFMON,CAP_DAC_READ_SEARCH,CAP_SYS_PTRACE,CAP_SYS_ADMIN"},
	} {
		if got := capList(Required(tc.opts)); got != tc.want {
			t.Errorf("Required(%+v) = %s, want %s", tc.opts, got, tc.want)
		}
	}
}

func TestMissing(t *testing.T) {
	reqs := Required(Options{ProcScan: true})
	all := bits(unix.CAP_BPF, unix.CAP_PERFMON, unix.CAP_DAC_READ_SEARCH, unix.CAP_SYS_PTRACE)
	for _, tc := range []struct {
		name string
		eff  uint64
		want string
	}{
		{"exactly the set", all, ""},
		{"root", 1<<41 - 1, ""},
		{"root without CAP_SYS_RESOURCE", (1<<41 - 1) &^ bits(unix.CAP_SYS_RESOURCE), ""},
		{"nothing", 0, "CAP_BPF,CAP_PERFMON,CAP_DAC_READ_SEARCH,CAP_SYS_PTRACE"},
		{"no CAP_BPF", all &^ bits(unix.CAP_BPF), "CAP_BPF"},
		{"no CAP_PERFMON", all &^ bits(unix.CAP_PERFMON), "CAP_PERFMON"},
		{"no CAP_DAC_READ_SEARCH", all &^ bits(unix.CAP_DAC_READ_SEARCH), "CAP_DAC_READ_SEARCH"},
		{"no CAP_SYS_PTRACE", all &^ bits(unix.CAP_SYS_PTRACE), "CAP_SYS_PTRACE"},
		// The kernel accepts the broader capabilities in their place.
		{"CAP_SYS_ADMIN for BPF and PERFMON", bits(unix.CAP_SYS_ADMIN, unix.CAP_DAC_READ_SEARCH, unix.CAP_SYS_PTRACE), ""},
		{"CAP_DAC_OVERRIDE for DAC_READ_SEARCH", bits(unix.CAP_BPF, unix.CAP_PERFMON, unix.CAP_DAC_OVERRIDE, unix.CAP_SYS_PTRACE), ""},
		{"CAP_SYS_ADMIN is no CAP_SYS_PTRACE", bits(unix.CAP_SYS_ADMIN, unix.CAP_DAC_READ_SEARCH), "CAP_SYS_PTRACE"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := capList(Missing(tc.eff, reqs)); got != tc.want {
				t.Errorf("Missing(%#x) = %q, want %q", tc.eff, got, tc.want)
			}
		})
	}
}

func TestErrorMessage(t *testing.T) {
	reqs := Required(Options{ProcScan: true})
	all := bits(unix.CAP_BPF, unix.CAP_PERFMON, unix.CAP_DAC_READ_SEARCH, unix.CAP_SYS_PTRACE)
	if err := CheckEffective(all, reqs); err != nil {
		t.Fatalf("with the whole set: %v", err)
	}

	err := CheckEffective(all&^bits(unix.CAP_PERFMON), reqs)
	var ce *Error
	if !errors.As(err, &ce) {
		t.Fatalf("CheckEffective without CAP_PERFMON = %v, want an *Error", err)
	}
	msg := err.Error()
	for _, want := range []string{
		"missing capability CAP_PERFMON (load tracing programs and attach the tracepoints)",
		"grant all of CAP_BPF, CAP_PERFMON, CAP_DAC_READ_SEARCH, CAP_SYS_PTRACE",
		"AmbientCapabilities=CAP_BPF CAP_PERFMON CAP_DAC_READ_SEARCH CAP_SYS_PTRACE",
		"--ambient-caps=+bpf,+perfmon,+dac_read_search,+sys_ptrace",
	} {
		if !strings.Contains(msg, want) {
			t.Errorf("message %q lacks %q", msg, want)
		}
	}
	if strings.Contains(msg, "missing capability CAP_BPF") {
		t.Errorf("message names a capability that is there: %q", msg)
	}

	msg = CheckEffective(bits(unix.CAP_BPF), reqs).Error()
	if !strings.HasPrefix(msg, "missing capabilities CAP_PERFMON (") ||
		!strings.Contains(msg, "; CAP_DAC_READ_SEARCH (") || !strings.Contains(msg, "; CAP_SYS_PTRACE (") {
		t.Errorf("message for three missing: %q", msg)
	}
}

func TestName(t *testing.T) {
	if got := Name(unix.CAP_BPF); got != "CAP_BPF" {
		t.Errorf("Name(CAP_BPF) = %s", got)
	}
	if got := Name(7); got != "CAP_7" {
		t.Errorf("Name(7) = %s", got)
	}
}
