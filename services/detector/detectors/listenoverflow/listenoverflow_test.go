package listenoverflow

import (
	"strings"
	"testing"
	"time"

	"github.com/netpulse/netpulse/lib/eventpb"
	"github.com/netpulse/netpulse/lib/wire"
	"github.com/netpulse/netpulse/services/detector/detectors/internal/dtest"
)

var kinds = []string{wire.KindDrop}

func newInstance(t testing.TB, edit func(*Config)) *Instance {
	t.Helper()
	return dtest.New[Config, *Instance](t, Name, edit)
}

// refused is a listener count of port for the 10 s interval ending at d.
func refused(d time.Duration, port uint32, n uint64) *eventpb.DropCount {
	return &eventpb.DropCount{
		Source: eventpb.DropSource_DROP_SOURCE_LISTENER, Reason: "LISTEN_OVERFLOW", Family: eventpb.Family_FAMILY_IPV4,
		Saddr: dtest.LocalIP, Sport: port, Ingress: true, Pid: 900, Comm: "api", Count: n,
		AcceptQueue: 129, Backlog: 128,
		StartUnixNano: dtest.Ns(dtest.At(d - 10*time.Second)), EndUnixNano: dtest.Ns(dtest.At(d)),
	}
}

// kernelDrop is a kfree_skb count: not a listener's.
func kernelDrop(d time.Duration, port uint32, n uint64) *eventpb.DropCount {
	dc := refused(d, port, n)
	dc.Source, dc.Reason, dc.AcceptQueue, dc.Backlog = eventpb.DropSource_DROP_SOURCE_KFREE_SKB, "TCP_LISTEN_OVERFLOW", 0, 0
	return dc
}

func summary(res []dtest.Result) string {
	var out []string
	for _, r := range res {
		s := r.Now.Sub(dtest.T0).String() + ":"
		for _, c := range r.Conditions {
			s += " " + c.Labels["local_port"] + "/" + string(c.Severity) + "/" + c.Details["drops"]
		}
		out = append(out, s)
	}
	return strings.Join(out, "\n")
}

// A listener whose accept queue overflows: it fires at the first count,
// follows the window's sum, turns critical at 10 refusals per second, and
// resolves once a whole minute passed without one. The kernel's own
// TCP_LISTEN_OVERFLOW drops on another port are drop_spike's: quiet here.
func TestOverflowThenRecovers(t *testing.T) {
	var s dtest.Stream
	s.Drop(refused(20*time.Second, 8080, 30))
	s.Drop(refused(30*time.Second, 8080, 300))
	s.Drop(refused(40*time.Second, 8080, 400))
	s.Drop(refused(50*time.Second, 8080, 5))
	for d := 10 * time.Second; d <= 3*time.Minute; d += 10 * time.Second {
		s.Drop(kernelDrop(d, 9090, 50))
	}
	res := dtest.Run(newInstance(t, nil), s.Steps(dtest.T0, dtest.At(3*time.Minute), 10*time.Second, 100*time.Millisecond, kinds), true)
	dtest.Golden(t, "overflow", res)
	want := "0s:\n20s: 8080/warning/30\n30s: 8080/warning/330\n40s: 8080/critical/730\n50s: 8080/critical/735\n" +
		"1m20s: 8080/critical/705\n1m30s: 8080/warning/405\n1m40s: 8080/warning/5\n1m50s:"
	if got := summary(res); got != want {
		t.Errorf("changes:\n%s\nwant:\n%s", got, want)
	}
	c := res[1].Conditions[0]
	if c.Details["pid"] != "900" || c.Details["comm"] != "api" || c.Details["backlog"] != "128" || c.Details["accept_queue"] != "129" {
		t.Errorf("alert does not name the listener: %v", c.Details)
	}
	if !strings.Contains(c.SQL, "tcp_drops") || !strings.Contains(c.SQL, "sport = 8080") {
		t.Errorf("SQL: %s", c.SQL)
	}
}

// Healthy listeners send no listener counts at all; kernel drops of any
// reason never fire this detector.
func TestKernelDropsOnly(t *testing.T) {
	var s dtest.Stream
	for d := 10 * time.Second; d <= 2*time.Minute; d += 10 * time.Second {
		s.Drop(kernelDrop(d, 8080, 5000))
	}
	d := newInstance(t, nil)
	for _, r := range dtest.Run(d, s.Steps(dtest.T0, dtest.At(2*time.Minute), 10*time.Second, 100*time.Millisecond, kinds), false) {
		if len(r.Conditions) > 0 {
			t.Fatalf("%s: fired on kernel drops: %v", r.Now.Sub(dtest.T0), r.Conditions[0].Summary)
		}
	}
	if d.Stats().Ignored != 12 {
		t.Errorf("ignored %d counts, want 12", d.Stats().Ignored)
	}
}
