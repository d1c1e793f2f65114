package socktable

import (
	"cmp"
	"net/netip"
	"slices"
	"time"

	"github.com/netpulse/netpulse/lib/eventpb"
	"github.com/netpulse/netpulse/services/probe/internal/sockdiag"
)

// A resync reconciles the table with the kernel when events were lost
// (ring buffer full, kernel LRU evictions): without it a CLOSE_WAIT socket
// whose CLOSE was lost stays in the table for good, a false leak.
//
//	table.BeginResync()             // under the caller's lock
//	dumper.DumpFunc(states, d.Add)  // without it: events keep flowing
//	wait until the events the kernel raised so far are applied
//	res := table.Resync(d, now)     // under the lock
//	owners of res.Added from /proc  // without it
//	table.SetScanOwners(owners)     // under the lock
//
// Namespaces: events come from every network namespace, a dump only from
// the probe's. An entry a dump never listed is removed only when its local
// address is one the probe's namespace uses (seen as a local address in a
// dump) and not loopback, which every namespace has; the others are kept
// and counted as Unverified.
//
// Identity: a table entry is the dumped socket with its cookie (events
// carry the cookie once a dump assigned it); an entry without one (made by
// events since the last dump) or a listener (whose sock_diag cookie can
// differ from its own) is the dumped socket with its family, addresses and
// ports: two live non-listening sockets never share them.
//
// Races: an entry that had an event since BeginResync is never removed or
// corrected (the dump may predate the event); a dumped socket that closed
// since BeginResync (its CLOSE event was applied) is not added; a dumped
// socket that any entry matches is not added, whatever that entry's state.
// And events lag: the ring buffer holds what the kernel raised before the
// dump ended but the probe has not read yet. So nothing is changed on one
// dump's word: an entry is removed or corrected when two resyncs in a row
// found it gone (or in the same other state) with no event in between, and
// a socket is added when two resyncs in a row found it missing. Healing
// takes two resyncs; a lagging event never causes a change.

// resyncStates are the states Resync may add: SeedStates less SYN_SENT,
// whose entries know no local port until their next event, so a connect in
// flight would be added twice.
const resyncStates = SeedStates &^ (1 << sockdiag.StateSynSent)

// CloseWaitStates is what the cheap resync before each snapshot dumps:
// CLOSE_WAIT and LAST_ACK, the only state a CLOSE_WAIT socket can move to
// while still existing, so that a socket whose close() was lost is
// corrected rather than removed.
const CloseWaitStates = sockdiag.StateSet(1<<sockdiag.StateCloseWait | 1<<sockdiag.StateLastAck)

// Dump holds one sock_diag dump, compact, for Resync: 72 bytes a socket
// instead of sockdiag.Socket's 176. Its memory is reused from dump to
// dump. It touches no table state, so it fills without the table's lock.
type Dump struct {
	hashSeed uint64
	states   sockdiag.StateSet
	socks    []dumpedSocket // sorted by cookie by Resync
	byTuple  []int32        // indexes into socks, by tuple hash
}

type dumpedSocket struct {
	cookie       uint64
	tuple        uint64 // tupleHash
	saddr, daddr [16]byte
	inode        uint32
	recvAgoMs    uint32 // CLOSE_WAIT: since the kernel last received anything; 0 unknown
	rqueue       uint32
	sport, dport uint16
	family       uint8 // eventpb.Family
	state        uint8
	match        int32 // the entry that is this socket, nilIdx when none yet
}

// NewDump returns an empty dump for this table.
func (t *Table) NewDump() *Dump { return &Dump{hashSeed: t.hashSeed} }

// Reset empties d for a dump of the given states.
func (d *Dump) Reset(states sockdiag.StateSet) {
	d.states = states
	d.socks = d.socks[:0]
	d.byTuple = d.byTuple[:0]
}

// Grow makes room for n more sockets: sized up front, a big dump does not
// leave the arrays of its append growth behind for the GC.
func (d *Dump) Grow(n int) { d.socks = slices.Grow(d.socks, n) }

// Release drops d's memory (after a big dump: a 100k-socket dump holds
// 7 MiB) and empties it.
func (d *Dump) Release() {
	d.socks, d.byTuple = nil, nil
}

// Len is the number of sockets held.
func (d *Dump) Len() int { return len(d.socks) }

