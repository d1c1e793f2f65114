// Package peernotclosing is the peer_not_closing detector: sockets this
// host closed that pile up in FIN_WAIT2 towards one remote, because the
// peer acknowledged our FIN but never sends its own. It is conn_leak seen
// from the other end: the peer's sockets sit in CLOSE_WAIT.
//
// The counts and ages come from the probe's snapshots (EndpointGroup:
// FIN_WAIT2 sockets per local address and remote endpoint, from sock_diag,
// with the age of the oldest); the latest snapshot is the view.
package peernotclosing

import (
	"fmt"
	"net/netip"
	"sort"
	"strconv"
	"time"

	"github.com/netpulse/netpulse/lib/wire"
	"github.com/netpulse/netpulse/services/detector/detect"
	"github.com/netpulse/netpulse/services/detector/detectors/internal/chsql"
	"github.com/netpulse/netpulse/services/detector/detectors/internal/counters"
	"github.com/netpulse/netpulse/services/detector/detectors/internal/endpoint"
)

// Name is the detector's name in config, subjects and alerts.
const Name = "peer_not_closing"

func init() {
	detect.Register(detect.Plugin{
		Name:        Name,
		Description: "sockets this host closed stuck in FIN_WAIT2 towards one remote: the peer does not close",
		Kinds:       []string{wire.KindSnapshot},
		Config:      func() any { return DefaultConfig() },
		New:         detect.Typed(New),
	})
}

// key is the remote: its address and port for connections this host
// opened (localPort 0); its address and our listener's port for
// connections it accepted (port 0: the remote's ports vary).
type key struct {
	addr      netip.Addr
	port      uint32
	localPort uint32
}

func (k key) remote() string {
	if k.localPort != 0 {
		return endpoint.String(k.addr)
	}
	return endpoint.HostPort(k.addr, k.port)
}

func (k key) less(o key) bool {
	if k.localPort != o.localPort {
		return k.localPort < o.localPort
	}
	if c := k.addr.Compare(o.addr); c != 0 {
		return c < 0
	}
	return k.port < o.port
}

// wait is a remote's FIN_WAIT2 sockets in the latest snapshot, over every
// local address.
type wait struct {
	finWait2, timeWait uint32
	oldestUs           uint64
	pid                uint32 // of the largest group
	comm               string
	largest            uint32
	local              netip.Addr
}

// Instance is peer_not_closing for one host (detect.Instance).
type Instance struct {
	cfg        Config
	host       string
	snapAt     int64
	interval   int64
	finTimeout uint32
	total      uint32
	waits      map[key]*wait
	spare      []*wait
	active     map[key]bool
	stats      Stats
}

// Stats are the detector's counters.
type Stats struct {
	Snapshots uint64
	// StaleSnapshots were not newer than one already applied.
	StaleSnapshots uint64
	// Unread snapshots could not read the sockets (endpoints_read false):
	// the view they give is kept as it was.
	Unread uint64
}

// New makes the instance for host from a validated config.
func New(cfg Config, host string) *Instance {
	return &Instance{cfg: cfg, host: host, waits: map[key]*wait{}, active: map[key]bool{}}
}

// Stats returns the counters.
func (d *Instance) Stats() Stats { return d.stats }

// Counters are the counters by name (detect.Counting).
func (d *Instance) Counters() map[string]uint64 { return counters.Map(d.Stats()) }

var _ detect.Counting = (*Instance)(nil)

// Observe takes snapshots.
func (d *Instance) Observe(in detect.Input) {
	if in.Batch == nil || in.Batch.Snapshot == nil {
		return
	}
	s := in.Batch.Snapshot
	t := int64(s.TimeUnixNano)
	if t <= d.snapAt {
		d.stats.StaleSnapshots++
		return
	}
	d.stats.Snapshots++
	if !s.EndpointsRead {
		// No FIN_WAIT2 counts in it, which is not "none": keep the last
		// view, which goes stale if the reads keep failing.
		d.stats.Unread++
		return
	}
	d.snapAt, d.interval = t, int64(s.IntervalMs)*int64(time.Millisecond)
	d.finTimeout, d.total = s.FinTimeoutS, s.FinWait2Total
	for k, w := range d.waits {
		d.spare = append(d.spare, w)
		delete(d.waits, k)
	}
	for _, g := range s.Endpoints {
		if g.FinWait2 == 0 {
			continue
		}
		a, ok := endpoint.Addr(g.Daddr)
		if !ok {
			continue
		}
		k := key{addr: a, port: g.Dport, localPort: g.LocalPort}
		if k.localPort != 0 {
			k.port = 0
		}
		w := d.waits[k]
		if w == nil {
			if n := len(d.spare); n > 0 {
				w, d.spare = d.spare[n-1], d.spare[:n-1]
				*w = wait{}
			} else {
				w = new(wait)
			}
			d.waits[k] = w
		}
		w.finWait2 += g.FinWait2
		w.timeWait += g.TimeWait
		w.oldestUs = max(w.oldestUs, g.FinWait2OldestUs)
		if g.FinWait2 > w.largest {
			w.largest, w.pid, w.comm = g.FinWait2, g.Pid, g.Comm
			w.local, _ = endpoint.Addr(g.Saddr)
		}
	}
}

