package agent

import (
	"runtime/debug"
	"sync"
	"time"

	"github.com/netpulse/netpulse/services/probe/internal/sockdiag"
	"github.com/netpulse/netpulse/services/probe/internal/socktable"
)

// resyncer holds what reconciling the table with the kernel reuses from
// run to run. Its mutex serialises the runs (the full one and the one
// before each snapshot share the dumper).
type resyncer struct {
	mu        sync.Mutex
	dumper    *sockdiag.Dumper
	dump      *socktable.Dump
	scanner   sockdiag.OwnerScanner
	owners    map[uint64]sockdiag.Owner
	want      map[uint64]struct{}
	errLogged map[string]bool
}

// resyncCounters are the resync figures of the stats document.
type resyncCounters struct {
	runs, fullRuns, errs uint64
	lagging              uint64  // runs given up: the reader was behind
	lastSeconds          float64 // the last run, either kind
	lastFullSeconds      float64
	unverified           int // entries the last full run could not judge, kept
	deferred             int
}

func (r *resyncer) close() {
	if r.dumper != nil {
		_ = r.dumper.Close()
	}
}

// resync reconciles the table with the kernel's sockets in states (see
// socktable.Resync); full says it is the periodic one over every tracked
// state. A failure is counted and logged once per kind; the table is then
// left as it was.
func (p *Probe) resync(states sockdiag.StateSet, full bool) {
	r := &p.rs
	r.mu.Lock()
	defer r.mu.Unlock()
	start := time.Now()
	p.mu.Lock()
	if !p.resyncReady {
		p.mu.Unlock()
		return // the start-up seed is still running
	}
	if r.dump == nil {
		r.dump = p.table.NewDump()
	}
	p.table.BeginResync()
	p.mu.Unlock()

	if r.dumper == nil {
		d, err := sockdiag.NewDumper()
		if err != nil {
			p.resyncFailed("sock_diag", err)
			return
		}
		r.dumper = d
	}
	r.dump.Reset(states)
	if full {
		n := sockdiag.CountHint()
		r.dump.Grow(n + n/8)
	}
	if err := r.dumper.DumpFunc(states, r.dump.Add); err != nil {
		p.resyncFailed("sock_diag dump", err)
		return
	}
	if !p.caughtUp() {
		// The ring buffer still holds events from before the dump: the
		// table would look wrong where it is only late. Next time.
		p.mu.Lock()
		p.table.AbandonSeed()
		p.c.resync.lagging++
		p.mu.Unlock()
		return
	}

	p.mu.Lock()
	res := p.table.Resync(r.dump, time.Now())
	if r.want == nil {
		r.want, r.owners = map[uint64]struct{}{}, map[uint64]sockdiag.Owner{}
	}
	r.want = emptied(r.want)
	for _, a := range res.Added {
		if a.Inode != 0 {
			r.want[a.Inode] = struct{}{}
		}
	}
	unverified, deferred := res.Unverified, res.Deferred
	p.mu.Unlock()

	// Without the lock: the /proc scan reads every process's descriptors.
	if len(r.want) > 0 {
		if _, err := r.scanner.ScanInodes(r.owners, r.want); err != nil {
			p.resyncFailed("/proc scan", err)
		} else {
			p.mu.Lock()
			p.table.SetScanOwners(r.owners)
			p.mu.Unlock()
		}
		r.owners = emptied(r.owners)
	}
	if full && r.dump.Len() >= bigSeed {
		// 7 MiB per 100k sockets, and the garbage of sorting it: hand it
		// back to the OS now (a forced GC, a few ms) rather than let the
		// heap, and the RSS, grow towards memory_limit between runs.
		r.dump.Release()
		debug.FreeOSMemory()
	}

	secs := time.Since(start).Seconds()
	p.mu.Lock()
	c := &p.c.resync
	c.runs++
	c.lastSeconds = secs
	if full {
		c.fullRuns++
		c.lastFullSeconds = secs
		c.unverified, c.deferred = unverified, deferred
	}
	p.mu.Unlock()
}

// caughtUp waits, for at most maxResyncLag, until the probe has read every
// record the kernel had written to the ring buffer when it is called. It
// reports false if it gave up; true when the kernel's counters cannot be
// read.
func (p *Probe) caughtUp() bool {
	target, ok := p.kernelSubmitted()
	if !ok {
		return true
	}
	for deadline := time.Now().Add(maxResyncLag); ; {
		p.mu.Lock()
		seen := p.c.seen
		p.mu.Unlock()
		if seen >= target {
			return true
		}
		if time.Now().After(deadline) {
			return false
		}
		time.Sleep(5 * time.Millisecond) // polls the reader's progress
	}
}

// maxResyncLag is how far behind the kernel the reader may be for a
// resync to wait for it: a full 16 MiB ring buffer is about 1 s of events
// at 100k/s.
const maxResyncLag = 3 * time.Second

// emptied returns m cleared, or a new map if m grew big: Go maps never
// shrink.
func emptied[K comparable, V any](m map[K]V) map[K]V {
	if len(m) > 1024 {
		return make(map[K]V)
	}
	clear(m)
	return m
}

// resyncFailed counts a failed resync, logs it once per kind of failure
// and stops the table's recording of closed sockets.
func (p *Probe) resyncFailed(what string, err error) {
	r := &p.rs
	if r.dumper != nil && what != "/proc scan" {
		_ = r.dumper.Close() // reopened by the next run
		r.dumper = nil
	}
	p.mu.Lock()
	p.c.resync.errs++
	if what != "/proc scan" {
		p.table.AbandonSeed()
	}
	p.mu.Unlock()
	if r.errLogged == nil {
		r.errLogged = map[string]bool{}
	}
	if !r.errLogged[what] {
		r.errLogged[what] = true
		p.log.Error("socket table resync failed; the table stays as it is (counted in resync_errors; logged once per step)", "step", what, "err", err)
	}
}
