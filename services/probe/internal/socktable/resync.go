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
//	table.BeginResync()           // under the caller's lock
//	dumper.DumpFunc(states, d.Add) // without it: events keep flowing
//	res := table.Resync(d, now)    // under the lock
//	owners for res.Added, netns of res.Unverified pids (without the lock)
//	table.SetScanOwners(owners); table.RemoveGone(gone) // under the lock
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
// instead of sockdiag.Socket's 190. Its memory is reused from dump to
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
	matched      bool
}

// NewDump returns an empty dump for this table.
func (t *Table) NewDump() *Dump { return &Dump{hashSeed: t.hashSeed} }

// Reset empties d for a dump of the given states.
func (d *Dump) Reset(states sockdiag.StateSet) {
	d.states = states
	d.socks = d.socks[:0]
	d.byTuple = d.byTuple[:0]
}

// Release drops d's memory (after a big dump: a 100k-socket dump holds
// 7 MiB) and empties it.
func (d *Dump) Release() {
	d.socks, d.byTuple = nil, nil
}

// Len is the number of sockets held.
func (d *Dump) Len() int { return len(d.socks) }

// Add keeps one dumped socket (a DumpFunc callback). Sockets of states the
// table does not track, of an unknown family or without a cookie are left
// out.
func (d *Dump) Add(s *sockdiag.Socket) {
	fam := diagFamily(s.Family)
	if fam == 0 || s.Cookie == 0 || !SeedStates.Has(s.State) || !d.states.Has(s.State) {
		return
	}
	r := dumpedSocket{
		cookie: s.Cookie, inode: uint32(s.Inode), rqueue: s.RQueue,
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
func (d *Dump) find(e *entry, h uint64) int {
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
		if !r.matched { // SO_REUSEPORT listeners share addresses
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
	// Added: sockets the kernel had and the table lacked, now entries
	// keyed by cookie until an event names them; their owners come from
	// SetScanOwners.
	Added []AddedSocket
	// Deferred: dumped sockets not added because they closed during the
	// dump or may be a connect whose events are in flight.
	Deferred int
	// Unverified: entries in the dumped states that the dump lacks, had no
	// event since BeginResync and were never in a dump: closed with the
	// CLOSE lost, or sockets of another network namespace (events come
	// from all, the dump from the probe's). Those with an owner are listed
	// for the caller to check the owner's namespace (RemoveGone).
	Unverified []Candidate
	// UnverifiedNoOwner: such entries without an owner, kept.
	UnverifiedNoOwner int
}

// AddedSocket is a socket Resync added.
type AddedSocket struct {
	Cookie uint64
	Inode  uint64
}

// Candidate is an entry the dump lacks and that may be gone.
type Candidate struct {
	SockID uint64
	PID    uint32
	State  eventpb.TcpState
}

type resyncScratch struct {
	added      []AddedSocket
	cands      []Candidate
	listeners  listenerSet
	connecting map[uint64]struct{} // (family, daddr, dport) of connects whose local port is unknown
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
	sc.added, sc.cands = sc.added[:0], sc.cands[:0]
	if sc.listeners == nil {
		sc.listeners = listenerSet{}
		sc.connecting = map[uint64]struct{}{}
	}
	clear(sc.listeners)
	clear(sc.connecting)
	d.index()
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
		j := d.find(e, t.tupleHash(e.family, &e.saddr, e.sport, &e.daddr, e.dport))
		switch {
		case j >= 0:
			r := &d.socks[j]
			r.matched = true
			e.flags |= flagInDump
			if e.cookie == 0 {
				e.cookie = r.cookie
			}
			e.rqueue = r.rqueue
			if !touched && e.state != r.state {
				e.state, e.since = r.state, resyncSince(r, nowNs)
				e.flags |= flagEstimated
				res.Fixed++
			}
		case touched || !d.states.Has(e.state):
			// Changed during the dump, or a state the dump did not cover.
		case e.flags&flagInDump != 0:
			t.remove(idx)
			res.Removed++
		case e.pid != 0 && e.flags&flagUnbound == 0:
			sc.cands = append(sc.cands, Candidate{SockID: e.sockID, PID: e.pid, State: eventpb.TcpState(e.state)})
		default:
			res.UnverifiedNoOwner++
		}
		idx = next
	}
	for i := range d.socks {
		if r := &d.socks[i]; r.state == sockdiag.StateListen {
			sc.listeners[netip.AddrPortFrom(addr(r.family, &r.saddr).Unmap(), r.sport)] = struct{}{}
		}
	}

	for i := range d.socks {
		r := &d.socks[i]
		if r.matched || !resyncStates.Has(r.state) {
			continue
		}
		if t.closedSincePending(r.cookie, r.tuple) || hasKey(sc.connecting, connectKey(t.hashSeed, r.family, &r.daddr, r.dport)) {
			res.Deferred++
			continue
		}
		if idx, ok := t.byCookie[r.cookie]; ok && t.at(idx).cookie == r.cookie {
			continue // an entry made during this loop (a duplicate dump record)
		}
		t.addDumped(r, nowNs, sc.listeners)
		sc.added = append(sc.added, AddedSocket{Cookie: r.cookie, Inode: uint64(r.inode)})
	}
	if len(sc.added) > 0 {
		// Events raised before the dump and read after it may still name
		// the added sockets: let Apply merge what they create (flagMayDup).
		t.seedEnd = max(t.seedEnd, nowNs+seedSlack)
	}
	t.AbandonSeed() // done: forget the closed sockets
	res.Added, res.Unverified = sc.added, sc.cands
	t.stats.ResyncRemoved += uint64(res.Removed)
	t.stats.ResyncAdded += uint64(len(res.Added))
	t.stats.ResyncFixed += uint64(res.Fixed)
	return res
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

// RemoveGone removes the Unverified candidates of the last Resync that
// the caller found to be of the probe's network namespace (their owner's),
// unless they had an event since. It returns how many it removed.
func (t *Table) RemoveGone(gone []Candidate) int {
	n := 0
	for _, c := range gone {
		idx, ok := t.byID[c.SockID]
		if !ok {
			continue
		}
		if e := t.at(idx); e.epoch != t.epoch && e.state == uint8(c.State) && e.pid == c.PID {
			t.remove(idx)
			n++
		}
	}
	t.stats.ResyncRemoved += uint64(n)
	return n
}