// Add keeps one dumped socket (a DumpFunc callback). Sockets of states the
// table does not track, of an unknown family, without a cookie or without
// tcp_info are left out: only full sockets have tcp_info, and sock_diag
// lists timewait sockets in substate FIN_WAIT2 as FIN_WAIT2.
func (d *Dump) Add(s *sockdiag.Socket) {
	fam := diagFamily(s.Family)
	if fam == 0 || s.Cookie == 0 || s.Info.Len == 0 || !SeedStates.Has(s.State) || !d.states.Has(s.State) {
		return
	}
	r := dumpedSocket{
		match: nilIdx, cookie: s.Cookie, inode: uint32(s.Inode), rqueue: s.RQueue,
		sport: s.Src.Port(), dport: s.Dst.Port(), family: fam, state: s.State,
	}
	putAddr(&r.saddr, fam, s.Src.Addr())
	putAddr(&r.daddr, fam, s.Dst.Addr())
	if s.State == sockdiag.StateCloseWait && s.Info.Len > 0 {
		r.recvAgoMs = max(min(s.Info.LastAckRecvMs, s.Info.LastDataRecvMs), 1)
	}
	r.tuple = tupleHashSeed(d.hashSeed, fam, &r.saddr, r.sport, &r.daddr, r.dport)
	d.socks = append(d.socks, r)
}

// index sorts the sockets by cookie and builds the tuple index.
func (d *Dump) index() {
	slices.SortFunc(d.socks, func(a, b dumpedSocket) int { return cmp.Compare(a.cookie, b.cookie) })
	d.byTuple = d.byTuple[:0]
	for i := range d.socks {
		d.byTuple = append(d.byTuple, int32(i))
	}
	slices.SortFunc(d.byTuple, func(a, b int32) int { return cmp.Compare(d.socks[a].tuple, d.socks[b].tuple) })
}

// find returns the dumped socket entry e is, or -1.
func (d *Dump) find(e *entry) int {
	listen := e.state == uint8(eventpb.TcpState_TCP_STATE_LISTEN)
	if e.cookie != 0 {
		if j, ok := slices.BinarySearchFunc(d.socks, e.cookie, func(r dumpedSocket, c uint64) int { return cmp.Compare(r.cookie, c) }); ok {
			return j
		}
		if !listen {
			return -1 // another socket, or none: the cookie would have matched
		}
	}
	if e.sport == 0 {
		return -1 // a connect whose local port no event has told yet
	}
	first := -1
	h := tupleHashSeed(d.hashSeed, e.family, &e.saddr, e.sport, &e.daddr, e.dport)
	k, _ := slices.BinarySearchFunc(d.byTuple, h, func(i int32, h uint64) int { return cmp.Compare(d.socks[i].tuple, h) })
	for ; k < len(d.byTuple) && d.socks[d.byTuple[k]].tuple == h; k++ {
		j := int(d.byTuple[k])
		r := &d.socks[j]
		if r.family != e.family || r.saddr != e.saddr || r.daddr != e.daddr || r.sport != e.sport || r.dport != e.dport {
			continue
		}
		if e.cookie != 0 && !listen {
			continue
		}
		if r.match == nilIdx { // SO_REUSEPORT listeners share addresses
			return j
		}
		if first < 0 {
			first = j
		}
	}
	return first
}

// ResyncResult says what one Resync did. Added and Unverified are valid
// until the next Resync.
type ResyncResult struct {
	Dumped  int // sockets of the dumped states the dump held
	Removed int // entries the kernel no longer had
	Fixed   int // entries whose state was corrected
	// Duplicates: entries dropped because another entry is the same
	// socket (a seeded entry its events did not find).
	Duplicates int
	// Pending: entries and sockets found wrong or missing for the first
	// time: acted on if the next resync finds the same.
	Pending int
	// Added: sockets the kernel had and the table lacked, now entries
	// keyed by cookie until an event names them; their owners come from
	// SetScanOwners.
	Added []AddedSocket
	// Deferred: dumped sockets not added because they closed during the
	// dump, may be a connect whose events are in flight, or were beyond
	// the maxMissing this resync notes.
	Deferred int
	// Unverified: entries in the dumped states that two dumps in a row
	// lacked with no event in between, never listed by a dump, on a
	// loopback address or one the probe's namespace does not use: closed
	// with the CLOSE lost, or sockets of another network namespace. Kept.
	Unverified int
}

// AddedSocket is a socket Resync added.
type AddedSocket struct {
	Cookie uint64
	Inode  uint64
}

type resyncScratch struct {
	added     []AddedSocket
	listeners listenerSet
	// localAddrs: the probe's namespace's own addresses, as local
	// addresses of dumped sockets (not loopback or wildcard); remade by
	// each dump of every state.
	localAddrs map[netip.Addr]struct{}
	connecting map[uint64]struct{} // (family, daddr, dport) of connects whose local port is unknown
	// missing: dumped sockets the table lacked at the last resync that
	// covered their state, by cookie, with that state; next: being made.
	missing, next map[uint64]uint8
}

// BeginResync starts a resync: from now on the table notes which entries
// have events (they are left as they are) and which sockets close (not
// added back). Call Resync or AbandonSeed after the dump. Do not call it
// while the start-up seed is pending.
func (t *Table) BeginResync() {
	t.epoch++
	t.recording = true
}

