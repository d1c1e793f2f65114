// Package caps checks, at start, that the probe holds the Linux
// capabilities it needs, so that a probe run without root stops at once
// naming what it lacks instead of failing later with a bare EPERM, or, worse,
// running with owners silently missing.
//
// The set, found by running the probe as an unprivileged user with each
// capability dropped in turn (tests/e2e/unprivileged_test.go does it on
// every `make test`; README "Running the probe without root"):
//
//   - CAP_BPF: create the maps (ring buffer, LRU hashes) and load the
//     programs. Without it even cilium/ebpf's memcg probe fails and it tries,
//     in vain, to raise RLIMIT_MEMLOCK.
//   - CAP_PERFMON: load tracing programs (tracepoint, raw tracepoint, with
//     bpf_probe_read_kernel) and open the tracepoints' perf events.
//   - CAP_DAC_READ_SEARCH: tracefs (/sys/kernel/tracing is mode 0700 root),
//     where the tracepoints' ids are; and the /proc/<pid>/fd directories of
//     other users' processes (mode 0500, their owner's).
//   - CAP_SYS_PTRACE: read those descriptors' links (readlink of
//     /proc/<pid>/fd/N is a ptrace access check): the owners of sockets that
//     are older than the probe. Needed only while sockets.seed or
//     sockets.resync_interval is on (the defaults).
//   - CAP_SYS_ADMIN: only when tracefs is mounted nowhere and the probe has to
//     mount it.
//
// Not needed: CAP_SYS_RESOURCE (BPF memory is charged to the memory cgroup
// since 5.11, no RLIMIT_MEMLOCK to raise), CAP_NET_ADMIN (sock_diag dumps the
// TCP sockets of the caller's network namespace for anyone), CAP_SYS_ADMIN
// otherwise (the probe never calls setns).
package caps

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"
)

// Requirement is one capability the probe needs, what for, and the broader
// capabilities the kernel also accepts in its place.
type Requirement struct {
	Cap    int    // unix.CAP_*
	Why    string // what breaks without it, briefly
	AlsoBy []int  // e.g. CAP_SYS_ADMIN for CAP_BPF and CAP_PERFMON
}

// Options says which optional features are on.
type Options struct {
	// ProcScan: the probe reads other processes' /proc/<pid>/fd for the
	// owners of existing sockets (sockets.seed or sockets.resync_interval).
	ProcScan bool
	// MountTracefs: tracefs is not mounted; the probe must mount it.
	MountTracefs bool
}

// Required is the set the probe needs with opts.
func Required(opts Options) []Requirement {
	r := []Requirement{
		{Cap: unix.CAP_BPF, Why: "create the eBPF maps and load the programs", AlsoBy: []int{unix.CAP_SYS_ADMIN}},
		{Cap: unix.CAP_PERFMON, Why: "load tracing programs and attach the tracepoints", AlsoBy: []int{unix.CAP_SYS_ADMIN}},
		{Cap: unix.CAP_DAC_READ_SEARCH, Why: "read tracefs, root's with mode 0700, and list other users' /proc/<pid>/fd", AlsoBy: []int{unix.CAP_DAC_OVERRIDE}},
	}
	if opts.ProcScan {
		r = append(r, Requirement{Cap: unix.CAP_SYS_PTRACE, Why: "read other users' socket descriptors in /proc/<pid>/fd, the owners of sockets older than the probe, while sockets.seed or sockets.resync_interval is on"})
	}
	if opts.MountTracefs {
		r = append(r, Requirement{Cap: unix.CAP_SYS_ADMIN, Why: "mount tracefs on /sys/kernel/tracing, which is not mounted; or mount it before the probe starts"})
	}
	return r
}

