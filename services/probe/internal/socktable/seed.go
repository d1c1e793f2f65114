package socktable

import (
	"encoding/binary"
	"net/netip"
	"time"

	"golang.org/x/sys/unix"

	"github.com/netpulse/netpulse/lib/eventpb"
	"github.com/netpulse/netpulse/services/probe/internal/mix"
	"github.com/netpulse/netpulse/services/probe/internal/sockdiag"
)

// SeedResult says what one Seed call did with the sockets it was given.
type SeedResult struct {
	Added   int // new entries
	Merged  int // sockets the table already had (from events or an earlier Seed)
	Skipped int // not tracked: TIME_WAIT (FIN_WAIT2 ones too), NEW_SYN_RECV, CLOSE, no cookie
	Closed  int // closed after the dump, before Seed
}

// SeedStates are the states Seed tracks; dump only these. TIME_WAIT and
// request sockets never raise a closing event, so they would stay until
// evicted; a busy host has tens of thousands of them.
const SeedStates = sockdiag.AllStates &^ (1<<sockdiag.StateTimeWait | 1<<sockdiag.StateNewSynRecv | 1<<sockdiag.StateClose)

// AbandonSeed tells the table no Seed (or Resync) will follow (the dump
// failed), so it stops remembering closed sockets.
func (t *Table) AbandonSeed() {
	t.recording = false
	t.closedCookies = make(map[uint64]struct{})
	t.closedTuples = make(map[uint64]struct{})
}

// recordClose remembers a socket that closed while a seed is pending.
func (t *Table) recordClose(ev *eventpb.Event, fam uint8) {
	if len(t.closedCookies)+len(t.closedTuples) >= 2*t.max {
		t.stats.CloseRecordsLost++
		return
	}
	if ev.Cookie != 0 {
		t.closedCookies[ev.Cookie] = struct{}{}
	}
	var sa, da [16]byte
	copy(sa[:], ev.Saddr)
	copy(da[:], ev.Daddr)
	t.closedTuples[t.tupleHash(fam, &sa, uint16(ev.Sport), &da, uint16(ev.Dport))] = struct{}{}
}

// closedSincePending reports whether a dumped socket closed after the dump.
// By address alone when the cookies differ: a listener's sock_diag cookie
// can differ from its own, and a closing event may carry none. A new
// socket reusing the addresses within the pending window would be
// mistaken for the closed one only if no event had put it in the table.
func (t *Table) closedSincePending(cookie, tuple uint64) bool {
	if _, ok := t.closedCookies[cookie]; ok {
		return true
	}
	_, ok := t.closedTuples[tuple]
	return ok
}

