package dropspike

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

// dropped is a kernel count of reason for the 10 s interval ending at d,
// of packets arriving for local port lport from remote peer.
func dropped(d time.Duration, reason string, lport uint32, peer int, n uint64) *eventpb.DropCount {
	return &eventpb.DropCount{
		Source: eventpb.DropSource_DROP_SOURCE_KFREE_SKB, Reason: reason, Family: eventpb.Family_FAMILY_IPV4,
		Saddr: dtest.LocalIP, Sport: lport, Daddr: dtest.RemoteIP(peer), Dport: 40000 + uint32(peer), Ingress: true,
		Pid: 900, Comm: "api", Count: n,
		StartUnixNano: dtest.Ns(dtest.At(d - 10*time.Second)), EndUnixNano: dtest.Ns(dtest.At(d)),
	}
}

// every adds fn's counts for each 10 s interval ending in (from, to].
func every(s *dtest.Stream, from, to time.Duration, fn func(d time.Duration) []*eventpb.DropCount) {
	for d := from + 10*time.Second; d <= to; d += 10 * time.Second {
		s.Drop(fn(d)...)
	}
}

func summary(res []dtest.Result) string {
	var out []string
	for _, r := range res {
		s := r.Now.Sub(dtest.T0).String() + ":"
		for _, c := range r.Conditions {
			s += " " + c.Labels["reason"] + "/" + c.Labels["direction"] + "/" + string(c.Severity) + "/" + c.Details["per_second"]
		}
		out = append(out, s)
	}
	return strings.Join(out, "\n")
}

// A host that drops 2 NETFILTER_DROP packets a second learns that as
// normal. A rule that starts dropping a client's traffic (50/s for a
// minute) fires and resolves when it stops; NO_SOCKET, never seen in the
// learned hours, fires from its first minute at 10/s. The top endpoint is
// named.
func TestSpikeAfterBaseline(t *testing.T) {
	var s dtest.Stream
	every(&s, 0, 12*time.Minute, func(d time.Duration) []*eventpb.DropCount {
		return []*eventpb.DropCount{dropped(d, "NETFILTER_DROP", 22, int(d/(10*time.Second))%7, 20)}
	})
	every(&s, 7*time.Minute, 8*time.Minute, func(d time.Duration) []*eventpb.DropCount {
		return []*eventpb.DropCount{dropped(d, "NETFILTER_DROP", 5432, 3, 480)}
	})
	every(&s, 9*time.Minute, 10*time.Minute, func(d time.Duration) []*eventpb.DropCount {
		return []*eventpb.DropCount{dropped(d, "NO_SOCKET", 9000, 5, 100)}
	})
	res := dtest.Run(newInstance(t, nil), s.Steps(dtest.T0, dtest.At(12*time.Minute), 10*time.Second, 100*time.Millisecond, kinds), true)
	dtest.Golden(t, "spike", res)
	got := summary(res)
	for _, want := range []string{"7m30s: NETFILTER_DROP/in/warning/", "NO_SOCKET/in/warning/10.00"} {
		if !strings.Contains(got, want) {
			t.Errorf("changes:\n%s\nwant a step with %q", got, want)
		}
	}
	if last := res[len(res)-1]; len(last.Conditions) != 0 || last.Now.After(dtest.At(11*time.Minute)) {
		t.Errorf("not resolved by 11m:\n%s", got)
	}
	for _, r := range res {
		if r.Now.Before(dtest.At(7*time.Minute)) && len(r.Conditions) > 0 {
			t.Errorf("fired on the learned rate at %s", r.Now.Sub(dtest.T0))
		}
		for _, c := range r.Conditions {
			if c.Labels["reason"] == "NETFILTER_DROP" && c.Details["top_local_port"] != "5432" {
				t.Errorf("top endpoint %v, want local port 5432", c.Details)
			}
		}
	}
}

// A host that always drops a lot of one reason (a scanner hitting closed
// ports, 40/s) is quiet: that is its normal. A burst while it is still
// learning does not fire either.
func TestSteadyHighRateQuiet(t *testing.T) {
	var s dtest.Stream
	every(&s, 0, 15*time.Minute, func(d time.Duration) []*eventpb.DropCount {
		var out []*eventpb.DropCount
		for p := range 8 {
			out = append(out, dropped(d, "NO_SOCKET", 1000+uint32(p), p, 50))
		}
		return out
	})
	every(&s, time.Minute, 2*time.Minute, func(d time.Duration) []*eventpb.DropCount {
		return []*eventpb.DropCount{dropped(d, "TCP_CSUM", 443, 1, 5000)}
	})
	res := dtest.Run(newInstance(t, nil), s.Steps(dtest.T0, dtest.At(15*time.Minute), 10*time.Second, 100*time.Millisecond, kinds), true)
	dtest.Golden(t, "steady", res)
	if got := summary(res); got != "0s:" {
		t.Errorf("changes:\n%s\nwant none", got)
	}
}
