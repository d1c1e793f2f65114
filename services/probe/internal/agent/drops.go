package agent

import (
	"net/netip"
	"time"

	"golang.org/x/sys/unix"

	"github.com/netpulse/netpulse/lib/eventpb"
	"github.com/netpulse/netpulse/services/probe/internal/sockdiag"
	"github.com/netpulse/netpulse/services/probe/internal/tracer"
)

// ListenOverflow is the reason of a listener's drops (DROP_SOURCE_LISTENER).
const ListenOverflow = "LISTEN_OVERFLOW"

// dropCollector gathers one interval's dropped packets: the kernel's
// counts per key (tracer.Drops) and the listeners' own drop counters
// (sock_diag), as DropCounts for kind drop. One goroutine uses it.
type dropCollector struct {
	dumper    *sockdiag.Dumper
	listeners []sockdiag.Socket
	// seen: each listener's sk_drops at the last good dump, by cookie;
	// primed once there was one (drops before the probe are not counted).
	seen, next map[uint64]uint32
	primed     bool
	// owners of listeners that dropped, by socket inode: a listener keeps
	// its owner, and /proc is scanned only for ones not yet known.
	owners  map[uint64]sockdiag.Owner
	scanner sockdiag.OwnerScanner
	want    map[uint64]struct{}
	found   map[uint64]sockdiag.Owner

	start time.Time // the interval's start: the last collection
	out   []*eventpb.DropCount
	used  int
}

func newDropCollector(start time.Time) *dropCollector {
	return &dropCollector{
		seen: map[uint64]uint32{}, next: map[uint64]uint32{}, owners: map[uint64]sockdiag.Owner{},
		want: map[uint64]struct{}{}, found: map[uint64]sockdiag.Owner{}, start: start,
	}
}

// prime takes the listeners' drop counters of now as the baseline: drops
// from before the probe started are not this interval's. A listener that
// appears later counts all of its drops. On failure the first good
// collect is the baseline instead.
func (c *dropCollector) prime() error {
	err := c.listenerDrops(0, 0)
	c.used = 0
	return err
}

func (c *dropCollector) close() {
	if c.dumper != nil {
		_ = c.dumper.Close()
	}
}

// collect returns the interval (c.start, now]'s drop counts, valid until
// the next call, and the errors of the two sources (what one of them
// could not read is missing, the other's is there).
func (c *dropCollector) collect(now time.Time, tr *tracer.Tracer) (drops []*eventpb.DropCount, kernelErr, listenErr error) {
	c.used = 0
	start, end := uint64(c.start.UnixNano()), uint64(now.UnixNano())
	c.start = now
	kernelErr = tr.Drops(func(d *tracer.Drop) {
		dc := c.alloc(start, end)
		dc.Source = eventpb.DropSource_DROP_SOURCE_KFREE_SKB
		dc.Reason = d.Reason
		dc.Family = family(d.Family)
		dc.Saddr, dc.Sport = addrBytes(dc.Saddr, d.Local), uint32(d.Local.Port())
		dc.Daddr, dc.Dport = addrBytes(dc.Daddr, d.Remote), uint32(d.Remote.Port())
		dc.Ingress = d.Ingress
		dc.Pid, dc.Comm, dc.CgroupId = d.Owner.PID, d.Owner.Comm, d.Owner.CgroupID
		dc.Count = d.Count
	})
	listenErr = c.listenerDrops(start, end)
	return c.out[:c.used], kernelErr, listenErr
}

// listenerDrops adds a count for every listener whose sk_drops grew since
// the last dump; a listener new since then counts all of its drops.
func (c *dropCollector) listenerDrops(start, end uint64) error {
	if c.dumper == nil {
		d, err := sockdiag.NewDumper()
		if err != nil {
			return err
		}
		c.dumper = d
	}
	var err error
	c.listeners, err = c.dumper.DumpListeners(c.listeners[:0])
	if err != nil {
		return err // the next good dump counts what this one missed
	}
	clear(c.next)
	clear(c.want)
	type pending struct {
		dc    *eventpb.DropCount
		inode uint64
	}
	var dropped []pending // listeners are few; those that dropped fewer
	for i := range c.listeners {
		s := &c.listeners[i]
		if !s.HasDrops {
			continue
		}
		c.next[s.Cookie] = s.Drops
		prev, known := c.seen[s.Cookie]
		if !c.primed || s.Drops == prev {
			continue
		}
		if !known {
			prev = 0
		}
		dc := c.alloc(start, end)
		dc.Source = eventpb.DropSource_DROP_SOURCE_LISTENER
		dc.Reason = ListenOverflow
		dc.Family = family(uint16(s.Family))
		dc.Saddr, dc.Sport = addrBytes(dc.Saddr, s.Src), uint32(s.Src.Port())
		dc.Daddr, dc.Dport = dc.Daddr[:0], 0
		dc.Ingress = true
		dc.Count = uint64(s.Drops - prev) // sk_drops wraps at 2^32: so does this
		dc.AcceptQueue, dc.Backlog = s.RQueue, s.WQueue
		dropped = append(dropped, pending{dc, s.Inode})
		if _, ok := c.owners[s.Inode]; !ok && s.Inode != 0 {
			c.want[s.Inode] = struct{}{}
		}
	}
	c.seen, c.next = c.next, c.seen
	c.primed = true
	if len(c.want) > 0 {
		// Owners unknown stay 0: drops are counted regardless.
		_, _ = c.scanner.ScanInodes(c.found, c.want)
		for ino, o := range c.found {
			c.owners[ino] = o
		}
	}
	for _, p := range dropped {
		o := c.owners[p.inode]
		p.dc.Pid, p.dc.Comm, p.dc.CgroupId = o.PID, o.Comm, o.CgroupID
	}
	if len(c.owners) > 4*len(c.listeners)+64 {
		clear(c.owners) // listeners come and go: keep it bounded
	}
	return nil
}

// alloc returns the next reused DropCount, zeroed but for its buffers.
func (c *dropCollector) alloc(start, end uint64) *eventpb.DropCount {
	if c.used == len(c.out) {
		c.out = append(c.out, &eventpb.DropCount{})
	}
	dc := c.out[c.used]
	c.used++
	saddr, daddr := dc.Saddr[:0], dc.Daddr[:0]
	*dc = eventpb.DropCount{Saddr: saddr, Daddr: daddr, StartUnixNano: start, EndUnixNano: end}
	return dc
}

func family(af uint16) eventpb.Family {
	switch af {
	case unix.AF_INET:
		return eventpb.Family_FAMILY_IPV4
	case unix.AF_INET6:
		return eventpb.Family_FAMILY_IPV6
	}
	return eventpb.Family_FAMILY_UNSPECIFIED
}

// addrBytes is a's 4 or 16 bytes in dst's memory; empty when a is not
// valid (drops counted without their key).
func addrBytes(dst []byte, a netip.AddrPort) []byte {
	if !a.IsValid() {
		return dst[:0]
	}
	if ip := a.Addr(); ip.Is4() {
		b := ip.As4()
		return append(dst[:0], b[:]...)
	}
	b := a.Addr().As16()
	return append(dst[:0], b[:]...)
}
