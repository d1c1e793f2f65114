package peernotclosing

import (
	"strings"
	"testing"
	"time"

	"github.com/netpulse/netpulse/lib/eventpb"
	"github.com/netpulse/netpulse/lib/wire"
	"github.com/netpulse/netpulse/services/detector/detectors/internal/dtest"
)

var kinds = []string{wire.KindSnapshot}

func newInstance(t testing.TB, edit func(*Config)) *Instance {
	t.Helper()
	return dtest.New[Config, *Instance](t, Name, edit)
}

// group is an endpoint group of uploader (pid 900) towards remote.
type group struct {
	remote             string
	localPort          uint32
	finWait2, timeWait uint32
	oldest             time.Duration
}

func snapshot(d time.Duration, gs ...group) *eventpb.Snapshot {
	s := &eventpb.Snapshot{
		TimeUnixNano: dtest.Ns(dtest.At(d)), Seq: uint64(d/(15*time.Second)) + 1, Seeded: true, IntervalMs: 15000,
		EndpointsRead: true, PortRangeLow: 32768, PortRangeHigh: 60999, FinTimeoutS: 60,
	}
	for _, g := range gs {
		ev := dtest.Sock{Local: "10.0.0.10:1", Peer: g.remote}.Event(dtest.At(d), eventpb.EventType_EVENT_TYPE_STATE_CHANGE)
		if g.localPort != 0 {
			ev.Dport = 0
		}
		s.Endpoints = append(s.Endpoints, &eventpb.EndpointGroup{
			Family: ev.Family, Saddr: ev.Saddr, Daddr: ev.Daddr, Dport: ev.Dport, LocalPort: g.localPort,
			Pid: 900, Comm: "uploader", FinWait2: g.finWait2, TimeWait: g.timeWait,
			FinWait2OldestUs: uint64(g.oldest / time.Microsecond),
		})
		s.FinWait2Total += g.finWait2
	}
	return s
}

func summary(res []dtest.Result) string {
	var out []string
	for _, r := range res {
		s := r.Now.Sub(dtest.T0).String() + ":"
		for _, c := range r.Conditions {
			s += " " + c.Labels["remote"] + "/" + c.Labels["local_port"] + "/" + string(c.Severity) + "/" + c.Details["count"]
		}
		out = append(out, s)
	}
	return strings.Join(out, "\n")
}

// A peer that never closes: FIN_WAIT2 sockets towards it pile up; it fires
// once 10 are there and the oldest waited 10 s, follows the count, and
// resolves when the peer closes (they move to TIME_WAIT). A busy path
// whose FIN_WAIT2 sockets are all fresh stays quiet.
func TestPileUpThenPeerCloses(t *testing.T) {
	var s dtest.Stream
	busy := func() group {
		return group{remote: "10.6.0.1:443", finWait2: 30, oldest: 200 * time.Millisecond}
	}
	s.Snapshot(snapshot(0, busy()))
	s.Snapshot(snapshot(15*time.Second, busy(), group{remote: "10.5.0.2:8443", finWait2: 5, oldest: 3 * time.Second}))
	s.Snapshot(snapshot(30*time.Second, busy(), group{remote: "10.5.0.2:8443", finWait2: 20, oldest: 18 * time.Second}))
	s.Snapshot(snapshot(45*time.Second, busy(), group{remote: "10.5.0.2:8443", finWait2: 40, oldest: 33 * time.Second}))
	s.Snapshot(snapshot(60*time.Second, busy(), group{remote: "10.5.0.2:8443", timeWait: 40}))
	res := dtest.Run(newInstance(t, nil), s.Steps(dtest.T0, dtest.At(90*time.Second), 5*time.Second, 100*time.Millisecond, kinds), true)
	dtest.Golden(t, "pileup", res)
	want := "0s:\n30s: 10.5.0.2:8443/0/warning/20\n45s: 10.5.0.2:8443/0/warning/40\n1m0s:"
	if got := summary(res); got != want {
		t.Errorf("changes:\n%s\nwant:\n%s", got, want)
	}
	c := res[1].Conditions[0]
	if c.Details["pid"] != "900" || c.Details["comm"] != "uploader" || c.Details["oldest_age_seconds"] != "18" || c.Details["side"] != "client" {
		t.Errorf("details %v", c.Details)
	}
}

