package sockdiag

import (
	"encoding/binary"
	"errors"
	"net/netip"
	"reflect"
	"syscall"
	"testing"
	"unsafe"

	"golang.org/x/sys/unix"
)

// The parser's tcp_info offsets must be those of the kernel's struct,
// which x/sys/unix mirrors.
func TestTCPInfoOffsets(t *testing.T) {
	var ti unix.TCPInfo
	for _, c := range []struct {
		name     string
		mine, ux uintptr
	}{
		{"retrans", tiRetrans, unsafe.Offsetof(ti.Retrans)},
		{"last_data_sent", tiLastDataSent, unsafe.Offsetof(ti.Last_data_sent)},
		{"last_data_recv", tiLastDataRecv, unsafe.Offsetof(ti.Last_data_recv)},
		{"last_ack_recv", tiLastAckRecv, unsafe.Offsetof(ti.Last_ack_recv)},
		{"rtt", tiRTT, unsafe.Offsetof(ti.Rtt)},
		{"rttvar", tiRTTVar, unsafe.Offsetof(ti.Rttvar)},
		{"total_retrans", tiTotalRetrans, unsafe.Offsetof(ti.Total_retrans)},
		{"bytes_acked", tiBytesAcked, unsafe.Offsetof(ti.Bytes_acked)},
		{"bytes_received", tiBytesReceived, unsafe.Offsetof(ti.Bytes_received)},
		{"segs_out", tiSegsOut, unsafe.Offsetof(ti.Segs_out)},
		{"segs_in", tiSegsIn, unsafe.Offsetof(ti.Segs_in)},
	} {
		if c.mine != c.ux {
			t.Errorf("tcpi_%s at %d, unix.TCPInfo has it at %d", c.name, c.mine, c.ux)
		}
	}
}

// Wire builders for synthetic replies.

func nlmsg(typ uint16, seq uint32, payload []byte) []byte {
	b := make([]byte, nlmsgHdrLen, nlmsgHdrLen+len(payload)+3)
	binary.NativeEndian.PutUint32(b[0:], uint32(nlmsgHdrLen+len(payload)))
	binary.NativeEndian.PutUint16(b[4:], typ)
	binary.NativeEndian.PutUint32(b[8:], seq)
	b = append(b, payload...)
	for len(b)%4 != 0 {
		b = append(b, 0)
	}
	return b
}

func rtattr(typ uint16, payload []byte) []byte {
	b := make([]byte, rtaHdrLen, rtaHdrLen+len(payload)+3)
	binary.NativeEndian.PutUint16(b[0:], uint16(rtaHdrLen+len(payload)))
	binary.NativeEndian.PutUint16(b[2:], typ)
	b = append(b, payload...)
	for len(b)%4 != 0 {
		b = append(b, 0)
	}
	return b
}

// diag builds a struct inet_diag_msg for s followed by attrs.
func diag(s Socket, attrs ...[]byte) []byte {
	b := make([]byte, diagMsgLen)
	b[offFamily], b[offState] = s.Family, s.State
	binary.BigEndian.PutUint16(b[offSport:], s.Src.Port())
	binary.BigEndian.PutUint16(b[offDport:], s.Dst.Port())
	src, dst := s.Src.Addr().AsSlice(), s.Dst.Addr().AsSlice()
	copy(b[offSrc:offSrc+16], src)
	copy(b[offDst:offDst+16], dst)
	binary.NativeEndian.PutUint32(b[offCookie:], uint32(s.Cookie))
	binary.NativeEndian.PutUint32(b[offCookie+4:], uint32(s.Cookie>>32))
	binary.NativeEndian.PutUint32(b[offRQueue:], s.RQueue)
	binary.NativeEndian.PutUint32(b[offWQueue:], s.WQueue)
	binary.NativeEndian.PutUint32(b[offUID:], s.UID)
	binary.NativeEndian.PutUint32(b[offInode:], uint32(s.Inode))
	for _, a := range attrs {
		b = append(b, a...)
	}
	return b
}

// tcpInfo builds a struct tcp_info of n bytes with distinct field values.
func tcpInfo(n int) []byte {
	b := make([]byte, unix.SizeofTCPInfo)
	put32 := func(off int, v uint32) { binary.NativeEndian.PutUint32(b[off:], v) }
	put32(tiRetrans, 2)
	put32(tiLastDataSent, 10)
	put32(tiLastDataRecv, 20)
	put32(tiLastAckRecv, 30)
	put32(tiRTT, 400)
	put32(tiRTTVar, 50)
	put32(tiTotalRetrans, 7)
	binary.NativeEndian.PutUint64(b[tiBytesAcked:], 1<<40)
	binary.NativeEndian.PutUint64(b[tiBytesReceived:], 1<<41)
	put32(tiSegsOut, 11)
	put32(tiSegsIn, 12)
	return b[:n]
}

