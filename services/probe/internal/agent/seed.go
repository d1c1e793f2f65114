package agent

import (
	"context"
	"runtime/debug"
	"time"

	"golang.org/x/sys/unix"

	"github.com/netpulse/netpulse/lib/eventpb"
	"github.com/netpulse/netpulse/services/probe/internal/sockdiag"
	"github.com/netpulse/netpulse/services/probe/internal/socktable"
	"github.com/netpulse/netpulse/services/probe/internal/tracer"
)

// bigSeed is the dump size from which seed hands the memory it used back
// to the OS (a forced GC: a few ms per 100k sockets, once).
const bigSeed = 10000

// SeedStats says what the start-up read of the existing sockets found.
type SeedStats struct {
	Done    bool   `json:"done"`
	Error   string `json:"error,omitempty"`
	Sockets int    `json:"sockets"` // sockets sock_diag listed
	Added   int    `json:"added"`   // new in the table
	Merged  int    `json:"merged"`  // already known from events
	Skipped int    `json:"skipped"` // TIME_WAIT and request sockets, not tracked
	Owners  int    `json:"owners"`  // sockets whose process the /proc scan found
	// OwnersDenied counts processes whose descriptors the /proc scan was
	// not allowed to read (without CAP_SYS_PTRACE: every other user's):
	// their sockets have no owner.
	OwnersDenied int     `json:"owners_denied"`
	Listeners    int     `json:"listeners"` // listening ports whose owner was given to the kernel side
	Seconds      float64 `json:"seconds"`
}

// seed reads the sockets that existed before the probe started, with their
// owners, into the socket table, and gives the owners of existing
// listening ports to the kernel side, so connections they accept are
// attributed before accept() runs.
func (p *Probe) seed(ctx context.Context, tr *tracer.Tracer) {
	start := time.Now()
	st := SeedStats{}
	fail := func(what string, err error) {
		p.log.Error("reading the existing sockets failed; sockets older than the probe stay unknown", "step", what, "err", err)
		p.mu.Lock()
		p.table.AbandonSeed()
		st.Error = what + ": " + err.Error()
		p.c.seed = st
		p.mu.Unlock()
	}
	d, err := sockdiag.NewDumper()
	if err != nil {
		fail("sock_diag", err)
		return
	}
	defer d.Close()
	n := sockdiag.CountHint()
	sockets, err := d.DumpStates(make([]sockdiag.Socket, 0, n+n/8+64), socktable.SeedStates)
	if err != nil {
		fail("sock_diag dump", err)
		return
	}
	if ctx.Err() != nil {
		return
	}
	owners, ost, err := sockdiag.Owners()
	if err != nil {
		fail("/proc scan", err)
		return
	}
	now := time.Now()
	p.mu.Lock()
	res := p.table.Seed(sockets, owners, now)
	listeners := p.table.Listeners(nil)
	p.mu.Unlock()

	seeded := 0
	for _, l := range listeners {
		if l.PID == 0 {
			continue
		}
		family := uint16(unix.AF_INET)
		if l.Family == eventpb.Family_FAMILY_IPV6 {
			family = unix.AF_INET6
		}
		if err := tr.SeedListener(family, l.Addr.Port(), tracer.Owner{PID: l.PID, Comm: l.Comm, CgroupID: l.CgroupID}); err != nil {
			p.log.Warn("seeding a listener's owner", "port", l.Addr.Port(), "err", err)
			continue
		}
		seeded++
	}
	st = SeedStats{
		Done: true, Sockets: len(sockets), Added: res.Added, Merged: res.Merged, Skipped: res.Skipped,
		Owners: ost.Sockets, OwnersDenied: ost.Denied, Listeners: seeded, Seconds: time.Since(start).Seconds(),
	}
	if ost.Denied > 0 {
		p.log.Warn("the /proc scan was refused some processes' descriptors; their sockets older than the probe have no owner (another user's need CAP_DAC_READ_SEARCH and CAP_SYS_PTRACE; a security module or hidepid can refuse too)",
			"processes", ost.Denied)
	}
	if len(sockets) >= bigSeed {
		// The dump and the owner map, no longer used, are the largest heap
		// the probe ever has: hand it back to the OS now rather than keep
		// it resident until the heap grows back.
		debug.FreeOSMemory()
	}
	p.mu.Lock()
	p.c.seed = st
	p.mu.Unlock()
	p.log.Info("existing sockets read", "sockets", st.Sockets, "added", st.Added, "merged", st.Merged,
		"skipped", st.Skipped, "owners", st.Owners, "owners_denied", st.OwnersDenied, "listeners", st.Listeners, "seconds", st.Seconds)
}
