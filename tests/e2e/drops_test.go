package e2e

import (
	"context"
	"net"
	"os"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/netpulse/netpulse/lib/alert"
	"github.com/netpulse/netpulse/lib/testutil/netfault"
	"github.com/netpulse/netpulse/lib/testutil/netstat"
)

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
// netfilter reason. listen_overflow names the listener's port and pid;
// drop_spike, once it learned the host, fires for the netfilter drops
// that keep coming, naming the port.
func TestDropsToClickHouse(t *testing.T) {
	p := newPipeline(t)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	sink := p.startSink(ctx)
	defer sink.stop()
	al := p.watchAlerts()
	det := p.startDetector(ctx, "--detectors=listen_overflow,drop_spike", "--evaluate_interval=500ms", "--stats.interval=1s",
		"--detector.drop_spike.window=10s", "--detector.drop_spike.baseline_windows=1", "--detector.drop_spike.min_rate=2")
	defer det.stop()
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
	before := netstat.TcpExt(t, "ListenOverflows")
	synFlood(t, lport, 60)
	overflows := netstat.TcpExt(t, "ListenOverflows") - before
	if overflows == 0 {
		t.Fatal("the flood overflowed nothing")
	}

	// drop_spike has watched the host (its drop counts) for a learning
	// window: a reason it did not see by then starts from a baseline of 0.
	learned := regexp.MustCompile(`\bdrop_spike\.windows=[1-9]`)
	det.waitLine(ctx, "drop_spike learned a window", func(l string) bool {
		return strings.Contains(l, "detector=drop_spike") && learned.MatchString(l)
	})

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
	fired := al.wait(ctx, "listen_overflow for the listener", func(a alert.Alert) bool {
		return a.Detector == "listen_overflow" && a.Host == p.host && a.Status == alert.Firing &&
			a.Labels["local_port"] == strconv.Itoa(lport)
	})
	if fired.Annotations["pid"] != strconv.Itoa(os.Getpid()) || fired.Annotations["backlog"] != "1" {
		t.Errorf("listen_overflow does not name the listener (pid %d, backlog 1): %v", os.Getpid(), fired.Annotations)
	}
	for _, a := range al.seen() {
		if a.Detector == "listen_overflow" && a.Labels["local_port"] != strconv.Itoa(lport) {
			t.Errorf("listen_overflow fired for port %s: only %d overflowed", a.Labels["local_port"], lport)
		}
	}

	// The firewall keeps dropping the service's clients: 40 SYNs every
	// half second (paced traffic, not a wait) until drop_spike, its
	// baseline of the host learned over a window, names the reason.
	isSpike := func(a alert.Alert) bool {
		return a.Detector == "drop_spike" && a.Host == p.host && a.Status == alert.Firing &&
			a.Labels["reason"] == "NETFILTER_DROP" && a.Labels["direction"] == "in"
	}
	pace := time.NewTicker(500 * time.Millisecond)
	defer pace.Stop()
	var sp alert.Alert
flood:
	for {
		synFlood(t, nport, 40)
		select {
		case a := <-al.ch:
			if isSpike(a) {
				sp = a
				break flood
			}
		case <-pace.C:
		case <-ctx.Done():
			t.Fatalf("no drop_spike for NETFILTER_DROP; %d alerts; detector log:\n%s", len(al.seen()), tail(det.log(), 4000))
		}
	}
	if sp.Annotations["top_local_port"] != strconv.Itoa(nport) || sp.Annotations["pid"] != strconv.Itoa(os.Getpid()) {
		t.Errorf("drop_spike does not name the service (port %d, pid %d): %v", nport, os.Getpid(), sp.Annotations)
	}
	t.Logf("drop_spike: %s", sp.Summary())
	t.Logf("listener: %d overflows (nstat) = stored; nft: %d drops = stored; alert: %s", overflows, nftCount, fired.Summary())
}