// Connections this host accepted and closed first: the remote is the
// client's address, the local port our listener's. The timeout reaps them
// (the count falls to 0 without TIME_WAIT): resolved. 600 are critical.
func TestServerSideReaped(t *testing.T) {
	var s dtest.Stream
	s.Snapshot(snapshot(0, group{remote: "10.9.0.7:1", localPort: 8080, finWait2: 600, oldest: 50 * time.Second}))
	s.Snapshot(snapshot(15*time.Second, group{remote: "10.9.0.7:1", localPort: 8080, finWait2: 50, oldest: 59 * time.Second}))
	s.Snapshot(snapshot(30 * time.Second))
	res := dtest.Run(newInstance(t, nil), s.Steps(dtest.T0, dtest.At(45*time.Second), 5*time.Second, 100*time.Millisecond, kinds), true)
	dtest.Golden(t, "server_reaped", res)
	want := "0s: 10.9.0.7/8080/critical/600\n15s: 10.9.0.7/8080/warning/50\n30s:"
	if got := summary(res); got != want {
		t.Errorf("changes:\n%s\nwant:\n%s", got, want)
	}
}

// A snapshot that could not read the sockets keeps the view; a probe that
// stops publishing resolves three intervals after its last snapshot.
func TestUnreadAndStale(t *testing.T) {
	var s dtest.Stream
	s.Snapshot(snapshot(0, group{remote: "10.5.0.2:8443", finWait2: 20, oldest: 20 * time.Second}))
	unread := snapshot(15 * time.Second)
	unread.EndpointsRead = false
	s.Snapshot(unread)
	d := newInstance(t, nil)
	res := dtest.Run(d, s.Steps(dtest.T0, dtest.At(time.Minute), 5*time.Second, 100*time.Millisecond, kinds), true)
	if got, want := summary(res), "0s: 10.5.0.2:8443/0/warning/20\n50s:"; got != want {
		t.Errorf("changes:\n%s\nwant:\n%s", got, want)
	}
	if d.Stats().Unread != 1 {
		t.Errorf("stats %+v, want one unread snapshot", d.Stats())
	}
}

// A busy healthy host raises nothing.
func TestHealthyQuiet(t *testing.T) {
	tr := dtest.Healthy(5, 5*time.Minute)
	tr.ClientConns = 1000
	res := dtest.Run(newInstance(t, nil), tr.Stream().Steps(dtest.T0, dtest.At(5*time.Minute), time.Second, 100*time.Millisecond, kinds), true)
	for _, r := range res {
		if len(r.Conditions) != 0 {
			t.Fatalf("healthy traffic fired at %s: %+v", r.Now, r.Conditions)
		}
	}
}

func TestConfigErrorsNameTheKey(t *testing.T) {
	for key, edit := range map[string]func(*Config){
		"min_sockets":      func(c *Config) { c.MinSockets = 0 },
		"min_age":          func(c *Config) { c.MinAge = -time.Second },
		"critical_sockets": func(c *Config) { c.CriticalSockets = -1 },
		"resolve_sockets":  func(c *Config) { c.ResolveSockets = 11 },
	} {
		c := DefaultConfig()
		edit(c)
		if err := c.Validate(); err == nil || !strings.HasPrefix(err.Error(), key+":") {
			t.Errorf("%s: error %v, want one naming the key", key, err)
		}
	}
	if err := DefaultConfig().Validate(); err != nil {
		t.Errorf("defaults: %v", err)
	}
}