func cat(parts ...[]byte) []byte {
	var b []byte
	for _, p := range parts {
		b = append(b, p...)
	}
	return b
}

var (
	v4 = Socket{
		Family: unix.AF_INET, State: StateCloseWait,
		Src:    netip.MustParseAddrPort("10.0.0.1:8080"),
		Dst:    netip.MustParseAddrPort("10.0.0.2:40000"),
		Cookie: 0x1_0000_0002, Inode: 1234, UID: 1000, RQueue: 5, WQueue: 6,
	}
	v6 = Socket{
		Family: unix.AF_INET6, State: StateListen,
		Src:    netip.MustParseAddrPort("[::ffff:127.0.0.1]:443"),
		Dst:    netip.MustParseAddrPort("[::]:0"),
		Cookie: 9, Inode: 99,
	}
	fullInfo = TCPInfo{
		Len: unix.SizeofTCPInfo, Retrans: 2, LastDataSentMs: 10, LastDataRecvMs: 20, LastAckRecvMs: 30,
		RTTUs: 400, RTTVarUs: 50, TotalRetrans: 7,
		BytesAcked: 1 << 40, BytesReceived: 1 << 41, HasBytes: true, SegsOut: 11, SegsIn: 12, HasSegs: true,
	}
)

func withInfo(s Socket, ti TCPInfo) Socket { s.Info = ti; return s }

