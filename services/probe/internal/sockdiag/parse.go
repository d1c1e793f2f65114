package sockdiag

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net/netip"
	"syscall"

	"golang.org/x/sys/unix"
)

// Netlink and inet_diag wire layout (include/uapi/linux/netlink.h,
// inet_diag.h). Every integer is host byte order except ports and
// addresses, which are network order.
const (
	nlmsgHdrLen  = 16 // struct nlmsghdr
	nlmsgAlign   = 4
	rtaHdrLen    = 4  // struct rtattr
	diagMsgLen   = 72 // struct inet_diag_msg
	diagReqLen   = 56 // struct inet_diag_req_v2
	inetDiagInfo = 2  // INET_DIAG_INFO: struct tcp_info
	// INET_DIAG_SKMEMINFO: __u32[SK_MEMINFO_VARS], sk_drops at index 8
	// (SK_MEMINFO_DROPS, since 3.5).
	inetDiagSkMemInfo = 7
	skMemInfoDrops    = 8
	nlmsgNoop         = 0x1
	nlmsgError        = 0x2
	nlmsgDone         = 0x3
	nlmsgOverrun      = 0x4
	sockDiagByFam     = unix.SOCK_DIAG_BY_FAMILY
)

// Offsets in struct inet_diag_msg.
const (
	offFamily = 0
	offState  = 1
	offSport  = 4
	offDport  = 6
	offSrc    = 8
	offDst    = 24
	offCookie = 44
	offExpire = 52
	offRQueue = 56
	offWQueue = 60
	offUID    = 64
	offInode  = 68
)

// Offsets in struct tcp_info (include/uapi/linux/tcp.h); a test checks them
// against unix.TCPInfo.
const (
	tiLastDataSent  = 44
	tiLastDataRecv  = 52
	tiLastAckRecv   = 56
	tiRTT           = 68
	tiRTTVar        = 72
	tiRetrans       = 36
	tiTotalRetrans  = 100
	tiBytesAcked    = 120
	tiBytesReceived = 128
	tiSegsOut       = 136
	tiSegsIn        = 140
)

// ErrMalformed wraps every error about a message that does not parse.
var ErrMalformed = errors.New("sockdiag: malformed netlink message")

// parser turns the replies of one dump request into Sockets. It is a plain
// value with no I/O so that the tests can feed it any bytes.
type parser struct {
	seq uint32 // sequence number of the request being answered
	// stale counts messages answering an earlier request; skipped counts
	// sockets of a family or state this package does not know.
	stale   uint64
	skipped uint64
}

// parse appends the sockets in b, the bytes of one read from the netlink
// socket, to dst. done reports that the dump ended (NLMSG_DONE). A message
// that does not parse is an error wrapping ErrMalformed; an error the kernel
// reports is returned as a syscall.Errno.
func (p *parser) parse(b []byte, dst []Socket) (out []Socket, done bool, err error) {
	for len(b) > 0 {
		if len(b) < nlmsgHdrLen {
			return dst, false, fmt.Errorf("%w: %d trailing bytes, shorter than a header", ErrMalformed, len(b))
		}
		msgLen := int(binary.NativeEndian.Uint32(b[0:4]))
		typ := binary.NativeEndian.Uint16(b[4:6])
		seq := binary.NativeEndian.Uint32(b[8:12])
		if msgLen < nlmsgHdrLen || msgLen > len(b) {
			return dst, false, fmt.Errorf("%w: length %d, %d bytes left", ErrMalformed, msgLen, len(b))
		}
		payload := b[nlmsgHdrLen:msgLen]
		// The last message of a read need not be padded.
		b = b[min(align(msgLen), len(b)):]
		if seq != p.seq {
			p.stale++
			continue
		}
		switch typ {
		case sockDiagByFam:
			var s Socket
			ok, err := parseDiagMsg(payload, &s)
			if err != nil {
				return dst, false, err
			}
			if !ok {
				p.skipped++
				continue
			}
			dst = append(dst, s)
		case nlmsgDone:
			// Since 4.x the payload is an int: 0, or the dump's negative errno.
			if len(payload) >= 4 {
				if e := int32(binary.NativeEndian.Uint32(payload)); e < 0 {
					return dst, true, fmt.Errorf("sockdiag: dump ended with error: %w", syscall.Errno(-e))
				}
			}
			return dst, true, nil
		case nlmsgError:
			if len(payload) < 4 {
				return dst, false, fmt.Errorf("%w: NLMSG_ERROR of %d bytes", ErrMalformed, len(payload))
			}
			e := int32(binary.NativeEndian.Uint32(payload))
			if e == 0 { // an acknowledgement, not an error
				continue
			}
			if e > 0 {
				return dst, false, fmt.Errorf("%w: NLMSG_ERROR with positive code %d", ErrMalformed, e)
			}
			return dst, false, fmt.Errorf("sockdiag: kernel refused the dump: %w", syscall.Errno(-e))
		case nlmsgNoop:
		case nlmsgOverrun:
			return dst, false, errors.New("sockdiag: netlink overrun: messages were lost")
		default:
			return dst, false, fmt.Errorf("%w: unexpected message type %d", ErrMalformed, typ)
		}
	}
	return dst, false, nil
}