var names = map[int]string{
	unix.CAP_DAC_OVERRIDE:    "CAP_DAC_OVERRIDE",
	unix.CAP_DAC_READ_SEARCH: "CAP_DAC_READ_SEARCH",
	unix.CAP_SYS_PTRACE:      "CAP_SYS_PTRACE",
	unix.CAP_SYS_ADMIN:       "CAP_SYS_ADMIN",
	unix.CAP_SYS_RESOURCE:    "CAP_SYS_RESOURCE",
	unix.CAP_NET_ADMIN:       "CAP_NET_ADMIN",
	unix.CAP_PERFMON:         "CAP_PERFMON",
	unix.CAP_BPF:             "CAP_BPF",
}

// Name is the capability's name, CAP_BPF; "CAP_<n>" for one not listed.
func Name(c int) string {
	if n, ok := names[c]; ok {
		return n
	}
	return "CAP_" + strconv.Itoa(c)
}

// ParseEffective reads the effective set (CapEff) from the contents of
// /proc/<pid>/status.
func ParseEffective(status []byte) (uint64, error) {
	for _, line := range bytes.Split(status, []byte("\n")) {
		if rest, ok := bytes.CutPrefix(line, []byte("CapEff:")); ok {
			v, err := strconv.ParseUint(string(bytes.TrimSpace(rest)), 16, 64)
			if err != nil {
				return 0, fmt.Errorf("caps: CapEff %q: %w", bytes.TrimSpace(rest), err)
			}
			return v, nil
		}
	}
	return 0, errors.New("caps: no CapEff line in the process status")
}

func has(eff uint64, c int) bool { return c >= 0 && c < 64 && eff&(1<<uint(c)) != 0 }

// Missing lists the requirements eff satisfies neither with the capability
// itself nor with one of its alternatives, in reqs' order.
func Missing(eff uint64, reqs []Requirement) []Requirement {
	var out []Requirement
	for _, r := range reqs {
		ok := has(eff, r.Cap)
		for _, a := range r.AlsoBy {
			ok = ok || has(eff, a)
		}
		if !ok {
			out = append(out, r)
		}
	}
	return out
}

// Error is the start-up failure for missing capabilities.
type Error struct {
	Missing  []Requirement
	Required []Requirement
}

func (e *Error) Error() string {
	var b strings.Builder
	if len(e.Missing) == 1 {
		b.WriteString("missing capability ")
	} else {
		b.WriteString("missing capabilities ")
	}
	for i, r := range e.Missing {
		if i > 0 {
			b.WriteString("; ")
		}
		fmt.Fprintf(&b, "%s (%s)", Name(r.Cap), r.Why)
	}
	b.WriteString(". Run as root, or grant all of ")
	all := make([]string, len(e.Required))
	lower := make([]string, len(e.Required))
	for i, r := range e.Required {
		all[i] = Name(r.Cap)
		lower[i] = "+" + strings.ToLower(strings.TrimPrefix(Name(r.Cap), "CAP_"))
	}
	b.WriteString(strings.Join(all, ", "))
	fmt.Fprintf(&b, " (systemd: AmbientCapabilities=%s; setpriv --inh-caps=%s --ambient-caps=%s); see README \"Running the probe without root\"",
		strings.Join(all, " "), strings.Join(lower, ","), strings.Join(lower, ","))
	return b.String()
}

// CheckEffective returns an *Error when eff lacks one of reqs, else nil.
func CheckEffective(eff uint64, reqs []Requirement) error {
	if m := Missing(eff, reqs); len(m) > 0 {
		return &Error{Missing: m, Required: reqs}
	}
	return nil
}

// Check reads this process's effective capabilities and checks reqs. An
// unreadable /proc/self/status is returned as is (not an *Error): the caller
// may go on and let the kernel decide.
func Check(reqs []Requirement) error {
	status, err := os.ReadFile("/proc/self/status")
	if err != nil {
		return fmt.Errorf("caps: %w", err)
	}
	eff, err := ParseEffective(status)
	if err != nil {
		return err
	}
	return CheckEffective(eff, reqs)
}