// Resync reconciles the table with d, a dump taken since BeginResync of the
// states d was Reset with (see the package's resync comment): entries in
// those states that the kernel no longer has are removed, sockets it has
// and the table lacks are added, and states that differ are corrected.
// now is when the dump finished.
func (t *Table) Resync(d *Dump, now time.Time) ResyncResult {
	nowNs := now.UnixNano()
	sc := &t.resync
	sc.added = sc.added[:0]
	if sc.listeners == nil {
		sc.listeners, sc.connecting = listenerSet{}, map[uint64]struct{}{}
		sc.missing, sc.next = map[uint64]uint8{}, map[uint64]uint8{}
		sc.localAddrs = map[netip.Addr]struct{}{}
	}
	clear(sc.listeners)
	clear(sc.connecting)
	d.index()
	if d.states&SeedStates == SeedStates {
		clear(sc.localAddrs) // addresses come and go
	}
	for i := range d.socks {
		a := addr(d.socks[i].family, &d.socks[i].saddr).Unmap()
		if !a.IsLoopback() && !a.IsUnspecified() && len(sc.localAddrs) < maxLocalAddrs {
			sc.localAddrs[a] = struct{}{}
		}
	}
	res := ResyncResult{Dumped: len(d.socks)}

	for idx := t.head; idx != nilIdx; {
		e := t.at(idx)
		next := e.next
		touched := e.epoch == t.epoch
		if e.state == uint8(eventpb.TcpState_TCP_STATE_LISTEN) {
			sc.listeners[netip.AddrPortFrom(addr(e.family, &e.saddr).Unmap(), e.sport)] = struct{}{}
		}
		if e.sport == 0 && touched {
			sc.connecting[connectKey(t.hashSeed, e.family, &e.daddr, e.dport)] = struct{}{}
		}
		j := d.find(e)
		switch {
		case j >= 0 && d.socks[j].match != nilIdx:
			t.dropDuplicate2(&d.socks[j], idx, &res)
		case j >= 0:
			r := &d.socks[j]
			r.match = idx
			e.flags |= flagInDump
			if e.cookie == 0 {
				e.cookie = r.cookie
			}
			e.rqueue = r.rqueue
			switch {
			case touched || e.state == r.state:
				e.flags &^= flagSuspect
			case e.flags&flagSuspect == 0:
				e.flags |= flagSuspect
				res.Pending++
			default:
				e.state, e.since = r.state, resyncSince(r, nowNs)
				e.flags = e.flags&^flagSuspect | flagEstimated
				res.Fixed++
			}
		case touched || !d.states.Has(e.state):
			// Changed during the dump, or a state the dump did not cover.
		case e.flags&flagSuspect == 0:
			e.flags |= flagSuspect
			res.Pending++
		case e.flags&flagInDump != 0:
			t.remove(idx)
			res.Removed++
		case hasAddr(sc.localAddrs, addr(e.family, &e.saddr).Unmap()):
			t.remove(idx)
			res.Removed++
		default:
			res.Unverified++
		}
		idx = next
	}
	for i := range d.socks {
		if r := &d.socks[i]; r.state == sockdiag.StateListen {
			sc.listeners[netip.AddrPortFrom(addr(r.family, &r.saddr).Unmap(), r.sport)] = struct{}{}
		}
	}

	// What was missing at the last resync that covered it and was not
	// found now stays on record.
	sc.next = emptied(sc.next)
	for c, st := range sc.missing {
		if !d.states.Has(st) {
			sc.next[c] = st
		}
	}
	for i := range d.socks {
		r := &d.socks[i]
		if r.match != nilIdx || !resyncStates.Has(r.state) {
			continue
		}
		if t.closedSincePending(r.cookie, r.tuple) || hasKey(sc.connecting, connectKey(t.hashSeed, r.family, &r.daddr, r.dport)) {
			res.Deferred++
			continue
		}
		if _, ok := sc.missing[r.cookie]; !ok {
			if len(sc.next) < maxMissing {
				sc.next[r.cookie] = r.state
				res.Pending++
			} else {
				res.Deferred++
			}
			continue
		}
		if idx, ok := t.byCookie[r.cookie]; ok && t.at(idx).cookie == r.cookie {
			continue // an entry made during this loop (a duplicate dump record)
		}
		t.addDumped(r, nowNs, sc.listeners)
		sc.added = append(sc.added, AddedSocket{Cookie: r.cookie, Inode: uint64(r.inode)})
	}
	sc.missing, sc.next = sc.next, sc.missing
	if len(sc.added) > 0 {
		// Events raised before the dump and read after it may still name
		// the added sockets: let Apply merge what they create (flagMayDup).
		t.seedEnd = max(t.seedEnd, nowNs+seedSlack)
	}
	t.AbandonSeed() // done: forget the closed sockets
	res.Added = sc.added
	t.stats.ResyncRemoved += uint64(res.Removed)
	t.stats.ResyncAdded += uint64(len(res.Added))
	t.stats.ResyncFixed += uint64(res.Fixed)
	t.stats.Duplicates += uint64(res.Duplicates)
	return res
}

