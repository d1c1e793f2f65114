package tracer

import (
	"errors"
	"fmt"

	"github.com/cilium/ebpf"

	"github.com/netpulse/netpulse/lib/eventpb"
	"github.com/netpulse/netpulse/lib/wire"
)

// RecordType is the first field of every ring-buffer record. 1..7 are the
// contract's EventType numbers; RecordConn is a finished connection.
type RecordType uint32

const (
	RecordStateChange      RecordType = 1
	RecordRetransmit       RecordType = 2
	RecordSynackRetransmit RecordType = 3
	RecordResetSent        RecordType = 4
	RecordResetReceived    RecordType = 5
	RecordSocketError      RecordType = 6
	RecordConnectFailed    RecordType = 7
	RecordConn             RecordType = 8

	// NumRecordTypes sizes arrays indexed by RecordType (index 0 unused).
	NumRecordTypes = 9
)

// String is the type's snake_case name, for counters and logs: the
// contract's event-type name, or its kind for a finished connection.
func (r RecordType) String() string {
	switch {
	case r == RecordConn:
		return wire.KindConn
	case r == 0 || r >= NumRecordTypes:
		return fmt.Sprintf("record_type_%d", uint32(r))
	}
	return wire.EventTypes.Name(eventpb.EventType(r))
}

// Indexes of the per-CPU counters array: enum counter_index in
// tcpstate.bpf.c (TestCounterLayout keeps them in step).
const (
	counterSubmitted        = 0
	counterDropped          = NumRecordTypes
	counterSockInsert       = 2 * NumRecordTypes
	counterSockDelete       = counterSockInsert + 1
	counterListenerInsert   = counterSockInsert + 2
	counterListenerDelete   = counterSockInsert + 3
	counterSynackInsert     = counterSockInsert + 4
	counterSynackDelete     = counterSockInsert + 5
	counterRetransmitFailed = counterSockInsert + 6
	counterAcceptUnresolved = counterSockInsert + 7
	counterDropPackets      = counterSockInsert + 8
	counterDropKeyless      = counterSockInsert + 9
	counterMax              = counterSockInsert + 10
)

// Counters are the programs' own totals since Open, summed over CPUs.
type Counters struct {
	// Submitted is the number of records written to the ring buffer.
	Submitted uint64
	// Dropped is the number of records lost because the ring buffer was
	// full (the reader fell behind).
	Dropped uint64
	// Per record type, indexed by RecordType; they sum to the two above.
	SubmittedByType [NumRecordTypes]uint64
	DroppedByType   [NumRecordTypes]uint64
	// Kernel-side inserts and deletes of the LRU maps (see MapUsage).
	Sockets, Listeners, Synacks MapCounters
	// RetransmitsFailed counts retransmit attempts the kernel gave up before
	// sending (and did not count in TcpRetransSegs): not reported.
	RetransmitsFailed uint64
	// AcceptsUnresolved counts accept() results whose socket could not be
	// read from the file table (the owner then stays the listener's).
	AcceptsUnresolved uint64
	// DroppedPackets counts the TCP packets the kernel dropped
	// (skb:kfree_skb); DropsKeyless those of them counted per reason only,
	// without their endpoints, because the drop map was full.
	DroppedPackets, DropsKeyless uint64
}

// MapCounters are the successful inserts and deletes of one map.
type MapCounters struct{ Inserts, Deletes uint64 }

// Counters reads the programs' counters.
func (t *Tracer) Counters() (Counters, error) {
	var all [counterMax]uint64
	m := t.maps.Maps[tcpstateMapCounters]
	var perCPU []uint64
	for idx := range all {
		if err := m.Lookup(uint32(idx), &perCPU); err != nil {
			return Counters{}, fmt.Errorf("tracer: read counter %d: %w", idx, err)
		}
		for _, v := range perCPU {
			all[idx] += v
		}
	}
	var c Counters
	for r := 1; r < NumRecordTypes; r++ {
		c.SubmittedByType[r] = all[counterSubmitted+r]
		c.DroppedByType[r] = all[counterDropped+r]
		c.Submitted += c.SubmittedByType[r]
		c.Dropped += c.DroppedByType[r]
	}
	c.Sockets = MapCounters{all[counterSockInsert], all[counterSockDelete]}
	c.Listeners = MapCounters{all[counterListenerInsert], all[counterListenerDelete]}
	c.Synacks = MapCounters{all[counterSynackInsert], all[counterSynackDelete]}
	c.RetransmitsFailed = all[counterRetransmitFailed]
	c.AcceptsUnresolved = all[counterAcceptUnresolved]
	c.DroppedPackets = all[counterDropPackets]
	c.DropsKeyless = all[counterDropKeyless]
	return c, nil
}

