// Package dropspike is the drop_spike detector: the kernel drops TCP
// packets of one reason, in one direction, far more often than it learned
// is normal for this host (a firewall rule that started dropping, a full
// backlog, checksum errors from a bad NIC, a socket that cannot keep up).
//
// The counts are the probe's kernel drop counts (kind drop, source
// kfree_skb: skb:kfree_skb counted in the kernel per reason and endpoints,
// published every drops.interval); the alert names the endpoint and
// process that dropped most.
package dropspike

import (
	"fmt"
	"net/netip"
	"sort"
	"strconv"
	"time"

	"github.com/netpulse/netpulse/lib/eventpb"
	"github.com/netpulse/netpulse/lib/wire"
	"github.com/netpulse/netpulse/services/detector/detect"
	"github.com/netpulse/netpulse/services/detector/detectors/internal/baseline"
	"github.com/netpulse/netpulse/services/detector/detectors/internal/chsql"
	"github.com/netpulse/netpulse/services/detector/detectors/internal/counters"
	"github.com/netpulse/netpulse/services/detector/detectors/internal/endpoint"
)

// Name is the detector's name in config, subjects and alerts.
const Name = "drop_spike"

func init() {
	detect.Register(detect.Plugin{
		Name:        Name,
		Description: "the kernel drops TCP packets of one reason far more often than its learned baseline",
		Kinds:       []string{wire.KindDrop},
		Config:      func() any { return DefaultConfig() },
		New:         detect.Typed(New),
	})
}

type key struct {
	reason  string
	ingress bool
}

func (k key) direction() string {
	if k.ingress {
		return "in"
	}
	return "out"
}

// entry is one count of the window.
type entry struct {
	end          int64
	count        uint64
	lport, rport uint32
	remote       netip.Addr
	pid          uint32
	comm         string
}

// reason is one key's window, baseline and state.
type reason struct {
	entries []entry // by end, oldest first from head
	head    int
	sum     uint64 // of entries[head:]
	base    baseline.EWMA
	active  bool
	limit   float64 // the limit it crossed, while active
}

// slide forgets the entries that ended at or before cut.
func (r *reason) slide(cut int64) {
	for r.head < len(r.entries) && r.entries[r.head].end <= cut {
		r.sum -= r.entries[r.head].count
		r.entries[r.head] = entry{}
		r.head++
	}
	if r.head > 0 && r.head >= len(r.entries)/2 {
		n := copy(r.entries, r.entries[r.head:])
		r.entries, r.head = r.entries[:n], 0
	}
}

// Instance is drop_spike for one host (detect.Instance).
type Instance struct {
	cfg     Config
	host    string
	reasons map[key]*reason
	cadence baseline.Cadence
	windows int // learning windows the host was watched for
	stats   Stats
}

// Stats are the detector's counters.
type Stats struct {
	// Counts are the kernel drop counts taken; Ignored the listeners'
	// (listen_overflow's).
	Counts, Ignored uint64
	// OverReasons: counts of (reason, direction) keys beyond max_reasons,
	// left out.
	OverReasons uint64
	// Late: counts that ended before the window already slid past them.
	Late uint64
	// Windows: learning windows the hosts were watched for (summed over
	// them); a reason first seen after baseline_windows of them starts
	// from a baseline of 0.
	Windows uint64
}

// New makes the instance for host from a validated config.
func New(cfg Config, host string) *Instance {
	return &Instance{cfg: cfg, host: host, reasons: map[key]*reason{}, cadence: baseline.NewCadence(int64(cfg.Window))}
}

// Stats returns the counters.
func (d *Instance) Stats() Stats { return d.stats }

// Counters are the counters by name (detect.Counting).
func (d *Instance) Counters() map[string]uint64 { return counters.Map(d.Stats()) }

var _ detect.Counting = (*Instance)(nil)

// Observe takes drop counts.
func (d *Instance) Observe(in detect.Input) {
	if in.Batch == nil {
		return
	}
	for _, dc := range in.Batch.Drops {
		if dc.Source != eventpb.DropSource_DROP_SOURCE_KFREE_SKB {
			d.stats.Ignored++
			continue
		}
		k := key{reason: dc.Reason, ingress: dc.Ingress}
		r := d.reasons[k]
		if r == nil {
			if len(d.reasons) >= d.cfg.MaxReasons {
				d.stats.OverReasons++
				continue
			}
			r = &reason{}
			if d.windows >= d.cfg.BaselineWindows {
				// Watched for long enough without it: its normal is none.
				r.base.Assume(0, d.cfg.BaselineWindows)
			}
			d.reasons[k] = r
		}
		d.stats.Counts++
		end := int64(dc.EndUnixNano)
		if n := len(r.entries); n > r.head && end < r.entries[n-1].end {
			d.stats.Late++ // kept: it still counts while in the window
		}
		remote, _ := endpoint.Addr(dc.Daddr)
		r.entries = append(r.entries, entry{end: end, count: dc.Count, lport: dc.Sport, rport: dc.Dport, remote: remote, pid: dc.Pid, comm: dc.Comm})
		r.sum += dc.Count
	}
}

