package e2e

import (
	"context"
	"errors"
	"net"
	"os"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/netpulse/netpulse/lib/alert"
	"github.com/netpulse/netpulse/lib/testutil/netfault"
)

// Bulk transfers from this process to a receiver behind a veth link, with
// nftables dropping 5% of their packets on arrival, started once the detector has
// watched the host for its learning period: retransmit_spike fires for that
// remote, names this process, and gives the ratio of the connections,
// still open, from the segments they sent between retransmits; the remote
// never retransmitted while the host was watched, so its baseline is 0.
func TestRetransmitSpikeAlert(t *testing.T) {
	p := newPipeline(t)
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	link := netfault.NewLink(t)
	port := discardServer(t, link)
	al := p.watchAlerts()
	_, det, _ := p.startAll(ctx)

	// A remote is new (baseline 0) once the detector has watched the host
	// for baseline_windows (2) windows of 2 s from its first evaluation;
	// evaluations run every 500 ms: 16 of them are 8 s, twice that.
	evaluations := regexp.MustCompile(`detector=retransmit_spike .*evaluations=(\d+)`)
	det.waitLine(ctx, "retransmit_spike learned the host", func(line string) bool {
		m := evaluations.FindStringSubmatch(line)
		if m == nil {
			return false
		}
		n, err := strconv.Atoi(m[1])
		return err == nil && n >= 16
	})

	netfault.DropShare(t, link.NS, port, 5) // as the packets arrive at the receiver
	const streams = 4
	sendCtx, stopSend := context.WithCancel(ctx)
	defer stopSend()
	sent := make(chan error, streams)
	for range streams {
		c, err := net.Dial("tcp4", net.JoinHostPort(link.PeerAddr, strconv.Itoa(port)))
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		go func() { sent <- sendUntil(sendCtx, c) }()
	}

	remote := link.PeerAddr
	a := al.wait(ctx, "retransmit_spike for "+remote, func(a alert.Alert) bool {
		return a.Detector == "retransmit_spike" && a.Status == alert.Firing && a.Labels["remote"] == remote
	})
	stopSend()
	t.Logf("alert: %s (threshold %g)", a.Summary(), a.Threshold)
	for range streams {
		if err := <-sent; err != nil {
			t.Errorf("bulk transfer: %v", err)
		}
	}
	if a.Annotations["pid"] != strconv.Itoa(os.Getpid()) || a.Annotations["baseline_per_s"] != "0" || a.Value < 50 || a.Threshold < 50 {
		t.Errorf("alert %v value %g threshold %g: want pid %d, a baseline of 0, at least min_rate 50 segments/s",
			a.Annotations, a.Value, a.Threshold, os.Getpid())
	}
	// The connections are open: the ratio comes from the segments they sent
	// between retransmits (segs_out on RETRANSMIT events), about the 5%
	// nftables drops.
	ratio, _ := a.Evidence["ratio"].(float64)
	if a.Evidence["ratio_source"] != "open connections" || ratio < 0.025 || ratio > 0.12 || !strings.Contains(a.SQL, "daddr = '"+remote+"'") {
		t.Errorf("evidence %v, sql %q: want a ratio of about 5%% from open connections and a query for %s", a.Evidence, a.SQL, remote)
	}
}

// discardServer runs a server inside the link's namespace that reads and
// discards whatever it is sent; it returns the server's port.
func discardServer(t *testing.T, link *netfault.Link) int {
	t.Helper()
	cmd := link.Command("python3", "-c", `
import socket, threading
ls = socket.socket(); ls.bind(("0.0.0.0", 0)); ls.listen(8)
print(ls.getsockname()[1], flush=True)
def drain(c):
    while c.recv(1 << 20):
        pass
    c.close()
while True:
    c, _ = ls.accept()
    threading.Thread(target=drain, args=(c,), daemon=True).start()
`)
	return startServer(t, "discard server", cmd)
}

// sendUntil writes to c until ctx ends.
func sendUntil(ctx context.Context, c net.Conn) error {
	buf := make([]byte, 256<<10)
	for ctx.Err() == nil {
		_ = c.SetWriteDeadline(time.Now().Add(200 * time.Millisecond))
		if _, err := c.Write(buf); err != nil {
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				continue
			}
			return err
		}
	}
	return nil
}
