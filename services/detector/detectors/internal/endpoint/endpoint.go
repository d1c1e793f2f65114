// Package endpoint names the ends of a TCP connection the way the built-in
// detectors label them and the sink stores them.
package endpoint

import (
	"net/netip"
	"strconv"

	"github.com/netpulse/netpulse/lib/eventpb"
	"github.com/netpulse/netpulse/lib/wire"
)

// EphemeralStart is the lowest port of Linux's default ephemeral range
// (net.ipv4.ip_local_port_range = 32768 60999). Used only when the probe
// could not tell which side opened a connection.
const EphemeralStart = 32768

// Addr converts a probe address (4 bytes for IPv4, 16 for IPv6) without
// allocating; ok is false for any other length.
func Addr(b []byte) (netip.Addr, bool) {
	return netip.AddrFromSlice(b)
}

// String is an address as the sink writes it to ClickHouse (saddr, daddr),
// so that a label can be used in a WHERE clause as it is.
func String(a netip.Addr) string {
	if !a.IsValid() {
		return ""
	}
	return a.String()
}

// HostPort is "addr:port", "[v6]:port" for IPv6.
func HostPort(a netip.Addr, port uint32) string {
	if !a.IsValid() {
		return "?:" + strconv.FormatUint(uint64(port), 10)
	}
	return netip.AddrPortFrom(a, uint16(port)).String()
}

// Listener is how a server-side condition names its local listening port in
// a "remote" label: "*:8080", i.e. any peer connecting to our port 8080.
func Listener(port uint32) string { return "*:" + strconv.FormatUint(uint64(port), 10) }

// IsServer reports whether this host is the server end of a socket (it
// accepted the connection), so that the local port names the service. The
// probe's side wins; for sockets older than the probe (side unspecified) a
// local port that some socket listens on, or failing that a non-ephemeral
// local port facing an ephemeral remote one, means server. listening may be
// nil.
func IsServer(side eventpb.Side, sport, dport uint32, listening func(port uint32) bool) bool {
	switch side {
	case eventpb.Side_SIDE_SERVER:
		return true
	case eventpb.Side_SIDE_CLIENT:
		return false
	}
	if listening != nil && listening(sport) {
		return true
	}
	return sport < EphemeralStart && dport >= EphemeralStart
}

// SideName is the contract's side label, "server" or "client".
func SideName(server bool) string {
	if server {
		return wire.Sides.Name(eventpb.Side_SIDE_SERVER)
	}
	return wire.Sides.Name(eventpb.Side_SIDE_CLIENT)
}