// fresh says whether the latest snapshot still describes the host at n.
func (d *Instance) fresh(n int64) bool {
	return d.snapAt != 0 && n-d.snapAt <= 3*max(d.interval, int64(15*time.Second))
}

// Evaluate returns the remotes that do not close at now.
func (d *Instance) Evaluate(now time.Time) []detect.Condition {
	n := now.UnixNano()
	fresh := d.fresh(n)
	var cands []key
	if fresh {
		for k := range d.waits {
			cands = append(cands, k)
		}
	}
	for k := range d.active {
		if _, listed := d.waits[k]; !listed || !fresh {
			cands = append(cands, k)
		}
	}
	sort.Slice(cands, func(i, j int) bool { return cands[i].less(cands[j]) })
	var out []detect.Condition
	for _, k := range cands {
		var w *wait
		if fresh {
			w = d.waits[k]
		}
		fires := w != nil && w.finWait2 >= uint32(d.cfg.MinSockets) && w.oldestUs >= uint64(d.cfg.MinAge/time.Microsecond)
		holds := d.active[k] && w != nil && w.finWait2 >= uint32(d.cfg.ResolveSockets)
		if !fires && !holds {
			delete(d.active, k)
			continue
		}
		d.active[k] = true
		out = append(out, d.condition(k, w, now))
	}
	return out
}

func (d *Instance) condition(k key, w *wait, now time.Time) detect.Condition {
	sev := detect.Warning
	if d.cfg.CriticalSockets > 0 && w.finWait2 >= uint32(d.cfg.CriticalSockets) {
		sev = detect.Critical
	}
	age := time.Duration(w.oldestUs) * time.Microsecond
	who := w.comm
	if w.pid != 0 {
		who = fmt.Sprintf("%s (pid %d)", w.comm, w.pid)
	}
	if who == "" {
		who = "this host"
	}
	side := endpoint.SideName(k.localPort != 0)
	timeout := "net.ipv4.tcp_fin_timeout"
	if d.finTimeout != 0 {
		timeout += fmt.Sprintf(" (%d s here)", d.finTimeout)
	}
	return detect.Condition{
		Labels: map[string]string{
			"remote":     k.remote(),
			"local_port": strconv.FormatUint(uint64(k.localPort), 10),
		},
		Details: map[string]string{
			"count":              strconv.FormatUint(uint64(w.finWait2), 10),
			"oldest_age_seconds": strconv.FormatInt(int64(age/time.Second), 10),
			"time_wait":          strconv.FormatUint(uint64(w.timeWait), 10),
			"pid":                strconv.FormatUint(uint64(w.pid), 10),
			"comm":               w.comm,
			"side":               side,
			"local_addr":         endpoint.String(w.local),
			"fin_timeout_s":      strconv.FormatUint(uint64(d.finTimeout), 10),
		},
		Severity:  sev,
		Value:     float64(w.finWait2),
		Threshold: float64(d.cfg.MinSockets),
		Summary: fmt.Sprintf("%d sockets %s closed wait in FIN_WAIT2 for %s to close its end, the oldest for %s",
			w.finWait2, who, k.remote(), age.Truncate(time.Second)),
		Description: "This host sent its FIN and the peer acknowledged it but never closed its own end: the peer's " +
			"process is not closing these connections (on the peer they sit in CLOSE_WAIT, a socket leak that conn_leak " +
			"names on that host), or something on the path lost its FIN. Sockets whose process closed them are reaped after " +
			timeout + "; a process that only shut down writing (shutdown(SHUT_WR)) waits for ever. Check with: " +
			"ss -tnop state fin-wait-2 dst " + endpoint.String(k.addr),
		Evidence: map[string]any{
			"fin_wait2":           w.finWait2,
			"oldest_age_seconds":  age.Seconds(),
			"time_wait":           w.timeWait,
			"host_fin_wait2":      d.total,
			"fin_timeout_seconds": d.finTimeout,
			"pid":                 w.pid,
			"comm":                w.comm,
		},
		SQL: d.sql(k, now),
	}
}

func (d *Instance) sql(k key, now time.Time) string {
	where := fmt.Sprintf("daddr = %s AND dport = %d AND local_port = 0", chsql.Str(endpoint.String(k.addr)), k.port)
	if k.localPort != 0 {
		where = fmt.Sprintf("daddr = %s AND local_port = %d", chsql.Str(endpoint.String(k.addr)), k.localPort)
	}
	return fmt.Sprintf("SELECT time, saddr, fin_wait2, round(age_us / 1e6) AS oldest_s, time_wait, pid, comm\nFROM %s\nWHERE host = %s AND row_kind = 'endpoint' AND fin_wait2 > 0 AND %s\n  AND %s\nORDER BY time DESC\nLIMIT 100",
		chsql.Table("socket_snapshots"), chsql.Str(d.host), where, chsql.Window(now.Add(-10*time.Minute), now))
}
