package sockdiag

import (
	"bufio"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strconv"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/netpulse/netpulse/lib/testutil/priv"
)

// The benchmarks need more descriptors than RLIMIT_NOFILE lets one
// process hold here (root without CAP_SYS_RESOURCE cannot raise the hard
// limit), so helper processes, the test binary run again, hold the
// connections: one listener and up to perHelper connections each, both
// ends open. Many owning processes is also what Owners meets on real hosts.
const (
	helperEnv = "NETPULSE_SOCKDIAG_CONN_HELPER"
	perHelper = 9000
)

func TestMain(m *testing.M) {
	if inode := os.Getenv(ownerHelperEnv); inode != "" {
		os.Exit(ownerHelper(inode)) // owners_caps_test.go
	}
	if v := os.Getenv(helperEnv); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(2)
		}
		if err := holdConns(n); err != nil {
			fmt.Fprintln(os.Stderr, "conn helper:", err)
			os.Exit(1)
		}
		os.Exit(0)
	}
	os.Exit(m.Run())
}

// holdConns makes n loopback connections, says "ready" on stdout and
// holds them until stdin closes, then resets them (no TIME_WAIT left).
func holdConns(n int) error {
	ln, err := unix.Socket(unix.AF_INET, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return err
	}
	if err := unix.Bind(ln, &unix.SockaddrInet4{Addr: [4]byte{127, 0, 0, 1}}); err != nil {
		return err
	}
	if err := unix.Listen(ln, 4096); err != nil {
		return err
	}
	sa, err := unix.Getsockname(ln)
	if err != nil {
		return err
	}
	fds := make([]int, 0, 2*n)
	for i := range n {
		c, err := unix.Socket(unix.AF_INET, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
		if err != nil {
			return fmt.Errorf("connection %d: %w", i, err)
		}
		fds = append(fds, c)
		if err := unix.Connect(c, sa); err != nil {
			return fmt.Errorf("connection %d: %w", i, err)
		}
		s, _, err := unix.Accept4(ln, unix.SOCK_CLOEXEC)
		if err != nil {
			return fmt.Errorf("connection %d: %w", i, err)
		}
		fds = append(fds, s)
	}
	fmt.Println("ready")
	_, _ = io.Copy(io.Discard, os.Stdin)
	for _, fd := range fds {
		_ = unix.SetsockoptLinger(fd, unix.SOL_SOCKET, unix.SO_LINGER, &unix.Linger{Onoff: 1, Linger: 0})
		_ = unix.Close(fd)
	}
	return nil
}

// connSet is n established loopback connections (2n sockets) held by
// helper processes.
type connSet struct {
	n       int
	helpers []*exec.Cmd
	stdins  []io.Closer
}

var benchConns *connSet

// loopbackConns returns n connections, reusing the last set when it has
// the same size: making 100k connections takes seconds, and testing.B
// calls a benchmark several times.
func loopbackConns(b *testing.B, n int) *connSet {
	b.Helper()
	priv.RequireRoot(b)
	if benchConns != nil && benchConns.n == n {
		return benchConns
	}
	if benchConns != nil {
		benchConns.close()
		benchConns = nil
	}
	cs := &connSet{n: n}
	var ready []*bufio.Reader
	for left := n; left > 0; left -= perHelper {
		cmd := exec.Command(os.Args[0])
		cmd.Env = append(os.Environ(), fmt.Sprintf("%s=%d", helperEnv, min(left, perHelper)))
		cmd.Stderr = os.Stderr
		in, err := cmd.StdinPipe()
		if err != nil {
			b.Fatal(err)
		}
		out, err := cmd.StdoutPipe()
		if err != nil {
			b.Fatal(err)
		}
		if err := cmd.Start(); err != nil {
			b.Fatal(err)
		}
		cs.helpers = append(cs.helpers, cmd)
		cs.stdins = append(cs.stdins, in)
		ready = append(ready, bufio.NewReader(out))
	}
	for _, r := range ready {
		if line, err := r.ReadString('\n'); line != "ready\n" {
			cs.close()
			b.Fatalf("conn helper: %q %v", line, err)
		}
	}
	benchConns = cs
	return cs
}

func (cs *connSet) close() {
	for _, in := range cs.stdins {
		_ = in.Close()
	}
	for _, h := range cs.helpers {
		_ = h.Wait()
	}
}

var benchSizes = []int{10_000, 100_000}

func BenchmarkDump(b *testing.B) {
	for _, n := range benchSizes {
		b.Run(fmt.Sprintf("conns=%dk", n/1000), func(b *testing.B) {
			loopbackConns(b, n)
			d, err := NewDumper()
			if err != nil {
				b.Fatal(err)
			}
			defer d.Close()
			socks, err := d.Dump(nil)
			if err != nil {
				b.Fatal(err)
			}
			if len(socks) < 2*n {
				b.Fatalf("dumped %d sockets, want at least %d", len(socks), 2*n)
			}
			b.ReportAllocs()
			b.ResetTimer()
			for b.Loop() {
				if socks, err = d.Dump(socks[:0]); err != nil {
					b.Fatal(err)
				}
			}
			b.ReportMetric(float64(len(socks)), "sockets")
			b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N)/float64(len(socks)), "ns/socket")
		})
	}
}

func BenchmarkOwners(b *testing.B) {
	for _, n := range benchSizes {
		b.Run(fmt.Sprintf("conns=%dk", n/1000), func(b *testing.B) {
			loopbackConns(b, n)
			var s OwnerScanner
			owners := make(map[uint64]Owner)
			st, err := s.Scan(owners)
			if err != nil {
				b.Fatal(err)
			}
			if st.Sockets < 2*n {
				b.Fatalf("found %d owned sockets, want at least %d", st.Sockets, 2*n)
			}
			b.ReportAllocs()
			b.ResetTimer()
			for b.Loop() {
				if st, err = s.Scan(owners); err != nil {
					b.Fatal(err)
				}
			}
			b.ReportMetric(float64(st.Sockets), "sockets")
			b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N)/float64(st.Sockets), "ns/socket")
		})
	}
}

// BenchmarkDumpFunc is the probe's periodic resync dump: streamed (one
// read's sockets held at a time), every tracked state or only CLOSE_WAIT
// and LAST_ACK (the kernel filters; the snapshot's cheap resync).
func BenchmarkDumpFunc(b *testing.B) {
	const n = 100_000
	for _, bc := range []struct {
		name   string
		states StateSet
	}{
		{"all", AllStates},
		{"close-wait", 1<<StateCloseWait | 1<<StateLastAck},
	} {
		b.Run(fmt.Sprintf("conns=%dk/%s", n/1000, bc.name), func(b *testing.B) {
			loopbackConns(b, n)
			d, err := NewDumper()
			if err != nil {
				b.Fatal(err)
			}
			defer d.Close()
			count := 0
			fn := func(*Socket) { count++ }
			if err := d.DumpFunc(bc.states, fn); err != nil {
				b.Fatal(err)
			}
			b.ReportAllocs()
			b.ResetTimer()
			for b.Loop() {
				count = 0
				if err := d.DumpFunc(bc.states, fn); err != nil {
					b.Fatal(err)
				}
			}
			b.ReportMetric(float64(count), "sockets")
		})
	}
}
