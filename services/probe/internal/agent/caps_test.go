package agent

import (
	"log/slog"
	"slices"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/netpulse/netpulse/services/probe/internal/caps"
)

// CAP_SYS_PTRACE is needed only while the /proc scan is on: the seed at
// start or the resyncs.
func TestRequiredCapabilities(t *testing.T) {
	has := func(cfg Config, c int) bool {
		p, err := New(cfg, slog.New(slog.DiscardHandler))
		if err != nil {
			t.Fatal(err)
		}
		return slices.ContainsFunc(p.requiredCapabilities(), func(r caps.Requirement) bool { return r.Cap == c })
	}
	cfg := DefaultConfig()
	for _, c := range []int{unix.CAP_BPF, unix.CAP_PERFMON, unix.CAP_DAC_READ_SEARCH, unix.CAP_SYS_PTRACE} {
		if !has(cfg, c) {
			t.Errorf("default configuration: capability %d not required", c)
		}
	}
	cfg.Sockets.Seed = false
	if !has(cfg, unix.CAP_SYS_PTRACE) {
		t.Error("resyncs on: CAP_SYS_PTRACE not required")
	}
	cfg.Sockets.ResyncInterval = 0
	if has(cfg, unix.CAP_SYS_PTRACE) {
		t.Error("no seed, no resyncs: CAP_SYS_PTRACE required anyway")
	}
	if !has(cfg, unix.CAP_BPF) {
		t.Error("no seed, no resyncs: CAP_BPF not required")
	}
}
