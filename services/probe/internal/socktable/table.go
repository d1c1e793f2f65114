// Package socktable is the probe's in-memory table of live TCP sockets:
// fed with every decoded event, seeded at start with the sockets that
// existed before the probe (sockdiag), reconciled with the kernel's
// sockets periodically (Resync) to heal what lost events left wrong, and
// summarised in periodic snapshots. It also remembers socket owners, to fill in the owner of
// events the kernel raised outside the owning process.
//
// A Table is plain logic without I/O or goroutines, and not safe for
// concurrent use: the probe calls it from one goroutine.
package socktable

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"net/netip"
	"time"

	"github.com/netpulse/netpulse/lib/eventpb"
)

// Entry flags.
const (
	flagSeeded    = 1 << iota // came from sock_diag: the socket predates the probe
	flagEstimated             // since is a lower bound, not the time the state was entered
	flagUnbound               // seeded and not yet matched to a sock_id: keyed by cookie
	// flagMayDup: made by events from before the dump, so a seeded entry
	// may be the same socket (see dropDuplicate).
	flagMayDup
	// flagInDump: a sock_diag dump of the probe's network namespace listed
	// the socket, so Resync may remove it once a dump no longer does. The
	// events come from every namespace; the dumps see only the probe's.
	flagInDump
	// flagSuspect: the last resync found the entry gone or in another
	// state, and no event came since; the next one acts (see Resync).
	flagSuspect
)

// seedSlack is how long after Seed's now events may still be from before
// the dump: the dump itself takes time, and clocks differ a little.
const seedSlack = int64(time.Second)

const nilIdx = -1

// entry is one socket, kept compact (96 bytes): fixed-size addresses, an
// interned comm, list links as slice indices instead of pointers.
type entry struct {
	sockID   uint64 // 0 while flagUnbound
	cookie   uint64 // 0 when unknown
	since    int64  // Unix ns when the socket entered state
	cgroupID uint64
	saddr    [16]byte // IPv4 in the first 4 bytes
	daddr    [16]byte
	// LRU links: prev is towards the most recently updated entry.
	prev, next int32
	pid        uint32
	comm       uint32 // interner id
	rqueue     uint32 // unread bytes, from sock_diag only
	sport      uint16
	dport      uint16
	state      uint8 // eventpb.TcpState; 0 only while being created
	family     uint8 // eventpb.Family value (4 or 6)
	side       uint8 // eventpb.Side
	owner      uint8 // eventpb.OwnerSource of pid/comm/cgroupID
	flags      uint8
	// epoch is the table's epoch at the last event: an entry whose epoch
	// is the current one had an event since BeginResync (wraps harmlessly).
	epoch uint16
}

// Stats are the table's counters. Sockets is a level, the rest count
// since New.
type Stats struct {
	Sockets   int // entries now
	Evictions uint64
	// Seeded: entries added from sock_diag. SeedMerged: sock_diag sockets
	// that events had already put in the table. SeedSkipped: sock_diag
	// sockets not tracked (TIME_WAIT and request sockets never raise a
	// closing event, so they would stay forever).
	Seeded      uint64
	SeedMerged  uint64
	SeedSkipped uint64
	// Rebound: seeded entries matched to the sock_id of an event.
	// Duplicates: seeded entries dropped because an event showed they
	// were a socket the table already had.
	Rebound    uint64
	Duplicates uint64
	// OwnerFills: events whose owner FillOwner supplied.
	OwnerFills uint64
	// SeedClosed: sock_diag sockets left out because their CLOSE event came
	// between the dump and Seed. CloseRecordsLost: such CLOSE events not
	// remembered because maxSockets of them were already (their sockets
	// may be seeded and stay until evicted).
	SeedClosed       uint64
	CloseRecordsLost uint64
	// BadEvents: events Apply rejected.
	BadEvents uint64
	// Resync: what reconciliations with the kernel changed (see Resync).
	ResyncRemoved uint64
	ResyncAdded   uint64
	ResyncFixed   uint64
	// Comms: distinct process names held.
	Comms int
}

// Table is the socket table. The zero value is not usable; call New.
type Table struct {
	max   int
	slots slab
	live  int
	head  int32 // most recently updated
	tail  int32 // least recently updated: evicted first
	byID  map[uint64]int32
	// Seeded entries not yet bound to a sock_id, by cookie and by a hash
	// of their addresses; both emptied as events arrive.
	byCookie map[uint64]int32
	byTuple  map[uint64]int32
	comms    *interner
	hashSeed uint64
	seeded   bool
	seedEnd  int64 // Unix ns: later events are all from after the dump
	// Sockets that closed while a seed was pending (between the dump and
	// Seed), by cookie and by address hash: the dump still lists them.
	recording     bool
	closedCookies map[uint64]struct{}
	closedTuples  map[uint64]struct{}
	epoch         uint16 // see entry.epoch
	stats         Stats
	resync        resyncScratch

	snap snapshotScratch
}

