package sockdiag

import (
	"net"
	"net/netip"
	"syscall"
	"testing"

	"golang.org/x/sys/unix"
)

// loopback is a set of real TCP sockets on one loopback listener, made by
// the test before it dumps: a listener, established pairs, and pairs whose
// client closed (the server side then sits in CLOSE_WAIT because the test
// never closes it).
type loopback struct {
	ln          *net.TCPListener
	established [][2]*net.TCPConn // client, server
	closeWait   []*net.TCPConn    // server sides in CLOSE_WAIT
	finWait     []*net.TCPConn    // clients that only shut down writing: FIN_WAIT2, still ours
	orphans     []netip.AddrPort  // clients that closed fully: FIN_WAIT2 without a file
}

// newLoopback listens on addr ("127.0.0.1:0" or "[::1]:0") and makes
// nEst established pairs and 2*nCW CLOSE_WAIT pairs: nCW whose client
// closed fully and nCW whose client only shut down writing.
func newLoopback(t testing.TB, network, addr string, nEst, nCW int) *loopback {
	t.Helper()
	ln, err := net.Listen(network, addr)
	if err != nil {
		t.Fatal(err)
	}
	lb := &loopback{ln: ln.(*net.TCPListener)}
	t.Cleanup(func() { lb.close() })
	pair := func() (client, server *net.TCPConn) {
		c, err := net.Dial(network, ln.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		s, err := ln.Accept()
		if err != nil {
			t.Fatal(err)
		}
		return c.(*net.TCPConn), s.(*net.TCPConn)
	}
	for range nEst {
		c, s := pair()
		lb.established = append(lb.established, [2]*net.TCPConn{c, s})
	}
	for range nCW {
		c, s := pair()
		lb.orphans = append(lb.orphans, c.LocalAddr().(*net.TCPAddr).AddrPort())
		if err := c.Close(); err != nil {
			t.Fatal(err)
		}
		lb.closeWait = append(lb.closeWait, s)
	}
	for range nCW {
		c, s := pair()
		if err := c.CloseWrite(); err != nil {
			t.Fatal(err)
		}
		lb.finWait = append(lb.finWait, c)
		lb.closeWait = append(lb.closeWait, s)
	}
	return lb
}

func (lb *loopback) close() {
	lb.ln.Close()
	for _, p := range lb.established {
		p[0].Close()
		p[1].Close()
	}
	for _, c := range lb.closeWait {
		c.Close()
	}
	for _, c := range lb.finWait {
		c.Close()
	}
}

// want is what the test expects to find for one socket.
type want struct {
	state uint8
	owned bool // held by this process (has a file)
	conn  syscall.Conn
}

// expected returns the sockets the loopback set must show, keyed by
// (local, remote).
func (lb *loopback) expected() map[[2]netip.AddrPort]want {
	m := make(map[[2]netip.AddrPort]want)
	local := func(c net.Conn) netip.AddrPort { return c.LocalAddr().(*net.TCPAddr).AddrPort() }
	remote := func(c net.Conn) netip.AddrPort { return c.RemoteAddr().(*net.TCPAddr).AddrPort() }
	la := lb.ln.Addr().(*net.TCPAddr).AddrPort()
	unspec := netip.IPv4Unspecified()
	if la.Addr().Is6() {
		unspec = netip.IPv6Unspecified()
	}
	m[[2]netip.AddrPort{la, netip.AddrPortFrom(unspec, 0)}] = want{state: StateListen, owned: true, conn: lb.ln}
	for _, p := range lb.established {
		for _, c := range p {
			m[[2]netip.AddrPort{local(c), remote(c)}] = want{state: StateEstablished, owned: true, conn: c}
		}
	}
	for _, s := range lb.closeWait {
		m[[2]netip.AddrPort{local(s), remote(s)}] = want{state: StateCloseWait, owned: true, conn: s}
	}
	for _, c := range lb.finWait {
		m[[2]netip.AddrPort{local(c), remote(c)}] = want{state: StateFinWait2, owned: true, conn: c}
	}
	for _, o := range lb.orphans {
		m[[2]netip.AddrPort{o, la}] = want{state: StateFinWait2}
	}
	return m
}

// sockOpt reads the socket cookie and file inode of c, the values sock_diag
// must report for it.
func sockIdentity(t testing.TB, c syscall.Conn) (cookie, inode uint64) {
	t.Helper()
	rc, err := c.SyscallConn()
	if err != nil {
		t.Fatal(err)
	}
	var opErr error
	err = rc.Control(func(fd uintptr) {
		cookie, opErr = unix.GetsockoptUint64(int(fd), unix.SOL_SOCKET, unix.SO_COOKIE)
		if opErr != nil {
			return
		}
		var st unix.Stat_t
		opErr = unix.Fstat(int(fd), &st)
		inode = st.Ino
	})
	if err == nil {
		err = opErr
	}
	if err != nil {
		t.Fatal(err)
	}
	return cookie, inode
}