// Seed adds the sockets that existed before the probe, read through
// sock_diag, with their owners from the /proc scan (keyed by inode). now
// is when the dump finished.
//
// The probe attaches its tracepoints before dumping, so a socket created
// in between may already be in the table from its events: such a socket
// (same cookie, or same addresses and state) is merged, its event data
// kept and only what events lack (cookie, owner) filled in. Every other
// socket gets a new entry keyed by its cookie until an event names it
// (Apply binds it to the event's sock_id).
//
// A pre-existing socket's side is SERVER when a LISTEN socket exists on its
// local address (or the wildcard address) and port, else CLIENT. Its time
// in state is unknown: StateSince is now, marked estimated, except for
// CLOSE_WAIT, where it is the time the kernel last received anything
// (min of tcp_info last_ack_recv and last_data_recv): the FIN came no
// later than that, so the age is a lower bound.
func (t *Table) Seed(sockets []sockdiag.Socket, owners map[uint64]sockdiag.Owner, now time.Time) SeedResult {
	var res SeedResult
	nowNs := now.UnixNano()
	listeners := t.listenerSet(sockets)
	known := t.indexBound()

	for i := range sockets {
		s := &sockets[i]
		fam := diagFamily(s.Family)
		if fam == 0 || s.Cookie == 0 || !SeedStates.Has(s.State) || isTimeWait(s) {
			res.Skipped++
			continue
		}
		var sa, da [16]byte
		putAddr(&sa, fam, s.Src.Addr())
		putAddr(&da, fam, s.Dst.Addr())
		sport, dport := s.Src.Port(), s.Dst.Port()

		idx := known.find(t, s.Cookie, tupleKey(fam, &sa, sport, &da, dport, s.State))
		if idx == nilIdx {
			if j, ok := t.byCookie[s.Cookie]; ok { // seeded before
				idx = j
			}
		}
		tuple := t.tupleHash(fam, &sa, sport, &da, dport)
		if idx == nilIdx && t.closedSincePending(s.Cookie, tuple) {
			res.Closed++
			continue
		}
		if idx != nilIdx {
			e := t.at(idx)
			e.flags |= flagInDump
			if e.cookie == 0 {
				e.cookie = s.Cookie
			}
			if e.flags&flagUnbound != 0 && e.state != s.State { // seeded again, moved on meanwhile
				e.state, e.since = s.State, seedSince(s, nowNs)
				e.flags |= flagEstimated
			}
			e.rqueue = s.RQueue
			if o, ok := owners[s.Inode]; ok && s.Inode != 0 && rank(eventpb.OwnerSource(e.owner)) < rank(eventpb.OwnerSource_OWNER_SOURCE_SCAN) {
				t.setOwner(e, o.PID, o.Comm, o.CgroupID, eventpb.OwnerSource_OWNER_SOURCE_SCAN)
			}
			res.Merged++
			continue
		}

		idx = t.insert()
		e := t.at(idx)
		e.cookie = s.Cookie
		e.family, e.saddr, e.daddr, e.sport, e.dport = fam, sa, da, sport, dport
		e.state = s.State
		e.since = seedSince(s, nowNs)
		e.rqueue = s.RQueue
		e.flags = flagSeeded | flagUnbound | flagEstimated | flagInDump
		e.side = uint8(eventpb.Side_SIDE_CLIENT)
		if s.State == sockdiag.StateListen || listeners.has(s.Src) {
			e.side = uint8(eventpb.Side_SIDE_SERVER)
		}
		if o, ok := owners[s.Inode]; ok && s.Inode != 0 {
			t.setOwner(e, o.PID, o.Comm, o.CgroupID, eventpb.OwnerSource_OWNER_SOURCE_SCAN)
		}
		t.byCookie[s.Cookie] = idx
		// Two seeded sockets with one address tuple (SO_REUSEPORT
		// listeners): the second is found by cookie only.
		if !hasKey(t.byTuple, tuple) {
			t.byTuple[tuple] = idx
		}
		res.Added++
	}
	t.seeded = true
	t.seedEnd = max(t.seedEnd, nowNs+seedSlack)
	t.AbandonSeed() // done: forget the closed sockets
	t.stats.SeedClosed += uint64(res.Closed)
	t.stats.Seeded += uint64(res.Added)
	t.stats.SeedMerged += uint64(res.Merged)
	t.stats.SeedSkipped += uint64(res.Skipped)
	return res
}

// isTimeWait reports a dumped socket that is a timewait socket in
// substate FIN_WAIT2 (what an orphaned client becomes: sock_diag reports
// the substate): the full socket's CLOSE event came already and the
// timewait socket raises none. Full sockets always come with tcp_info.
func isTimeWait(s *sockdiag.Socket) bool {
	return s.State == sockdiag.StateFinWait2 && s.Info.Len == 0
}

// seedSince estimates when a dumped socket entered its state; see Seed.
func seedSince(s *sockdiag.Socket, nowNs int64) int64 {
	if s.State != sockdiag.StateCloseWait || s.Info.Len == 0 {
		return nowNs
	}
	return nowNs - int64(min(s.Info.LastAckRecvMs, s.Info.LastDataRecvMs))*int64(time.Millisecond)
}

func diagFamily(f uint8) uint8 {
	switch f {
	case unix.AF_INET:
		return uint8(eventpb.Family_FAMILY_IPV4)
	case unix.AF_INET6:
		return uint8(eventpb.Family_FAMILY_IPV6)
	}
	return 0
}

// putAddr stores a the way events carry it: 4 bytes for an IPv4 socket, 16
// (v4-mapped included) for an IPv6 one.
func putAddr(dst *[16]byte, fam uint8, a netip.Addr) {
	if fam == uint8(eventpb.Family_FAMILY_IPV4) {
		a4 := a.Unmap().As4()
		copy(dst[:4], a4[:])
		return
	}
	*dst = a.As16()
}

// listenerSet holds the local addresses of LISTEN sockets, from the dump
// and from the table.
type listenerSet map[netip.AddrPort]struct{}