// New returns a table holding at most maxSockets sockets (at least 1).
func New(maxSockets int) *Table {
	maxSockets = max(maxSockets, 1)
	return &Table{
		max:      maxSockets,
		slots:    newSlab(),
		head:     nilIdx,
		tail:     nilIdx,
		byID:     make(map[uint64]int32),
		byCookie: make(map[uint64]int32),
		byTuple:  make(map[uint64]int32),
		comms:    newInterner(),
		hashSeed: rand.Uint64(),
		// The probe dumps after attaching: a seed is pending from the start.
		recording:     true,
		closedCookies: make(map[uint64]struct{}),
		closedTuples:  make(map[uint64]struct{}),
	}
}

// Stats returns the counters.
func (t *Table) Stats() Stats {
	s := t.stats
	s.Sockets = t.live
	s.Comms = t.comms.len()
	return s
}

// Len is the number of sockets in the table.
func (t *Table) Len() int { return t.live }

func (t *Table) at(idx int32) *entry { return t.slots.at(idx) }

// ErrBadEvent wraps every reason Apply rejects an event for.
var ErrBadEvent = errors.New("socktable: bad event")

// Apply updates the table with one event: it creates the socket on first
// sight, records its state and when it entered it, its owner (unless the
// event's is OWNER_SOURCE_UNKNOWN), side and addresses, and deletes it on
// CLOSE. The first event of a socket seeded from sock_diag binds the seeded
// entry to the event's sock_id (by cookie, or by addresses and state).
// A rejected event changes nothing and is counted in Stats.BadEvents.
func (t *Table) Apply(ev *eventpb.Event) error {
	fam, err := checkEvent(ev)
	if err != nil {
		t.stats.BadEvents++
		return err
	}
	closing := ev.NewState == eventpb.TcpState_TCP_STATE_CLOSE
	at := int64(ev.TimeUnixNano)
	if closing && t.recording {
		t.recordClose(ev, fam)
	}
	idx, ok := t.byID[ev.SockId]
	if !ok {
		idx = nilIdx
		if !isConnect(ev) { // a new client socket cannot be a seeded one
			idx = t.findSeeded(ev, fam)
		}
		switch {
		case idx != nilIdx:
			t.bind(idx, ev.SockId)
		case closing:
			return nil // closed before we knew it: nothing to forget
		default:
			idx = t.insert()
			e := t.at(idx)
			e.sockID = ev.SockId
			if len(t.byCookie) > 0 && at <= t.seedEnd {
				e.flags |= flagMayDup
			}
			t.byID[ev.SockId] = idx
		}
	}
	t.update(t.at(idx), ev, fam)
	t.at(idx).epoch = t.epoch
	t.at(idx).flags &^= flagSuspect
	if t.at(idx).flags&flagMayDup != 0 {
		t.dropDuplicate(idx, ev)
		// After an event with a cookie or from after the dump, a
		// duplicate would have been found by now.
		if ev.Cookie != 0 || at > t.seedEnd || len(t.byCookie) == 0 {
			t.at(idx).flags &^= flagMayDup
		}
	}
	if closing {
		t.remove(idx)
		return nil
	}
	t.moveToFront(idx)
	return nil
}

// isConnect reports a client's first event, CLOSE -> SYN_SENT.
func isConnect(ev *eventpb.Event) bool {
	return ev.Type == eventpb.EventType_EVENT_TYPE_STATE_CHANGE &&
		ev.OldState == eventpb.TcpState_TCP_STATE_CLOSE && ev.NewState == eventpb.TcpState_TCP_STATE_SYN_SENT
}

// checkEvent validates what Apply relies on and returns the family as a
// byte.
func checkEvent(ev *eventpb.Event) (uint8, error) {
	if ev.SockId == 0 {
		return 0, fmt.Errorf("%w: sock_id 0 (seq %d)", ErrBadEvent, ev.Seq)
	}
	var alen int
	switch ev.Family {
	case eventpb.Family_FAMILY_IPV4:
		alen = 4
	case eventpb.Family_FAMILY_IPV6:
		alen = 16
	default:
		return 0, fmt.Errorf("%w: family %v (seq %d)", ErrBadEvent, ev.Family, ev.Seq)
	}
	if len(ev.Saddr) != alen || len(ev.Daddr) != alen {
		return 0, fmt.Errorf("%w: %d- and %d-byte addresses for %v (seq %d)", ErrBadEvent, len(ev.Saddr), len(ev.Daddr), ev.Family, ev.Seq)
	}
	if ev.NewState < eventpb.TcpState_TCP_STATE_ESTABLISHED || ev.NewState > eventpb.TcpState_TCP_STATE_NEW_SYN_RECV {
		return 0, fmt.Errorf("%w: new_state %d (seq %d)", ErrBadEvent, ev.NewState, ev.Seq)
	}
	if ev.Sport > 0xffff || ev.Dport > 0xffff {
		return 0, fmt.Errorf("%w: port above 65535 (seq %d)", ErrBadEvent, ev.Seq)
	}
	return uint8(ev.Family), nil
}