// Evaluate returns the reasons whose drop rate is unusual at now.
func (d *Instance) Evaluate(now time.Time) []detect.Condition {
	n := now.UnixNano()
	cut := n - int64(d.cfg.Window)
	secs := d.cfg.Window.Seconds()
	learn := d.cadence.Due(n)
	if learn {
		d.windows++
		d.stats.Windows++
	}
	var firing []key
	for k, r := range d.reasons {
		r.slide(cut)
		rate := float64(r.sum) / secs
		if learn && !r.active {
			r.base.Add(rate, d.cfg.BaselineAlpha, d.cfg.BaselineWindows)
		}
		limit := max(d.cfg.MinRate, d.cfg.BaselineFactor*r.base.Value)
		ready := d.windows >= d.cfg.BaselineWindows && r.base.Ready(d.cfg.BaselineWindows)
		switch {
		case r.active && rate >= d.cfg.ResolveFraction*r.limit:
		case ready && rate >= limit:
			r.active, r.limit = true, limit
		default:
			r.active = false
		}
		if r.active {
			firing = append(firing, k)
		}
	}
	sort.Slice(firing, func(i, j int) bool {
		if firing[i].reason != firing[j].reason {
			return firing[i].reason < firing[j].reason
		}
		return !firing[i].ingress && firing[j].ingress
	})
	var out []detect.Condition
	for _, k := range firing {
		out = append(out, d.condition(k, d.reasons[k], now))
	}
	return out
}

// top is the endpoint that dropped most in the window.
type top struct {
	lport, rport uint32
	remote       netip.Addr
	pid          uint32
	comm         string
	count        uint64
}

func (r *reason) top() top {
	type ep struct {
		lport  uint32
		remote netip.Addr
	}
	sums := map[ep]uint64{}
	var best top
	for _, e := range r.entries[r.head:] {
		k := ep{e.lport, e.remote}
		sums[k] += e.count
		if s := sums[k]; s > best.count {
			best = top{lport: e.lport, rport: e.rport, remote: e.remote, pid: e.pid, comm: e.comm, count: s}
		}
	}
	return best
}

func (d *Instance) condition(k key, r *reason, now time.Time) detect.Condition {
	rate := float64(r.sum) / d.cfg.Window.Seconds()
	sev := detect.Warning
	if d.cfg.CriticalRate > 0 && rate >= d.cfg.CriticalRate {
		sev = detect.Critical
	}
	t := r.top()
	remote := "unknown (counted without endpoints)"
	if t.remote.IsValid() {
		remote = endpoint.HostPort(t.remote, t.rport)
	}
	who := ""
	if t.pid != 0 {
		who = fmt.Sprintf(", owned by %s (pid %d)", t.comm, t.pid)
	}
	share := 0.0
	if r.sum > 0 {
		share = float64(t.count) / float64(r.sum)
	}
	f := func(v float64) string { return strconv.FormatFloat(v, 'f', 2, 64) }
	return detect.Condition{
		Labels: map[string]string{"reason": k.reason, "direction": k.direction()},
		Details: map[string]string{
			"drops":          strconv.FormatUint(r.sum, 10),
			"per_second":     f(rate),
			"baseline":       f(r.base.Value),
			"top_local_port": strconv.FormatUint(uint64(t.lport), 10),
			"top_remote":     remote,
			"top_share":      f(share),
			"pid":            strconv.FormatUint(uint64(t.pid), 10),
			"comm":           t.comm,
		},
		Severity:  sev,
		Value:     rate,
		Threshold: r.limit,
		Summary: fmt.Sprintf("%s drops of TCP packets on their way %s: %.1f/s over %s (baseline %.2f/s); most on local port %d with %s%s",
			k.reason, k.direction(), rate, d.cfg.Window, r.base.Value, t.lport, remote, who),
		Description: "The kernel freed TCP packets as dropped, with this reason (enum skb_drop_reason of the running " +
			"kernel), far more often than this host normally does. NETFILTER_DROP: a firewall rule; NO_SOCKET: packets " +
			"for a port nothing listens on (a scan, or a peer that thinks a connection is still open); SOCKET_BACKLOG / " +
			"SOCKET_RCVBUFF / PROTO_MEM: a socket or the host cannot keep up; TCP_CSUM / IP_CSUM: corruption on the path or " +
			"a NIC; QDISC_* / NEIGH_*: the way out is congested or unresolved. Check with: " +
			"perf trace -e skb:kfree_skb, or nstat -az | grep -i drop; the SQL lists the endpoints.",
		Evidence: map[string]any{
			"drops":          r.sum,
			"per_second":     rate,
			"baseline":       r.base.Value,
			"limit":          r.limit,
			"top_local_port": t.lport,
			"top_remote":     remote,
			"top_drops":      t.count,
		},
		SQL: fmt.Sprintf("SELECT saddr, sport, daddr, dport, pid, comm, sum(count) AS drops\nFROM %s\nWHERE host = %s AND source = 'kfree_skb' AND reason = %s AND ingress = %d\n  AND %s\nGROUP BY saddr, sport, daddr, dport, pid, comm\nORDER BY drops DESC\nLIMIT 50",
			chsql.Table("tcp_drops"), chsql.Str(d.host), chsql.Str(k.reason), b2i(k.ingress), chsql.Window(now.Add(-10*time.Minute), now)),
	}
}

func b2i(b bool) int {
	if b {
		return 1
	}
	return 0
}
