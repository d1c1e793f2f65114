package dtest

import (
	"net/netip"
	"time"

	"github.com/netpulse/netpulse/lib/eventpb"
)

// Sock describes one socket, to build its events.
type Sock struct {
	ID   uint64
	Pid  uint32
	Comm string
	// Local and Peer are "addr:port".
	Local, Peer string
	Side        eventpb.Side
	// Owner is OWNER_SOURCE_SOCKET when zero, unless UnknownOwner.
	Owner        eventpb.OwnerSource
	UnknownOwner bool
}

func split(s string) ([]byte, uint32, eventpb.Family) {
	ap := netip.MustParseAddrPort(s)
	a := ap.Addr()
	if a.Is4() {
		b := a.As4()
		return b[:], uint32(ap.Port()), eventpb.Family_FAMILY_IPV4
	}
	b := a.As16()
	return b[:], uint32(ap.Port()), eventpb.Family_FAMILY_IPV6
}

// Event is an event of type typ on the socket at time at.
func (s Sock) Event(at time.Time, typ eventpb.EventType) *eventpb.Event {
	sa, sp, fam := split(s.Local)
	da, dp, _ := split(s.Peer)
	own := s.Owner
	if own == eventpb.OwnerSource_OWNER_SOURCE_UNKNOWN && !s.UnknownOwner {
		own = eventpb.OwnerSource_OWNER_SOURCE_SOCKET
	}
	return &eventpb.Event{
		Type: typ, TimeUnixNano: Ns(at), Pid: s.Pid, Tid: s.Pid, Comm: s.Comm, Family: fam,
		Saddr: sa, Daddr: da, Sport: sp, Dport: dp, SockId: s.ID, OwnerSource: own, Side: s.Side,
	}
}

// State is the socket's change from one state to another at time at.
func (s Sock) State(at time.Time, from, to eventpb.TcpState) *eventpb.Event {
	e := s.Event(at, eventpb.EventType_EVENT_TYPE_STATE_CHANGE)
	e.OldState, e.NewState = from, to
	return e
}

// SnapshotSocket is the socket as a snapshot lists it in CLOSE_WAIT.
func (s Sock) SnapshotSocket(age time.Duration, estimated bool) *eventpb.SnapshotSocket {
	sa, sp, fam := split(s.Local)
	da, dp, _ := split(s.Peer)
	return &eventpb.SnapshotSocket{
		SockId: s.ID, Pid: s.Pid, Comm: s.Comm, OwnerSource: eventpb.OwnerSource_OWNER_SOURCE_SCAN,
		Family: fam, Saddr: sa, Daddr: da, Sport: sp, Dport: dp, Side: s.Side,
		AgeUs: uint64(age / time.Microsecond), AgeEstimated: estimated,
	}
}

// States used everywhere in tests.
const (
	Established = eventpb.TcpState_TCP_STATE_ESTABLISHED
	CloseWait   = eventpb.TcpState_TCP_STATE_CLOSE_WAIT
	LastAck     = eventpb.TcpState_TCP_STATE_LAST_ACK
	Close       = eventpb.TcpState_TCP_STATE_CLOSE
	SynSent     = eventpb.TcpState_TCP_STATE_SYN_SENT
	SynRecv     = eventpb.TcpState_TCP_STATE_SYN_RECV
	Listen      = eventpb.TcpState_TCP_STATE_LISTEN
)