func (t *Table) listenerSet(sockets []sockdiag.Socket) listenerSet {
	ls := listenerSet{}
	for i := range sockets {
		if s := &sockets[i]; s.State == sockdiag.StateListen {
			ls[netip.AddrPortFrom(s.Src.Addr().Unmap(), s.Src.Port())] = struct{}{}
		}
	}
	for idx := t.head; idx != nilIdx; idx = t.at(idx).next {
		if e := t.at(idx); e.state == uint8(eventpb.TcpState_TCP_STATE_LISTEN) {
			ls[netip.AddrPortFrom(addr(e.family, &e.saddr).Unmap(), e.sport)] = struct{}{}
		}
	}
	return ls
}

// has reports whether a listener accepts connections to local: one bound
// to that address or to a wildcard address, on its port.
func (ls listenerSet) has(local netip.AddrPort) bool {
	port := local.Port()
	for _, a := range [...]netip.Addr{local.Addr().Unmap(), netip.IPv4Unspecified(), netip.IPv6Unspecified()} {
		if _, ok := ls[netip.AddrPortFrom(a, port)]; ok {
			return true
		}
	}
	return false
}

// boundIndex finds entries made by events, for Seed to merge into.
type boundIndex struct {
	byCookie map[uint64]int32
	byTuple  map[tupleStateKey]int32
}

type tupleStateKey struct {
	saddr, daddr [16]byte
	sport, dport uint16
	family       uint8
	state        uint8
}

func tupleKey(fam uint8, sa *[16]byte, sport uint16, da *[16]byte, dport uint16, state uint8) tupleStateKey {
	return tupleStateKey{saddr: *sa, daddr: *da, sport: sport, dport: dport, family: fam, state: state}
}

func (t *Table) indexBound() boundIndex {
	bi := boundIndex{byCookie: map[uint64]int32{}, byTuple: map[tupleStateKey]int32{}}
	for idx := t.head; idx != nilIdx; idx = t.at(idx).next {
		e := t.at(idx)
		if e.flags&flagUnbound != 0 {
			continue
		}
		e.flags |= flagMayDup // events before the dump made it
		if e.cookie != 0 {
			bi.byCookie[e.cookie] = idx
		}
		bi.byTuple[tupleKey(e.family, &e.saddr, e.sport, &e.daddr, e.dport, e.state)] = idx
	}
	return bi
}

// find returns the event-made entry for a dumped socket, checking that the
// entry is still that socket (Seed may have evicted and reused it).
func (bi boundIndex) find(t *Table, cookie uint64, k tupleStateKey) int32 {
	if idx, ok := bi.byCookie[cookie]; ok {
		if e := t.at(idx); e.flags&flagUnbound == 0 && e.state != 0 && e.cookie == cookie {
			return idx
		}
	}
	if idx, ok := bi.byTuple[k]; ok {
		if e := t.at(idx); e.flags&flagUnbound == 0 && e.state != 0 &&
			tupleKey(e.family, &e.saddr, e.sport, &e.daddr, e.dport, e.state) == k {
			return idx
		}
	}
	return nilIdx
}

// findSeeded returns the unbound seeded entry an event is about, or nilIdx:
// the one with the event's cookie, else the one with the event's addresses
// in the state the event leaves or happens in, or enters if the event is
// from before the dump (applied after Seed). A socket
// cookie is exact, except that for LISTEN sockets the kernel's sock_diag
// cookie can differ from the socket's own (seen on 6.18), so a listener is
// also matched by addresses.
func (t *Table) findSeeded(ev *eventpb.Event, fam uint8) int32 {
	if len(t.byCookie) == 0 {
		return nilIdx
	}
	if ev.Cookie != 0 {
		if idx, ok := t.byCookie[ev.Cookie]; ok {
			return idx
		}
	}
	var sa, da [16]byte
	copy(sa[:], ev.Saddr)
	copy(da[:], ev.Daddr)
	idx, ok := t.byTuple[t.tupleHash(fam, &sa, uint16(ev.Sport), &da, uint16(ev.Dport))]
	if !ok {
		return nilIdx
	}
	e := t.at(idx)
	if e.flags&flagUnbound == 0 || e.family != fam || e.saddr != sa || e.daddr != da ||
		e.sport != uint16(ev.Sport) || e.dport != uint16(ev.Dport) {
		return nilIdx
	}
	if ev.Cookie != 0 && e.state != uint8(eventpb.TcpState_TCP_STATE_LISTEN) {
		return nilIdx // another socket: its cookie would have matched
	}
	if ev.Type != eventpb.EventType_EVENT_TYPE_STATE_CHANGE {
		return matchIf(e.state == uint8(ev.NewState), idx) // happens in the state
	}
	leaves := e.state == uint8(ev.OldState)
	entersBeforeDump := e.state == uint8(ev.NewState) && int64(ev.TimeUnixNano) <= t.seedEnd
	return matchIf(leaves || entersBeforeDump, idx)
}