// update copies what ev says about the socket into e.
func (t *Table) update(e *entry, ev *eventpb.Event, fam uint8) {
	now := int64(ev.TimeUnixNano)
	fresh := e.state == 0
	e.family = fam
	// The client's CLOSE -> SYN_SENT event has source port 0 (and may have
	// no source address yet): never let zeros overwrite what is known.
	if !isZero(ev.Saddr) {
		copy(e.saddr[:], ev.Saddr)
	}
	if !isZero(ev.Daddr) {
		copy(e.daddr[:], ev.Daddr)
	}
	if ev.Sport != 0 {
		e.sport = uint16(ev.Sport)
	}
	if ev.Dport != 0 {
		e.dport = uint16(ev.Dport)
	}
	if ev.Cookie != 0 {
		e.cookie = ev.Cookie
	}
	state := uint8(ev.NewState)
	if ev.Type == eventpb.EventType_EVENT_TYPE_STATE_CHANGE {
		e.state, e.since = state, now
		e.flags &^= flagEstimated
	} else if fresh || e.state != state {
		// Not a transition: the socket was in this state already (or we
		// missed its transition), since some time before now.
		e.state, e.since = state, now
		e.flags |= flagEstimated
	}
	switch {
	case ev.Side != eventpb.Side_SIDE_UNSPECIFIED:
		e.side = uint8(ev.Side)
	case e.side == 0:
		e.side = uint8(inferSide(ev))
	}
	if ev.NewState == eventpb.TcpState_TCP_STATE_LISTEN {
		e.side = uint8(eventpb.Side_SIDE_SERVER)
	}
	if ev.OwnerSource != eventpb.OwnerSource_OWNER_SOURCE_UNKNOWN && rank(ev.OwnerSource) >= rank(eventpb.OwnerSource(e.owner)) {
		t.setOwner(e, ev.Pid, ev.Comm, ev.CgroupId, ev.OwnerSource)
	}
}

// inferSide tells the side from the states an event shows when the event
// does not say.
func inferSide(ev *eventpb.Event) eventpb.Side {
	for _, s := range [...]eventpb.TcpState{ev.OldState, ev.NewState} {
		switch s {
		case eventpb.TcpState_TCP_STATE_SYN_SENT:
			return eventpb.Side_SIDE_CLIENT
		case eventpb.TcpState_TCP_STATE_SYN_RECV, eventpb.TcpState_TCP_STATE_NEW_SYN_RECV, eventpb.TcpState_TCP_STATE_LISTEN:
			return eventpb.Side_SIDE_SERVER
		}
	}
	return eventpb.Side_SIDE_UNSPECIFIED
}

// rank orders owner sources by how much they are worth: the owner seen in
// process context (TASK, or SOCKET remembered from it) beats the /proc scan
// at start, which beats the listener's owner, which beats nothing.
func rank(s eventpb.OwnerSource) int {
	switch s {
	case eventpb.OwnerSource_OWNER_SOURCE_TASK, eventpb.OwnerSource_OWNER_SOURCE_SOCKET:
		return 3
	case eventpb.OwnerSource_OWNER_SOURCE_SCAN:
		return 2
	case eventpb.OwnerSource_OWNER_SOURCE_LISTENER:
		return 1
	}
	return 0
}

func (t *Table) setOwner(e *entry, pid uint32, comm string, cgroupID uint64, src eventpb.OwnerSource) {
	if t.comms.str(e.comm) != comm {
		t.comms.unref(e.comm)
		e.comm = t.comms.ref(comm)
	}
	e.pid, e.cgroupID, e.owner = pid, cgroupID, uint8(src)
}