// Misses are, per tracepoint ("group:name"), the times the kernel did not
// run its program because a BPF program was already running on that CPU
// (the kernel's recursion guard: a softirq that interrupts one, or a map
// syscall). Their events never reach the ring buffer, so neither Submitted
// nor Dropped count them; every other BPF program on that tracepoint (a
// bpftrace one too) misses the same invocations. Tracepoints without
// misses are left out; nil when there are none or the kernel (before
// 5.12) does not count them.
func (t *Tracer) Misses() (map[string]uint64, error) {
	var m map[string]uint64
	for i, p := range t.progs {
		st, err := p.Stats()
		if err != nil {
			return nil, fmt.Errorf("tracer: statistics of %s: %w", t.tps[i], err)
		}
		if st.RecursionMisses > 0 {
			if m == nil {
				m = map[string]uint64{}
			}
			m[t.tps[i]] += st.RecursionMisses
		}
	}
	return m, nil
}

// MapUsage is the fill of one LRU map and what it lost.
type MapUsage struct {
	Name     string // config key stem: "socket", "listener", "synack", "drop"
	Capacity uint64 // max entries
	Live     uint64 // entries now
	Inserts  uint64 // since Open (kernel inserts, plus SeedListener's)
	Deletes  uint64
	// Evictions = Inserts - Deletes - Live: entries the LRU pushed out to
	// make room. The kernel keeps working while they are read, so Inserts
	// is read before the entries are counted and Deletes after: a socket
	// opened or closed meanwhile makes it smaller, never larger (no
	// evictions that did not happen; exact on a quiet map).
	Evictions uint64
}

// MapUsage counts the live entries of each LRU map (one batch syscall per
// 4096 entries: 7.5 ms for a full 65536-entry socket map here; see
// BenchmarkMapUsage) and derives evictions. Call it at stats intervals, not
// per event.
func (t *Tracer) MapUsage() ([]MapUsage, error) {
	before, err := t.Counters()
	if err != nil {
		return nil, err
	}
	socks, err := countEntries[uint64, tcpstateSockInfo](t.maps.Maps[tcpstateMapSocks])
	if err != nil {
		return nil, fmt.Errorf("tracer: count socket map: %w", err)
	}
	listeners, err := countEntries[tcpstateListenKey, tcpstateListenOwner](t.maps.Maps[tcpstateMapListeners])
	if err != nil {
		return nil, fmt.Errorf("tracer: count listener map: %w", err)
	}
	synacks, err := countEntries[tcpstateSynackKey, uint64](t.maps.Maps[tcpstateMapSynacks])
	if err != nil {
		return nil, fmt.Errorf("tracer: count synack map: %w", err)
	}
	after, err := t.Counters()
	if err != nil {
		return nil, err
	}
	span := func(b, a MapCounters) MapCounters { return MapCounters{Inserts: b.Inserts, Deletes: a.Deletes} }
	lc := span(before.Listeners, after.Listeners)
	lc.Inserts += t.listenerSeeds.Load()
	all := []MapUsage{
		usage("socket", t.maps.Maps[tcpstateMapSocks], span(before.Sockets, after.Sockets), socks),
		usage("listener", t.maps.Maps[tcpstateMapListeners], lc, listeners),
		usage("synack", t.maps.Maps[tcpstateMapSynacks], span(before.Synacks, after.Synacks), synacks),
	}
	if t.drops.slot != nil {
		u, err := t.dropMapUsage(after.DropsKeyless)
		if err != nil {
			return nil, err
		}
		all = append(all, u)
	}
	return all, nil
}

func usage(name string, m *ebpf.Map, c MapCounters, live uint64) MapUsage {
	u := MapUsage{Name: name, Capacity: uint64(m.MaxEntries()), Live: live, Inserts: c.Inserts, Deletes: c.Deletes}
	if gone := c.Deletes + live; c.Inserts > gone {
		u.Evictions = c.Inserts - gone
	}
	return u
}

const countBatch = 4096

// countEntries counts m's entries with batch lookups, or key by key where
// the kernel has no batch operations for the map type.
func countEntries[K, V any](m *ebpf.Map) (uint64, error) {
	keys := make([]K, countBatch)
	vals := make([]V, countBatch)
	var cursor ebpf.MapBatchCursor
	var n uint64
	for {
		got, err := m.BatchLookup(&cursor, keys, vals, nil)
		n += uint64(got)
		switch {
		case errors.Is(err, ebpf.ErrKeyNotExist):
			return n, nil
		case errors.Is(err, ebpf.ErrNotSupported):
			return countKeys[K](m)
		case err != nil:
			return 0, err
		}
	}
}

func countKeys[K any](m *ebpf.Map) (uint64, error) {
	var k K
	var n uint64
	it := m.Iterate()
	var v []byte
	for it.Next(&k, &v) {
		n++
	}
	return n, it.Err()
}