// parseDiagMsg fills s from the payload of one SOCK_DIAG_BY_FAMILY message.
// ok is false for a socket of an unknown family or state: the kernel never
// sends those for TCP, but one odd socket should not fail the whole dump.
func parseDiagMsg(b []byte, s *Socket) (ok bool, err error) {
	if len(b) < diagMsgLen {
		return false, fmt.Errorf("%w: inet_diag_msg of %d bytes, want %d", ErrMalformed, len(b), diagMsgLen)
	}
	s.Family = b[offFamily]
	s.State = b[offState]
	sport := binary.BigEndian.Uint16(b[offSport:])
	dport := binary.BigEndian.Uint16(b[offDport:])
	switch s.Family {
	case unix.AF_INET:
		s.Src = netip.AddrPortFrom(netip.AddrFrom4([4]byte(b[offSrc:offSrc+4])), sport)
		s.Dst = netip.AddrPortFrom(netip.AddrFrom4([4]byte(b[offDst:offDst+4])), dport)
	case unix.AF_INET6:
		s.Src = netip.AddrPortFrom(netip.AddrFrom16([16]byte(b[offSrc:offSrc+16])), sport)
		s.Dst = netip.AddrPortFrom(netip.AddrFrom16([16]byte(b[offDst:offDst+16])), dport)
	default:
		return false, nil
	}
	if s.State < StateEstablished || s.State > StateNewSynRecv {
		return false, nil
	}
	// idiag_cookie[0] holds the low 32 bits, [1] the high (sock_diag_save_cookie).
	s.Cookie = uint64(binary.NativeEndian.Uint32(b[offCookie:])) |
		uint64(binary.NativeEndian.Uint32(b[offCookie+4:]))<<32
	s.ExpiresMs = binary.NativeEndian.Uint32(b[offExpire:])
	s.RQueue = binary.NativeEndian.Uint32(b[offRQueue:])
	s.WQueue = binary.NativeEndian.Uint32(b[offWQueue:])
	s.UID = binary.NativeEndian.Uint32(b[offUID:])
	s.Inode = uint64(binary.NativeEndian.Uint32(b[offInode:]))
	s.Info = TCPInfo{}
	s.Drops, s.HasDrops = 0, false

	for attrs := b[diagMsgLen:]; len(attrs) > 0; {
		if len(attrs) < rtaHdrLen {
			return false, fmt.Errorf("%w: %d trailing attribute bytes", ErrMalformed, len(attrs))
		}
		l := int(binary.NativeEndian.Uint16(attrs[0:2]))
		typ := binary.NativeEndian.Uint16(attrs[2:4])
		if l < rtaHdrLen || l > len(attrs) {
			return false, fmt.Errorf("%w: attribute length %d, %d bytes left", ErrMalformed, l, len(attrs))
		}
		switch v := attrs[rtaHdrLen:l]; typ {
		case inetDiagInfo:
			parseTCPInfo(v, &s.Info)
		case inetDiagSkMemInfo:
			if off := 4 * skMemInfoDrops; len(v) >= off+4 {
				s.Drops, s.HasDrops = binary.NativeEndian.Uint32(v[off:]), true
			}
		}
		attrs = attrs[min(align(l), len(attrs)):]
	}
	return true, nil
}

// parseTCPInfo reads the fields b is long enough to hold: older kernels
// send a shorter struct tcp_info, newer ones a longer one.
func parseTCPInfo(b []byte, ti *TCPInfo) {
	ti.Len = len(b)
	u32 := func(off int) uint32 {
		if len(b) < off+4 {
			return 0
		}
		return binary.NativeEndian.Uint32(b[off:])
	}
	ti.Retrans = u32(tiRetrans)
	ti.LastDataSentMs = u32(tiLastDataSent)
	ti.LastDataRecvMs = u32(tiLastDataRecv)
	ti.LastAckRecvMs = u32(tiLastAckRecv)
	ti.RTTUs = u32(tiRTT)
	ti.RTTVarUs = u32(tiRTTVar)
	ti.TotalRetrans = u32(tiTotalRetrans)
	if len(b) >= tiBytesReceived+8 {
		ti.HasBytes = true
		ti.BytesAcked = binary.NativeEndian.Uint64(b[tiBytesAcked:])
		ti.BytesReceived = binary.NativeEndian.Uint64(b[tiBytesReceived:])
	}
	if len(b) >= tiSegsIn+4 {
		ti.HasSegs = true
		ti.SegsOut = u32(tiSegsOut)
		ti.SegsIn = u32(tiSegsIn)
	}
}

func align(n int) int { return (n + nlmsgAlign - 1) &^ (nlmsgAlign - 1) }