// bind makes seeded entry idx the socket sock_id id.
func (t *Table) bind(idx int32, id uint64) {
	t.unindexSeeded(idx)
	e := t.at(idx)
	e.flags &^= flagUnbound
	e.sockID = id
	t.byID[id] = idx
	t.stats.Rebound++
}

// unindexSeeded drops an unbound entry from the seed indexes.
func (t *Table) unindexSeeded(idx int32) {
	e := t.at(idx)
	if j, ok := t.byCookie[e.cookie]; ok && j == idx {
		delete(t.byCookie, e.cookie)
	}
	h := t.tupleHash(e.family, &e.saddr, e.sport, &e.daddr, e.dport)
	if j, ok := t.byTuple[h]; ok && j == idx {
		delete(t.byTuple, h)
	}
	if len(t.byCookie) == 0 {
		// Every seeded socket is bound. Go maps never shrink: let the
		// seed's go.
		t.byCookie = make(map[uint64]int32)
		t.byTuple = make(map[uint64]int32)
	}
}

// dropDuplicate removes a seeded entry that the event shows to be the
// same socket as entry idx (made by events before the seed was applied),
// keeping what only the seed knew.
func (t *Table) dropDuplicate(idx int32, ev *eventpb.Event) {
	dup := t.findSeeded(ev, t.at(idx).family)
	if dup == nilIdx || dup == idx {
		return
	}
	d, e := t.at(dup), t.at(idx)
	if rank(eventpb.OwnerSource(d.owner)) > rank(eventpb.OwnerSource(e.owner)) {
		t.setOwner(e, d.pid, t.comms.str(d.comm), d.cgroupID, eventpb.OwnerSource(d.owner))
	}
	if e.cookie == 0 {
		e.cookie = d.cookie
	}
	e.rqueue = d.rqueue
	e.flags |= d.flags & flagInDump
	t.remove(dup)
	t.stats.Duplicates++
}

// tupleHash mixes a socket's addresses (SplitMix64 finaliser rounds) with
// a random seed: remote ports and addresses are chosen by others.
func (t *Table) tupleHash(fam uint8, sa *[16]byte, sport uint16, da *[16]byte, dport uint16) uint64 {
	return tupleHashSeed(t.hashSeed, fam, sa, sport, da, dport)
}

func tupleHashSeed(seed uint64, fam uint8, sa *[16]byte, sport uint16, da *[16]byte, dport uint16) uint64 {
	h := mix.SplitMix64(seed ^ (uint64(fam)<<32 | uint64(sport)<<16 | uint64(dport)))
	h = mix.SplitMix64(h ^ binary.LittleEndian.Uint64(sa[:8]))
	h = mix.SplitMix64(h ^ binary.LittleEndian.Uint64(sa[8:]))
	h = mix.SplitMix64(h ^ binary.LittleEndian.Uint64(da[:8]))
	return mix.SplitMix64(h ^ binary.LittleEndian.Uint64(da[8:]))
}

func matchIf(ok bool, idx int32) int32 {
	if ok {
		return idx
	}
	return nilIdx
}

func hasKey[V any](m map[uint64]V, k uint64) bool {
	_, ok := m[k]
	return ok
}

// Listener is a LISTEN socket that predates the probe, with its owner.
type Listener struct {
	Family   eventpb.Family
	Addr     netip.AddrPort // 16-byte (possibly v4-mapped) for IPv6 sockets
	Cookie   uint64         // sock_diag's cookie
	PID      uint32
	Comm     string
	CgroupID uint64
}

// Listeners appends the seeded LISTEN sockets still in the table whose
// owner is known, for the probe to seed its BPF listener-owner map.
func (t *Table) Listeners(dst []Listener) []Listener {
	for idx := t.head; idx != nilIdx; idx = t.at(idx).next {
		e := t.at(idx)
		if e.flags&flagSeeded == 0 || e.state != uint8(eventpb.TcpState_TCP_STATE_LISTEN) || e.owner == 0 {
			continue
		}
		dst = append(dst, Listener{
			Family: eventpb.Family(e.family), Addr: netip.AddrPortFrom(addr(e.family, &e.saddr), e.sport),
			Cookie: e.cookie, PID: e.pid, Comm: t.comms.str(e.comm), CgroupID: e.cgroupID,
		})
	}
	return dst
}