func TestParse(t *testing.T) {
	const seq = 7
	done := nlmsg(nlmsgDone, seq, []byte{0, 0, 0, 0})
	errMsg := func(code int32) []byte {
		p := make([]byte, 4+nlmsgHdrLen)
		binary.NativeEndian.PutUint32(p, uint32(code))
		return nlmsg(nlmsgError, seq, p)
	}
	tests := []struct {
		name    string
		in      []byte
		want    []Socket
		done    bool
		err     error // errors.Is target; nil: no error
		stale   uint64
		skipped uint64
	}{
		{
			name: "v4 and v6 then done",
			in: cat(nlmsg(sockDiagByFam, seq, diag(v4)),
				nlmsg(sockDiagByFam, seq, diag(v6, rtattr(inetDiagInfo, tcpInfo(unix.SizeofTCPInfo)))), done),
			want: []Socket{v4, withInfo(v6, fullInfo)},
			done: true,
		},
		{
			name: "part of a multi-part reply: no done yet",
			in:   cat(nlmsg(sockDiagByFam, seq, diag(v4)), nlmsg(sockDiagByFam, seq, diag(v4))),
			want: []Socket{v4, v4},
		},
		{
			name: "tcp_info of a 4.0 kernel: no byte counters",
			in:   nlmsg(sockDiagByFam, seq, diag(v4, rtattr(inetDiagInfo, tcpInfo(104)))),
			want: []Socket{withInfo(v4, TCPInfo{Len: 104, Retrans: 2, LastDataSentMs: 10, LastDataRecvMs: 20,
				LastAckRecvMs: 30, RTTUs: 400, RTTVarUs: 50, TotalRetrans: 7})},
		},
		{
			name: "tcp_info cut after last_ack_recv",
			in:   nlmsg(sockDiagByFam, seq, diag(v4, rtattr(inetDiagInfo, tcpInfo(60)))),
			want: []Socket{withInfo(v4, TCPInfo{Len: 60, Retrans: 2, LastDataSentMs: 10, LastDataRecvMs: 20, LastAckRecvMs: 30})},
		},
		{
			name: "tcp_info of 4.1: bytes but no segments",
			in:   nlmsg(sockDiagByFam, seq, diag(v4, rtattr(inetDiagInfo, tcpInfo(136)))),
			want: []Socket{withInfo(v4, TCPInfo{Len: 136, Retrans: 2, LastDataSentMs: 10, LastDataRecvMs: 20,
				LastAckRecvMs: 30, RTTUs: 400, RTTVarUs: 50, TotalRetrans: 7, BytesAcked: 1 << 40, BytesReceived: 1 << 41, HasBytes: true})},
		},
		{
			name: "unknown attributes are ignored, odd lengths padded",
			in:   nlmsg(sockDiagByFam, seq, diag(v4, rtattr(1, []byte{1, 2, 3, 4, 5}), rtattr(8, []byte{3}))),
			want: []Socket{v4},
		},
		{
			name: "last message and attribute of a read without padding",
			in: func() []byte {
				b := nlmsg(sockDiagByFam, seq, diag(v4, rtattr(8, []byte{3})))[:nlmsgHdrLen+diagMsgLen+5]
				binary.NativeEndian.PutUint32(b, uint32(len(b)))
				return b
			}(),
			want: []Socket{v4},
		},
		{
			name: "attribute cut short of its length",
			in:   nlmsg(sockDiagByFam, seq, diag(v4, rtattr(inetDiagInfo, tcpInfo(100)))[:diagMsgLen+50]),
			err:  ErrMalformed,
		},
		{
			name:  "messages of an earlier request are skipped",
			in:    cat(nlmsg(sockDiagByFam, seq-1, diag(v4)), nlmsg(nlmsgDone, seq-1, nil), nlmsg(sockDiagByFam, seq, diag(v6))),
			want:  []Socket{v6},
			stale: 2,
		},
		{
			name:    "unknown family and state are skipped",
			in:      cat(nlmsg(sockDiagByFam, seq, diag(Socket{Family: unix.AF_UNIX, State: 1})), nlmsg(sockDiagByFam, seq, diag(Socket{Family: unix.AF_INET, State: 0})), nlmsg(sockDiagByFam, seq, diag(Socket{Family: unix.AF_INET, State: 13})), done),
			done:    true,
			skipped: 3,
		},
		{name: "done without payload (old kernels)", in: nlmsg(nlmsgDone, seq, nil), done: true},
		{name: "noop and ack are skipped", in: cat(nlmsg(nlmsgNoop, seq, nil), errMsg(0), done), done: true},
		{name: "done with an error", in: nlmsg(nlmsgDone, seq, []byte{0xf0, 0xff, 0xff, 0xff}), done: true, err: syscall.Errno(16)},
		{name: "kernel error", in: errMsg(-int32(unix.EPERM)), err: unix.EPERM},
		{name: "error with positive code", in: errMsg(5), err: ErrMalformed},
		{name: "short error message", in: nlmsg(nlmsgError, seq, []byte{1}), err: ErrMalformed},
		{name: "overrun", in: nlmsg(nlmsgOverrun, seq, nil), err: errAny},
		{name: "unknown message type", in: nlmsg(99, seq, nil), err: ErrMalformed},
		{name: "truncated header", in: nlmsg(sockDiagByFam, seq, diag(v4))[:10], err: ErrMalformed},
		{name: "length beyond the read", in: nlmsg(sockDiagByFam, seq, diag(v4))[:nlmsgHdrLen+40], err: ErrMalformed},
		{name: "length below a header", in: func() []byte {
			b := nlmsg(sockDiagByFam, seq, diag(v4))
			binary.NativeEndian.PutUint32(b, 8)
			return b
		}(), err: ErrMalformed},
		{name: "short inet_diag_msg", in: nlmsg(sockDiagByFam, seq, diag(v4)[:40]), err: ErrMalformed},
		{name: "attribute length below its header", in: nlmsg(sockDiagByFam, seq, append(diag(v4), 2, 0, 2, 0)), err: ErrMalformed},
		{name: "attribute length beyond the message", in: nlmsg(sockDiagByFam, seq, append(diag(v4), 200, 0, 2, 0)), err: ErrMalformed},
		{name: "attribute header cut", in: nlmsg(sockDiagByFam, seq, append(diag(v4), 8, 0)), err: ErrMalformed},
		{name: "good socket before a malformed one is kept", in: cat(nlmsg(sockDiagByFam, seq, diag(v4)), []byte{1, 2, 3}), want: []Socket{v4}, err: ErrMalformed},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			p := parser{seq: seq}
			got, done, err := p.parse(tc.in, nil)
			switch {
			case tc.err == nil && err != nil:
				t.Fatalf("error %v", err)
			case tc.err == errAny && err == nil, tc.err != nil && tc.err != errAny && !errors.Is(err, tc.err):
				t.Fatalf("error %v, want %v", err, tc.err)
			}
			if done != tc.done {
				t.Errorf("done %v, want %v", done, tc.done)
			}
			if len(got) != len(tc.want) || (len(got) > 0 && !reflect.DeepEqual(got, tc.want)) {
				t.Errorf("got  %+v\nwant %+v", got, tc.want)
			}
			if p.stale != tc.stale || p.skipped != tc.skipped {
				t.Errorf("stale %d skipped %d, want %d %d", p.stale, p.skipped, tc.stale, tc.skipped)
			}
		})
	}
}

var errAny = errors.New("any error")

// FuzzParse: no input makes the parser panic or return a socket it did
// not validate.
func FuzzParse(f *testing.F) {
	f.Add(cat(nlmsg(sockDiagByFam, 1, diag(v4, rtattr(inetDiagInfo, tcpInfo(200)))), nlmsg(nlmsgDone, 1, []byte{0, 0, 0, 0})))
	f.Add(nlmsg(nlmsgError, 1, []byte{0xff, 0xff, 0xff, 0xff}))
	f.Fuzz(func(t *testing.T, b []byte) {
		p := parser{seq: 1}
		socks, _, _ := p.parse(b, nil)
		for _, s := range socks {
			if (s.Family != unix.AF_INET && s.Family != unix.AF_INET6) || s.State < 1 || s.State > 12 {
				t.Fatalf("invalid socket returned: %+v", s)
			}
		}
	})
}
