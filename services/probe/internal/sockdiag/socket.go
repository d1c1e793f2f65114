// Package sockdiag reads the kernel's current TCP socket table (what
// `ss -tanp -e -i` shows): every socket with its state, addresses, cookie
// and tcp_info through NETLINK_SOCK_DIAG, and the process owning each socket
// from /proc. The probe uses it at start to learn the sockets that existed
// before its tracepoints were attached, then periodically to find what its
// events missed.
package sockdiag

import "net/netip"

// Socket is one TCP socket as sock_diag reports it (struct inet_diag_msg
// plus the INET_DIAG_INFO attribute).
type Socket struct {
	// Family is unix.AF_INET or unix.AF_INET6. An AF_INET6 socket talking
	// IPv4 has v4-mapped addresses (::ffff:a.b.c.d), as in the kernel.
	Family uint8
	// State uses the kernel's numbering (include/net/tcp_states.h), the
	// same as eventpb.TcpState: 1 ESTABLISHED ... 10 LISTEN ... 12 NEW_SYN_RECV.
	State uint8
	Src   netip.AddrPort
	Dst   netip.AddrPort
	// Cookie is the kernel's socket cookie (sk->__sk_common.skc_cookie,
	// `ss -e` sk:<hex>, getsockopt SO_COOKIE). Dumping a socket assigns its
	// cookie if it had none, so every event the probe sees for it later
	// carries this value.
	Cookie uint64
	// Inode of the socket's file; 0 for sockets no file refers to any more
	// (TIME_WAIT, request sockets, orphans after close()).
	Inode uint64
	UID   uint32
	// ExpiresMs is what is left of the socket's pending timer (idiag_expires):
	// for a TIME_WAIT socket, and an orphaned FIN_WAIT2 one the kernel keeps
	// as a timewait socket, the time until the kernel reaps it.
	ExpiresMs uint32
	// RQueue and WQueue: unread and unsent bytes; for a LISTEN socket the
	// accept queue length and its limit.
	RQueue uint32
	WQueue uint32
	Info   TCPInfo
	// Drops is the socket's own drop counter (sk_drops), valid when
	// HasDrops (DumpListeners): for a listener, the connections it refused
	// because its accept queue was full (TcpExtListenOverflows) or its
	// request queue could take no more (both in TcpExtListenDrops).
	Drops    uint32
	HasDrops bool
}

// TCPInfo holds the parts of struct tcp_info the probe uses. Older kernels
// send a shorter struct: a field the kernel did not send is zero, and Len
// says how much was sent.
type TCPInfo struct {
	// Len is the size of the struct tcp_info the kernel sent; 0 when it
	// sent none (TIME_WAIT and request sockets have no tcp_info).
	Len int
	// Milliseconds since the socket last sent data, received data and
	// received an ACK.
	LastDataSentMs uint32
	LastDataRecvMs uint32
	LastAckRecvMs  uint32
	// Smoothed round-trip time and its variance, microseconds.
	RTTUs    uint32
	RTTVarUs uint32
	// Retrans counts retransmitted segments not yet acknowledged;
	// TotalRetrans all retransmissions over the socket's life.
	Retrans      uint32
	TotalRetrans uint32
	// BytesAcked (sent and acknowledged) and BytesReceived; valid when
	// HasBytes (kernel >= 4.1).
	BytesAcked    uint64
	BytesReceived uint64
	HasBytes      bool
	// Segments sent and received; valid when HasSegs (kernel >= 4.2).
	SegsOut uint32
	SegsIn  uint32
	HasSegs bool
}

// Kernel TCP states this package names (include/net/tcp_states.h).
const (
	StateEstablished = 1
	StateSynSent     = 2
	StateSynRecv     = 3
	StateFinWait1    = 4
	StateFinWait2    = 5
	StateTimeWait    = 6
	StateClose       = 7
	StateCloseWait   = 8
	StateLastAck     = 9
	StateListen      = 10
	StateClosing     = 11
	StateNewSynRecv  = 12
)

// StateSet is a set of kernel TCP states, state s as bit 1<<s: the
// layout of inet_diag_req_v2.idiag_states.
type StateSet uint32

// AllStates holds every state.
const AllStates StateSet = 0xffffffff

// Has reports whether state is in the set.
func (s StateSet) Has(state uint8) bool { return state < 32 && s&(1<<state) != 0 }
