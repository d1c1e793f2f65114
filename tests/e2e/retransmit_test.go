package e2e

import (
	"context"
	"errors"
	"net"
	"os"
	"os/exec"
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

// A familiar path starts losing packets: bulk transfers to a receiver behind
// a veth link lose 0.2% of their packets on arrival (nftables in the
// receiver's namespace) from before the detector first judges the host, so
// the remote learns its own rate and ratio; that healthy phase raises
// nothing for it. Then 5% more are dropped on arrival: the ratio jumps
// while throughput falls, and retransmit_spike fires for the remote on the
// ratio over its learned baseline, with both in the annotations. The kernel
// (ss, this test's own connections) gives the ratio of each phase.
func TestRetransmitSpikeOnRatio(t *testing.T) {
	p := newPipeline(t)
	ctx, cancel := context.WithTimeout(context.Background(), 120*time.Second)
	defer cancel()
	link := netfault.NewLink(t)
	port := discardServer(t, link)
	remote := link.PeerAddr
	netfault.DropPerMille(t, link.NS, port, 2) // the healthy path's small steady loss
	al := p.watchAlerts()

	const streams = 4
	sendCtx, stopSend := context.WithCancel(ctx)
	defer stopSend()
	sent := make(chan error, streams)
	sendFrom := time.Now()
	for range streams {
		c, err := net.Dial("tcp4", net.JoinHostPort(remote, strconv.Itoa(port)))
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		go func() { sent <- sendUntil(sendCtx, c) }()
	}
	_, det, _ := p.startAll(ctx)

	// Healthy: the host's and the remote's baselines (baseline_windows 2
	// of 2 s) are learned, then it goes on; 30 evaluations every 500 ms
	// are 15 s.
	evaluations := regexp.MustCompile(`detector=retransmit_spike .*evaluations=(\d+)`)
	det.waitLine(ctx, "retransmit_spike judged the healthy phase", func(line string) bool {
		m := evaluations.FindStringSubmatch(line)
		if m == nil {
			return false
		}
		n, err := strconv.Atoi(m[1])
		return err == nil && n >= 30
	})
	healthy := connTotals(t, remote, port)
	lossFrom := time.Now()
	netfault.DropShare(t, link.NS, port, 5) // the path starts losing 5% more

	a := al.wait(ctx, "retransmit_spike for "+remote, func(a alert.Alert) bool {
		return a.Detector == "retransmit_spike" && a.Status == alert.Firing && a.Labels["remote"] == remote
	})
	lossy := connTotals(t, remote, port)
	stopSend()
	for range streams {
		if err := <-sent; err != nil {
			t.Errorf("bulk transfer: %v", err)
		}
	}
	healthyRatio := float64(healthy.retrans) / float64(healthy.segsOut)
	lossRatio := float64(lossy.retrans-healthy.retrans) / float64(lossy.segsOut-healthy.segsOut)
	t.Logf("kernel (ss): healthy %d of %d segments retransmitted (%.3f%%); loss phase %d of %d (%.2f%%), throughput %.1f× lower",
		healthy.retrans, healthy.segsOut, 100*healthyRatio, lossy.retrans-healthy.retrans, lossy.segsOut-healthy.segsOut, 100*lossRatio,
		(float64(healthy.segsOut)/healthy.at.Sub(sendFrom).Seconds())/(float64(lossy.segsOut-healthy.segsOut)/lossy.at.Sub(healthy.at).Seconds()))
	t.Logf("alert after %s: %s (annotations %v, value %g, threshold %g)", time.Since(lossFrom).Round(time.Millisecond), a.Summary(), a.Annotations, a.Value, a.Threshold)

	// The healthy phase had a small steady ratio, and raised nothing.
	if healthy.retrans == 0 || healthyRatio > 0.005 {
		t.Fatalf("healthy phase: %d of %d segments retransmitted: want a small steady loss (0.2%%)", healthy.retrans, healthy.segsOut)
	}
	for _, x := range al.seen() {
		if x.Detector == "retransmit_spike" && x.Labels["remote"] == remote && x.StartsAt.Before(lossFrom) {
			t.Errorf("healthy phase raised %s at %s: %s", x.Status, x.StartsAt, x.Summary())
		}
	}
	// It fired on the ratio over the remote's own learned baseline: a
	// familiar path (its rate baseline learned, not assumed 0).
	ratio, err1 := strconv.ParseFloat(a.Annotations["ratio"], 64)
	base, err2 := strconv.ParseFloat(a.Annotations["ratio_baseline"], 64)
	perS, err3 := strconv.ParseFloat(a.Annotations["baseline_per_s"], 64)
	if err := errors.Join(err1, err2, err3); err != nil {
		t.Fatalf("annotations %v: %v", a.Annotations, err)
	}
	if !strings.Contains(a.Annotations["unusual"], "ratio") || perS <= 0 {
		t.Errorf("annotations %v: want unusual by ratio on a remote with a learned rate baseline", a.Annotations)
	}
	if base <= 0 || base > 0.01 || base > 5*healthyRatio+0.001 {
		t.Errorf("ratio baseline %g: want the healthy phase's small ratio (kernel: %.4f)", base, healthyRatio)
	}
	if ratio < 0.02 || ratio < lossRatio/2.5 || ratio > 2.5*lossRatio || ratio < 3*base {
		t.Errorf("ratio %g: want about the loss phase's (kernel: %.4f), over 3 × the baseline %g", ratio, lossRatio, base)
	}
	if len(a.Labels) != 4 {
		t.Errorf("labels %v: want alertname, severity, host and remote only", a.Labels)
	}
}

// totals are the kernel's counts for this test's connections.
type totals struct {
	retrans, segsOut uint64
	at               time.Time
}

// connTotals sums segs_out and the total retransmitted segments (ss's
// "retrans:cur/total") of the connections to remote:port, per ss -ti.
func connTotals(t *testing.T, remote string, port int) totals {
	t.Helper()
	out, err := exec.Command("ss", "-tinH", "state", "established", "dst", remote, "dport", "= :"+strconv.Itoa(port)).Output()
	if err != nil {
		t.Fatalf("ss: %v", err)
	}
	tot := totals{at: time.Now()}
	segs := regexp.MustCompile(`\bsegs_out:(\d+)`)
	re := regexp.MustCompile(`\bretrans:\d+/(\d+)`)
	for _, m := range segs.FindAllStringSubmatch(string(out), -1) {
		n, _ := strconv.ParseUint(m[1], 10, 64)
		tot.segsOut += n
	}
	for _, m := range re.FindAllStringSubmatch(string(out), -1) {
		n, _ := strconv.ParseUint(m[1], 10, 64)
		tot.retrans += n
	}
	if tot.segsOut == 0 {
		t.Fatalf("ss shows no connection to %s:%d:\n%s", remote, port, out)
	}
	return tot
}
