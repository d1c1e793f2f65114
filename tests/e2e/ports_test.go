package e2e

import (
	"bufio"
	"context"
	"io"
	"net"
	"net/netip"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/netpulse/netpulse/lib/alert"
	"github.com/netpulse/netpulse/lib/testutil/netfault"
)

// A client in a network namespace of the test's own, whose ephemeral port
// range is narrowed to 200 ports, keeps connections to one endpoint open
// until connect fails with EADDRNOTAVAIL: port_exhaustion fires for the
// endpoint at the first failures, naming the client's pid. (The probe's
// TIME_WAIT counts and port range are its own namespace's; the failing
// connects are seen in every namespace.)
func TestPortExhaustionInNamespace(t *testing.T) {
	p := newPipeline(t)
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	link := netfault.NewLink(t)
	link.Exec(t, "sysctl", "-q", "-w", "net.ipv4.ip_local_port_range=40000 40199")

	ln, err := net.Listen("tcp4", net.JoinHostPort(link.HostAddr, "0"))
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	var held []net.Conn
	defer func() {
		for _, c := range held {
			c.Close()
		}
	}()
	accepted := make(chan net.Conn, 1024)
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			accepted <- c
		}
	}()
	remote := ln.Addr().String()
	al := p.watchAlerts()
	p.startAll(ctx)

	// The client holds every connection it makes; after the first
	// EADDRNOTAVAIL it tries five more times, 100 ms apart, then prints
	// what it did and waits for its stdin to close.
	client := link.Command("python3", "-c", `
import errno, socket, sys, time
host, port = sys.argv[1], int(sys.argv[2])
held, failed, first = [], 0, 0
while failed < 6:
    s = socket.socket()
    try:
        s.connect((host, port))
        held.append(s)
    except OSError as e:
        if e.errno != errno.EADDRNOTAVAIL:
            raise
        s.close()
        failed += 1
        first = first or time.time_ns()
        time.sleep(0.1)
print(len(held), failed, first, flush=True)
sys.stdin.read()
`, link.HostAddr, remote[strings.LastIndexByte(remote, ':')+1:])
	stdin, err := client.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	defer stdin.Close()
	out, err := client.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := client.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { _ = client.Process.Kill(); _ = client.Wait() }()
	go func() {
		for c := range accepted {
			held = append(held, c)
			go func() { _, _ = io.Copy(io.Discard, c) }()
		}
	}()
	line, err := bufio.NewReader(out).ReadString('\n')
	if err != nil {
		t.Fatalf("client: %v", err)
	}
	var opened, failed int
	var firstNs int64
	if f := strings.Fields(line); len(f) == 3 {
		opened, _ = strconv.Atoi(f[0])
		failed, _ = strconv.Atoi(f[1])
		firstNs, _ = strconv.ParseInt(f[2], 10, 64)
	}
	if opened != 200 || failed != 6 {
		t.Fatalf("client opened %d connections before EADDRNOTAVAIL (%d failures), want the 200 ports of its range", opened, failed)
	}
	firstFailure := time.Unix(0, firstNs)

	a := al.wait(ctx, "port_exhaustion for "+remote, func(a alert.Alert) bool {
		return a.Detector == "port_exhaustion" && a.Status == alert.Firing && a.Labels["remote"] == remote
	})
	t.Logf("alert %s after the first failure: %s", a.SentAt.Sub(firstFailure).Round(time.Millisecond), a.Summary())
	if pid := strconv.Itoa(client.Process.Pid); a.Annotations["pid"] != pid || a.Annotations["comm"] != "python3" ||
		a.Annotations["rule"] != "failures" || a.Severity != "critical" {
		t.Errorf("alert annotations %v severity %s: want the client (pid %s, python3), rule failures, critical",
			a.Annotations, a.Severity, pid)
	}
	if n, _ := strconv.Atoi(a.Annotations["failures"]); n < 1 || n > failed {
		t.Errorf("alert counts %s failures, the client had %d", a.Annotations["failures"], failed)
	}
	// At the first failures: the detector evaluates every 500 ms and the
	// probe flushes every 50 ms.
	if late := a.StartsAt.Sub(firstFailure); late > 2*time.Second {
		t.Errorf("alert started %s after the first failure, want at most 2 s", late)
	}
}

// A peer in a namespace of the test's own that never closes after our FIN:
// this side's sockets pile up in FIN_WAIT2; peer_not_closing fires naming
// the remote and this process, and resolves once the peer closes (they
// move to TIME_WAIT).
func TestPeerNotClosingAlert(t *testing.T) {
	p := newPipeline(t)
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	link := netfault.NewLink(t)
	const n = 40
	peer := link.Command("python3", "-c", `
import socket, sys
ls = socket.socket(); ls.bind(("0.0.0.0", 0)); ls.listen(128)
print(ls.getsockname()[1], flush=True)
held = [ls.accept()[0] for _ in range(int(sys.argv[1]))]
sys.stdin.read()   # until the test closes it
for c in held:
    c.close()      # our FIN at last: their side moves to TIME_WAIT
`, strconv.Itoa(n))
	stdin, err := peer.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	port := startServer(t, "peer that never closes", peer)
	remote := net.JoinHostPort(link.PeerAddr, strconv.Itoa(port))
	al := p.watchAlerts()
	p.startAllWith(ctx, []string{"--detector.peer_not_closing.min_age=2s"})

	for range n {
		c, err := net.Dial("tcp4", remote)
		if err != nil {
			t.Fatal(err)
		}
		c.Close() // our FIN; the peer acknowledges it and never sends its own
	}
	a := al.wait(ctx, "peer_not_closing for "+remote, func(a alert.Alert) bool {
		return a.Detector == "peer_not_closing" && a.Status == alert.Firing && a.Labels["remote"] == remote
	})
	t.Logf("alert: %s", a.Summary())
	ss := ssCount(t, "fin-wait-2", netip.MustParseAddrPort(remote))
	if got, _ := strconv.Atoi(a.Annotations["count"]); got != n || ss != n {
		t.Errorf("alert counts %s FIN_WAIT2 sockets, ss %d, want %d", a.Annotations["count"], ss, n)
	}
	if a.Labels["local_port"] != "0" || a.Annotations["pid"] != strconv.Itoa(os.Getpid()) {
		t.Errorf("alert labels %v annotations %v: want local_port 0 and this test's pid %d", a.Labels, a.Annotations, os.Getpid())
	}
	if age, _ := strconv.Atoi(a.Annotations["oldest_age_seconds"]); age < 2 {
		t.Errorf("oldest FIN_WAIT2 %d s, want at least min_age 2 s", age)
	}

	stdin.Close() // the peer closes every connection
	al.wait(ctx, "peer_not_closing resolved", func(r alert.Alert) bool {
		return r.Fingerprint == a.Fingerprint && r.Status == alert.Resolved
	})
	if tw := ssCount(t, "time-wait", netip.MustParseAddrPort(remote)); tw != n {
		t.Errorf("after the peer closed: %d in TIME_WAIT, want %d", tw, n)
	}
}
