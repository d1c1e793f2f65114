// Package listenoverflow is the listen_overflow detector: a listener that
// refuses connections because its accept queue is full (the process does
// not accept fast enough, or its listen backlog is too small). Clients see
// slow handshakes (their SYN or final ACK is dropped and retransmitted
// after a second or more) or failed connects.
//
// The counts are the listener's own drop counter as the probe reads it
// every drops.interval (kind drop, source listener: sk_drops, what
// TcpExtListenOverflows counts host-wide), with the accept queue and its
// limit, per listening port and owning process.
package listenoverflow

import (
	"fmt"
	"net/netip"
	"sort"
	"strconv"
	"time"

	"github.com/netpulse/netpulse/lib/eventpb"
	"github.com/netpulse/netpulse/lib/wire"
	"github.com/netpulse/netpulse/services/detector/detect"
	"github.com/netpulse/netpulse/services/detector/detectors/internal/chsql"
	"github.com/netpulse/netpulse/services/detector/detectors/internal/counters"
	"github.com/netpulse/netpulse/services/detector/detectors/internal/dropwin"
	"github.com/netpulse/netpulse/services/detector/detectors/internal/endpoint"
)

// Name is the detector's name in config, subjects and alerts.
const Name = "listen_overflow"

func init() {
	detect.Register(detect.Plugin{
		Name:        Name,
		Description: "a listener refuses connections: its accept queue is full",
		Kinds:       []string{wire.KindDrop},
		Config:      func() any { return DefaultConfig() },
		New:         detect.Typed(New),
	})
}

// listener is one listening port's recent refusals (IPv4 and IPv6
// listeners on one port together) and what its last count said of it.
type listener struct {
	drops          dropwin.Window
	addr           netip.Addr
	pid            uint32
	comm           string
	queue, backlog uint32
	active         bool
	lastNs         int64 // end of its last count
}

// Instance is listen_overflow for one host (detect.Instance).
type Instance struct {
	cfg       Config
	host      string
	listeners map[uint32]*listener // by port
	stats     Stats
}

// Stats are the detector's counters.
type Stats struct {
	// Counts are the listener drop counts taken; Ignored the other drop
	// counts (kernel drops: drop_spike's).
	Counts, Ignored uint64
	// NoPort: listener counts without a port, left out.
	NoPort uint64
}

// New makes the instance for host from a validated config.
func New(cfg Config, host string) *Instance {
	return &Instance{cfg: cfg, host: host, listeners: map[uint32]*listener{}}
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
		if dc.Source != eventpb.DropSource_DROP_SOURCE_LISTENER {
			d.stats.Ignored++
			continue
		}
		if dc.Sport == 0 {
			d.stats.NoPort++
			continue
		}
		d.stats.Counts++
		l := d.listeners[dc.Sport]
		if l == nil {
			l = &listener{}
			d.listeners[dc.Sport] = l
		}
		end := int64(dc.EndUnixNano)
		l.drops.Add(end, dc.Count)
		if end >= l.lastNs {
			l.lastNs = end
			l.addr, _ = endpoint.Addr(dc.Saddr)
			l.queue, l.backlog = dc.AcceptQueue, dc.Backlog
			if dc.Pid != 0 || l.pid == 0 {
				l.pid, l.comm = dc.Pid, dc.Comm
			}
		}
	}
}

// Evaluate returns the listeners that refused connections within the
// window before now.
func (d *Instance) Evaluate(now time.Time) []detect.Condition {
	n, span := now.UnixNano(), int64(d.cfg.Window)
	var ports []uint32
	for port, l := range d.listeners {
		drops := l.drops.Sum(n, span)
		l.active = drops >= uint64(d.cfg.MinDrops) || (l.active && drops > 0)
		switch {
		case l.active:
			ports = append(ports, port)
		case l.drops.Empty():
			delete(d.listeners, port) // quiet for a window: forget it
		}
	}
	sort.Slice(ports, func(i, j int) bool { return ports[i] < ports[j] })
	var out []detect.Condition
	for _, port := range ports {
		l := d.listeners[port]
		out = append(out, d.condition(port, l, l.drops.Sum(n, span), now))
	}
	return out
}

func (d *Instance) condition(port uint32, l *listener, drops uint64, now time.Time) detect.Condition {
	perSecond := float64(drops) / d.cfg.Window.Seconds()
	sev := detect.Warning
	if d.cfg.CriticalPerSecond > 0 && perSecond >= d.cfg.CriticalPerSecond {
		sev = detect.Critical
	}
	who := "its process"
	if l.pid != 0 {
		who = fmt.Sprintf("%s (pid %d)", l.comm, l.pid)
	}
	portS := strconv.FormatUint(uint64(port), 10)
	return detect.Condition{
		Labels: map[string]string{"local_port": portS},
		Details: map[string]string{
			"drops":        strconv.FormatUint(drops, 10),
			"per_second":   strconv.FormatFloat(perSecond, 'f', 2, 64),
			"accept_queue": strconv.FormatUint(uint64(l.queue), 10),
			"backlog":      strconv.FormatUint(uint64(l.backlog), 10),
			"pid":          strconv.FormatUint(uint64(l.pid), 10),
			"comm":         l.comm,
			"local_addr":   endpoint.String(l.addr),
		},
		Severity:  sev,
		Value:     float64(drops),
		Threshold: float64(d.cfg.MinDrops),
		Summary: fmt.Sprintf("listener on port %d of %s refused %d connections in %s: its accept queue is full (%d of %d)",
			port, who, drops, d.cfg.Window, l.queue, l.backlog),
		Description: "The kernel dropped SYNs or handshake completions for this listener because its accept queue " +
			"(completed connections waiting for accept()) was full: clients retransmit after a second or more, so their " +
			"handshakes are slow, or they give up. The process does not call accept() fast enough (blocked, overloaded, " +
			"too few acceptor threads), or the queue is too small: the backlog passed to listen(), capped by " +
			"net.core.somaxconn. Check with: ss -ltn 'sport = :" + portS + "' (Recv-Q: queued, Send-Q: the limit) and " +
			"nstat -az TcpExtListenOverflows.",
		Evidence: map[string]any{
			"drops":        drops,
			"per_second":   perSecond,
			"accept_queue": l.queue,
			"backlog":      l.backlog,
			"pid":          l.pid,
			"comm":         l.comm,
		},
		SQL: fmt.Sprintf("SELECT time, saddr, sport, count, accept_queue, backlog, pid, comm\nFROM %s\nWHERE host = %s AND source = 'listener' AND sport = %d\n  AND %s\nORDER BY time DESC\nLIMIT 100",
			chsql.Table("tcp_drops"), chsql.Str(d.host), port, chsql.Window(now.Add(-10*time.Minute), now)),
	}
}