// FillOwner sets the owner of an event the kernel raised outside the
// owner's context (owner_source UNKNOWN or LISTENER) from what the table
// knows about the socket: owner_source becomes SOCKET for an owner seen in
// an earlier event, SCAN for one from the start-up scan, LISTENER for a
// listener's owner (only for UNKNOWN events). It reports whether it changed
// ev. Call it before Apply: Apply forgets a socket on its CLOSE event.
func (t *Table) FillOwner(ev *eventpb.Event) bool {
	if ev.OwnerSource != eventpb.OwnerSource_OWNER_SOURCE_UNKNOWN && ev.OwnerSource != eventpb.OwnerSource_OWNER_SOURCE_LISTENER {
		return false
	}
	idx, ok := t.byID[ev.SockId]
	if !ok {
		if len(t.byCookie) == 0 || (ev.Family != eventpb.Family_FAMILY_IPV4 && ev.Family != eventpb.Family_FAMILY_IPV6) {
			return false
		}
		if idx = t.findSeeded(ev, uint8(ev.Family)); idx == nilIdx {
			return false
		}
	}
	e := t.at(idx)
	src := eventpb.OwnerSource(e.owner)
	if src == eventpb.OwnerSource_OWNER_SOURCE_TASK {
		src = eventpb.OwnerSource_OWNER_SOURCE_SOCKET
	}
	if rank(src) <= rank(ev.OwnerSource) {
		return false
	}
	ev.Pid, ev.CgroupId, ev.OwnerSource = e.pid, e.cgroupID, src
	if c := t.comms.str(e.comm); ev.Comm != c {
		ev.Comm = c
	}
	t.stats.OwnerFills++
	return true
}

// Entry is a copy of one socket of the table.
type Entry struct {
	SockID uint64 // 0 for a seeded socket no event has named yet
	Cookie uint64
	Family eventpb.Family
	State  eventpb.TcpState
	// StateSince is when the socket entered State (Unix ns); a lower bound
	// when AgeEstimated.
	StateSince   int64
	AgeEstimated bool
	Src, Dst     netip.AddrPort
	Side         eventpb.Side
	PID          uint32
	Comm         string
	CgroupID     uint64
	OwnerSource  eventpb.OwnerSource
	Seeded       bool   // predates the probe (from sock_diag)
	RecvQueue    uint32 // unread bytes when seeded
}

// Get returns the socket with sock_id id.
func (t *Table) Get(id uint64) (Entry, bool) {
	idx, ok := t.byID[id]
	if !ok {
		return Entry{}, false
	}
	return t.entryView(idx), true
}

func (t *Table) entryView(idx int32) Entry {
	e := t.at(idx)
	return Entry{
		SockID: e.sockID, Cookie: e.cookie, Family: eventpb.Family(e.family), State: eventpb.TcpState(e.state),
		StateSince: e.since, AgeEstimated: e.flags&flagEstimated != 0,
		Src: netip.AddrPortFrom(addr(e.family, &e.saddr), e.sport), Dst: netip.AddrPortFrom(addr(e.family, &e.daddr), e.dport),
		Side: eventpb.Side(e.side), PID: e.pid, Comm: t.comms.str(e.comm), CgroupID: e.cgroupID,
		OwnerSource: eventpb.OwnerSource(e.owner), Seeded: e.flags&flagSeeded != 0, RecvQueue: e.rqueue,
	}
}

func addr(family uint8, a *[16]byte) netip.Addr {
	if family == uint8(eventpb.Family_FAMILY_IPV4) {
		return netip.AddrFrom4([4]byte(a[:4]))
	}
	return netip.AddrFrom16(*a)
}

func isZero(b []byte) bool {
	for _, c := range b {
		if c != 0 {
			return false
		}
	}
	return true
}

// insert takes a free slot, evicting the least recently updated entry
// when the table is full, and puts it at the front of the LRU list.
func (t *Table) insert() int32 {
	if t.live >= t.max {
		t.stats.Evictions++
		t.remove(t.tail)
	}
	idx := t.slots.alloc()
	e := t.at(idx)
	e.prev, e.next = nilIdx, nilIdx
	t.live++
	t.pushFront(idx)
	return idx
}

// remove forgets entry idx.
func (t *Table) remove(idx int32) {
	e := t.at(idx)
	if e.flags&flagUnbound != 0 {
		t.unindexSeeded(idx)
	} else {
		delete(t.byID, e.sockID)
	}
	t.comms.unref(e.comm)
	t.unlink(idx)
	t.slots.release(idx)
	t.live--
}

func (t *Table) pushFront(idx int32) {
	e := t.at(idx)
	e.prev, e.next = nilIdx, t.head
	if t.head != nilIdx {
		t.at(t.head).prev = idx
	}
	t.head = idx
	if t.tail == nilIdx {
		t.tail = idx
	}
}

func (t *Table) unlink(idx int32) {
	e := t.at(idx)
	if e.prev != nilIdx {
		t.at(e.prev).next = e.next
	} else {
		t.head = e.next
	}
	if e.next != nilIdx {
		t.at(e.next).prev = e.prev
	} else {
		t.tail = e.prev
	}
	e.prev, e.next = nilIdx, nilIdx
}

func (t *Table) moveToFront(idx int32) {
	if t.head == idx {
		return
	}
	t.unlink(idx)
	t.pushFront(idx)
}