// dropDuplicate2 handles entry idx matching dumped socket r that another
// entry already matched: two entries for one socket, which happens when
// events made an entry for a seeded or added socket without finding it.
// The unbound one (no event names it) goes, after giving the other what
// only it knew.
func (t *Table) dropDuplicate2(r *dumpedSocket, idx int32, res *ResyncResult) {
	keep, drop := r.match, idx
	if t.at(keep).flags&flagUnbound != 0 && t.at(drop).flags&flagUnbound == 0 {
		keep, drop = drop, keep
	}
	k, d := t.at(keep), t.at(drop)
	if d.flags&flagUnbound == 0 || k.state == 0 {
		return // two bound entries: not ours to merge (a listener pair)
	}
	if rank(eventpb.OwnerSource(d.owner)) > rank(eventpb.OwnerSource(k.owner)) {
		t.setOwner(k, d.pid, t.comms.str(d.comm), d.cgroupID, eventpb.OwnerSource(d.owner))
	}
	if k.cookie == 0 {
		k.cookie = d.cookie
	}
	k.flags |= flagInDump
	r.match = keep
	t.remove(drop)
	res.Duplicates++
}

// addDumped makes an entry for a dumped socket the table lacked, keyed by
// its cookie until an event names it.
func (t *Table) addDumped(r *dumpedSocket, nowNs int64, listeners listenerSet) {
	idx := t.insert()
	e := t.at(idx)
	e.cookie = r.cookie
	e.family, e.saddr, e.daddr, e.sport, e.dport = r.family, r.saddr, r.daddr, r.sport, r.dport
	e.state, e.since = r.state, resyncSince(r, nowNs)
	e.rqueue = r.rqueue
	e.flags = flagUnbound | flagEstimated | flagInDump
	e.epoch = t.epoch
	e.side = uint8(eventpb.Side_SIDE_CLIENT)
	if r.state == sockdiag.StateListen || listeners.has(netip.AddrPortFrom(addr(r.family, &r.saddr), r.sport)) {
		e.side = uint8(eventpb.Side_SIDE_SERVER)
	}
	t.byCookie[r.cookie] = idx
	if h := r.tuple; !hasKey(t.byTuple, h) {
		t.byTuple[h] = idx
	}
}

// resyncSince is when a dumped socket entered its state, as Seed estimates
// it.
func resyncSince(r *dumpedSocket, nowNs int64) int64 {
	if r.state != sockdiag.StateCloseWait || r.recvAgoMs == 0 {
		return nowNs
	}
	return nowNs - int64(r.recvAgoMs)*int64(time.Millisecond)
}

// connectKey identifies a connect by what its first event knows: family
// and remote address and port.
func connectKey(seed uint64, fam uint8, da *[16]byte, dport uint16) uint64 {
	var zero [16]byte
	return tupleHashSeed(seed, fam, &zero, 0, da, dport)
}

// SetScanOwners gives the sockets the last Resync added their owners from
// a /proc scan (by inode), unless an event named them since. It returns
// how many it set.
func (t *Table) SetScanOwners(owners map[uint64]sockdiag.Owner) int {
	n := 0
	for _, a := range t.resync.added {
		o, ok := owners[a.Inode]
		if !ok || a.Inode == 0 {
			continue
		}
		idx, ok := t.byCookie[a.Cookie]
		if !ok {
			continue
		}
		if e := t.at(idx); e.flags&flagUnbound != 0 && e.cookie == a.Cookie && rank(eventpb.OwnerSource(e.owner)) < rank(eventpb.OwnerSource_OWNER_SOURCE_SCAN) {
			t.setOwner(e, o.PID, o.Comm, o.CgroupID, eventpb.OwnerSource_OWNER_SOURCE_SCAN)
			n++
		}
	}
	return n
}

// maxMissing bounds the missing sockets one resync notes, and so those the
// next adds and looks up in /proc: after a failed seed, 100k sockets are
// added over several resyncs rather than at once (and memory stays small).
const maxMissing = 16384

// emptied returns m cleared, or a new map if m grew big: Go maps never
// shrink, and a big resync should not keep its memory until the next.
func emptied[K comparable, V any](m map[K]V) map[K]V {
	if len(m) > 1024 {
		return make(map[K]V)
	}
	clear(m)
	return m
}

// maxLocalAddrs bounds the addresses Resync remembers as the namespace's.
const maxLocalAddrs = 4096

func hasAddr(m map[netip.Addr]struct{}, a netip.Addr) bool {
	_, ok := m[a]
	return ok
}
