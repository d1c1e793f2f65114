package sockdiag

import (
	"encoding/binary"
	"errors"
	"fmt"
	"unsafe"

	"golang.org/x/sys/unix"
)

// recvBufSize is what one read may hold: the kernel sizes dump messages by
// the reader's buffer, capped at 32 KiB (netlink_dump, max_recvmsg_len).
const recvBufSize = 32 << 10

// DumpStats counts what a Dumper read over its life.
type DumpStats struct {
	Dumps   uint64 // completed Dump calls
	Sockets uint64 // sockets returned
	// Skipped: sockets of an unknown family or state, left out.
	Skipped uint64
	// Stale: messages answering an earlier, abandoned request, ignored.
	Stale uint64
}

// Dumper dumps the kernel's TCP sockets through one NETLINK_SOCK_DIAG
// socket and one receive buffer, reused from dump to dump. It is not safe
// for concurrent use.
type Dumper struct {
	fd  int // -1 when closed; reopened by the next Dump
	buf []byte
	// chunk holds one read's sockets for DumpFunc.
	chunk []Socket
	req   [nlmsgHdrLen + diagReqLen]byte
	// states of the dump being read
	states StateSet
	ext    uint8 // idiag_ext of the dump being read
	p      parser
	stats  DumpStats
}

// NewDumper opens the netlink socket. Dumping needs no privilege; the
// owners of other users' sockets (Owners) do.
func NewDumper() (*Dumper, error) {
	d := &Dumper{fd: -1, buf: make([]byte, recvBufSize)}
	if err := d.open(); err != nil {
		return nil, err
	}
	return d, nil
}

func (d *Dumper) open() error {
	fd, err := unix.Socket(unix.AF_NETLINK, unix.SOCK_RAW|unix.SOCK_CLOEXEC, unix.NETLINK_SOCK_DIAG)
	if err != nil {
		return fmt.Errorf("sockdiag: open NETLINK_SOCK_DIAG socket: %w", err)
	}
	d.fd = fd
	return nil
}

// Close releases the netlink socket.
func (d *Dumper) Close() error {
	if d.fd < 0 {
		return nil
	}
	err := unix.Close(d.fd)
	d.fd = -1
	return err
}

// Stats returns the counters.
func (d *Dumper) Stats() DumpStats { return d.stats }

// Dump appends every TCP socket of the host's network namespace, IPv4 then
// IPv6, in all states, to dst and returns it. It allocates nothing once dst
// and the Dumper have grown to the table's size. On error dst holds what
// was read so far and the Dumper starts afresh on the next call.
func (d *Dumper) Dump(dst []Socket) ([]Socket, error) {
	return d.DumpStates(dst, AllStates)
}

// DumpStates is Dump of the sockets in the given states only. The kernel
// filters them (idiag_states), so the others cost neither reading nor
// memory: a busy host holds tens of thousands of TIME_WAIT sockets.
func (d *Dumper) DumpStates(dst []Socket, states StateSet) ([]Socket, error) {
	d.ext = 1 << (inetDiagInfo - 1)
	return d.dump(dst, states, nil)
}

// DumpListeners appends the LISTEN sockets with their drop counters
// (Socket.Drops) instead of tcp_info.
func (d *Dumper) DumpListeners(dst []Socket) ([]Socket, error) {
	d.ext = 1 << (inetDiagSkMemInfo - 1)
	return d.dump(dst, 1<<StateListen, nil)
}

// DumpFunc is DumpStates that hands each socket to fn instead of keeping
// it: a periodic resync of 100k sockets then holds one read's worth (about
// 200 sockets) instead of the whole dump. fn must not keep s. It allocates
// nothing once the Dumper has grown.
func (d *Dumper) DumpFunc(states StateSet, fn func(s *Socket)) error {
	var err error
	d.ext = 1 << (inetDiagInfo - 1)
	d.chunk, err = d.dump(d.chunk[:0], states, fn)
	d.chunk = d.chunk[:0]
	return err
}

func (d *Dumper) dump(dst []Socket, states StateSet, fn func(*Socket)) ([]Socket, error) {
	d.states = states
	if d.fd < 0 {
		if err := d.open(); err != nil {
			return dst, err
		}
	}
	for _, family := range [...]uint8{unix.AF_INET, unix.AF_INET6} {
		var err error
		if dst, err = d.dumpFamily(family, dst, fn); err != nil {
			// The kernel may still hold the rest of this dump, and a
			// socket with a dump running refuses a new one (EBUSY).
			_ = d.Close()
			return dst, err
		}
	}
	d.stats.Dumps++
	return dst, nil
}

// dumpFamily appends the sockets of family to dst, or, with fn, hands each
// read's sockets to fn and truncates dst back.
func (d *Dumper) dumpFamily(family uint8, dst []Socket, fn func(*Socket)) ([]Socket, error) {
	d.p.seq++
	d.buildRequest(family)
	// An unconnected netlink socket writes to the kernel.
	if _, err := unix.Write(d.fd, d.req[:]); err != nil {
		return dst, fmt.Errorf("sockdiag: send dump request: %w", err)
	}
	before, handed := len(dst), 0
	defer func() {
		d.stats.Sockets += uint64(len(dst) - before + handed)
		d.stats.Skipped, d.stats.Stale = d.p.skipped, d.p.stale
	}()
	for {
		n, err := d.recv()
		if err != nil {
			if errors.Is(err, unix.EINTR) {
				continue
			}
			return dst, fmt.Errorf("sockdiag: read dump: %w", err)
		}
		if n > len(d.buf) {
			return dst, fmt.Errorf("%w: a %d-byte read did not fit in %d bytes", ErrMalformed, n, len(d.buf))
		}
		if n == 0 {
			return dst, fmt.Errorf("%w: empty read before NLMSG_DONE", ErrMalformed)
		}
		var done bool
		dst, done, err = d.p.parse(d.buf[:n], dst)
		if fn != nil {
			for i := before; i < len(dst); i++ {
				fn(&dst[i])
			}
			handed += len(dst) - before
			dst = dst[:before]
		}
		if err != nil || done {
			return dst, err
		}
	}
}

// recv reads one datagram. With MSG_TRUNC the kernel returns its full
// length even when the buffer was shorter. It calls recvfrom directly
// because unix.Recvmsg allocates the sender's address on every read.
func (d *Dumper) recv() (int, error) {
	n, _, e := unix.Syscall6(unix.SYS_RECVFROM, uintptr(d.fd), uintptr(unsafe.Pointer(&d.buf[0])), uintptr(len(d.buf)), unix.MSG_TRUNC, 0, 0)
	if e != 0 {
		return 0, e
	}
	return int(n), nil
}

// buildRequest writes a nlmsghdr and a struct inet_diag_req_v2 asking for
// every TCP socket of family in d.states with the attributes of d.ext.
func (d *Dumper) buildRequest(family uint8) {
	b := d.req[:]
	clear(b)
	binary.NativeEndian.PutUint32(b[0:], uint32(len(b)))
	binary.NativeEndian.PutUint16(b[4:], sockDiagByFam)
	binary.NativeEndian.PutUint16(b[6:], unix.NLM_F_REQUEST|unix.NLM_F_DUMP)
	binary.NativeEndian.PutUint32(b[8:], d.p.seq)
	r := b[nlmsgHdrLen:]
	r[0] = family
	r[1] = unix.IPPROTO_TCP
	r[2] = d.ext                                           // idiag_ext
	binary.NativeEndian.PutUint32(r[4:], uint32(d.states)) // idiag_states
}
