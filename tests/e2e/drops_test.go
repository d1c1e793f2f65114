package e2e

import (
	"bufio"
	"context"
	"net"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/netpulse/netpulse/lib/testutil/netfault"
)

// listenOverflows reads TcpExt ListenOverflows of this network namespace.
func listenOverflows(t *testing.T) uint64 {
	t.Helper()
	f, err := os.Open("/proc/net/netstat")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		keys := strings.Fields(sc.Text())
		if !sc.Scan() || len(keys) == 0 || keys[0] != "TcpExt:" {
			continue
		}
		vals := strings.Fields(sc.Text())
		for i, k := range keys {
			if k == "ListenOverflows" && i < len(vals) {
				v, err := strconv.ParseUint(vals[i], 10, 64)
				if err != nil {
					t.Fatal(err)
				}
				return v
			}
		}
	}
	t.Fatal("no TcpExt ListenOverflows in /proc/net/netstat")
	return 0
}

// synFlood sends n SYNs to 127.0.0.1:port from non-blocking connects and
// closes them once every connect returned (loopback delivers each SYN
// within its connect call), before any SYN retransmit.
func synFlood(t *testing.T, port, n int) {
	t.Helper()
	fds := make([]int, 0, n)
	defer func() {
		for _, fd := range fds {
			unix.Close(fd)
		}
	}()
	for range n {
		fd, err := unix.Socket(unix.AF_INET, unix.SOCK_STREAM|unix.SOCK_NONBLOCK, 0)
		if err != nil {
			t.Fatal(err)
		}
		fds = append(fds, fd)
		if err := unix.Connect(fd, &unix.SockaddrInet4{Port: port, Addr: [4]byte{127, 0, 0, 1}}); err != nil && err != unix.EINPROGRESS {
			t.Fatalf("connect: %v", err)
		}
	}
}

// Packet drops reach tcp_drops with the kernel's counts: a listener that
// never accepts, with a backlog of 1, flooded with connects, as many drops
// as TcpExtListenOverflows grew by, named by port and owner; SYNs that
// nftables drops on their way in, as many as nft's rule counted, with the
// netfilter reason.
func TestDropsToClickHouse(t *testing.T) {
	p := newPipeline(t)
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	sink := p.startSink(ctx)
	defer sink.stop()
	probe := start(t, "probe", append(p.natsArgs("probe"), "--host="+p.host,
		"--batch.flush_interval=50ms", "--stats.interval=1s", "--drops.interval=1s")...)
	defer probe.stop()
	probe.waitLog(ctx, "probe running")

	ln, err := unix.Socket(unix.AF_INET, unix.SOCK_STREAM, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(ln)
	if err := unix.Bind(ln, &unix.SockaddrInet4{Addr: [4]byte{127, 0, 0, 1}}); err != nil {
		t.Fatal(err)
	}
	if err := unix.Listen(ln, 1); err != nil {
		t.Fatal(err)
	}
	sa, err := unix.Getsockname(ln)
	if err != nil {
		t.Fatal(err)
	}
	lport := sa.(*unix.SockaddrInet4).Port
	before := listenOverflows(t)
	synFlood(t, lport, 60)
	overflows := listenOverflows(t) - before
	if overflows == 0 {
		t.Fatal("the flood overflowed nothing")
	}

	// A service behind a firewall rule that drops its clients' SYNs.
	svc, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer svc.Close()
	nport := svc.Addr().(*net.TCPAddr).Port
	dropped := netfault.DropAll(t, "", nport)
	synFlood(t, nport, 200)
	nftCount := dropped()

	p.waitRows(ctx, overflows, "SELECT sum(count) FROM tcp_drops WHERE host = ? AND source = 'listener' AND sport = ?", p.host, uint16(lport))
	p.waitRows(ctx, nftCount, "SELECT sum(count) FROM tcp_drops WHERE host = ? AND source = 'kfree_skb' AND sport = ? AND ingress = 1", p.host, uint16(nport))
	// Let one more interval land: nothing more may come.
	p.waitRows(ctx, 1, "SELECT count() FROM tcp_drops WHERE host = ? AND time > (SELECT max(time) FROM tcp_drops WHERE host = ? AND sport = ?)", p.host, p.host, uint16(nport))

	if got := p.uint64("SELECT sum(count) FROM tcp_drops WHERE host = ? AND source = 'listener' AND sport = ?", p.host, uint16(lport)); got != overflows {
		t.Errorf("listener drops stored %d, TcpExtListenOverflows grew by %d", got, overflows)
	}
	if bad := p.uint64(`SELECT count() FROM tcp_drops WHERE host = ? AND source = 'listener' AND sport = ?
		AND NOT (reason = 'LISTEN_OVERFLOW' AND pid = ? AND saddr = '127.0.0.1' AND backlog = 1 AND accept_queue >= 1)`,
		p.host, uint16(lport), uint32(os.Getpid())); bad != 0 {
		t.Errorf("%d listener drop rows do not name the listener (pid %d, 127.0.0.1:%d, backlog 1, queue full)", bad, os.Getpid(), lport)
	}
	if got := p.uint64("SELECT sum(count) FROM tcp_drops WHERE host = ? AND source = 'kfree_skb' AND sport = ? AND ingress = 1", p.host, uint16(nport)); got != nftCount {
		t.Errorf("kernel drops stored %d, nft counted %d", got, nftCount)
	}
	if bad := p.uint64("SELECT count() FROM tcp_drops WHERE host = ? AND sport = ? AND NOT (reason = 'NETFILTER_DROP' AND daddr = '127.0.0.1' AND dport = 0 AND pid = ?)", p.host, uint16(nport), uint32(os.Getpid())); bad != 0 {
		t.Errorf("%d rows of the nft drops have another reason, remote, a client port or another owner than the listener's", bad)
	}
	if dups := p.uint64("SELECT toUInt64(count() - uniqExact(probe_id, seq, source, reason, saddr, sport, daddr, dport, ingress, time_ns)) FROM tcp_drops WHERE host = ?", p.host); dups != 0 {
		t.Errorf("%d drop rows stored more than once", dups)
	}
	t.Logf("listener: %d overflows (nstat) = stored; nft: %d drops = stored", overflows, nftCount)
}
