// Package dtest drives detectors in tests: synthetic, timestamped event
// streams cut into the batches the framework would deliver, evaluation on a
// fake clock, golden files of the conditions, and a generator of healthy
// traffic that must raise nothing.
package dtest

import (
	"net/netip"
	"slices"
	"testing"
	"time"

	"github.com/netpulse/netpulse/lib/eventpb"
	"github.com/netpulse/netpulse/lib/wire"
	"github.com/netpulse/netpulse/services/detector/detect"
)

// T0 is where synthetic streams start.
var T0 = time.Date(2026, 3, 2, 10, 0, 0, 0, time.UTC)

// Host is the host name of synthetic streams.
const Host = "web-1"

// IP is an address in the probe's encoding (4 or 16 bytes).
func IP(s string) []byte {
	a := netip.MustParseAddr(s)
	if a.Is4() {
		b := a.As4()
		return b[:]
	}
	b := a.As16()
	return b[:]
}

// Ns is t in the probe's time encoding.
func Ns(t time.Time) uint64 { return uint64(t.UnixNano()) }

// At is T0 plus d.
func At(d time.Duration) time.Time { return T0.Add(d) }

type item struct {
	t    int64
	n    int // insertion order: stable among equal times
	kind string
	ev   *eventpb.Event
	conn *eventpb.Connection
	snap *eventpb.Snapshot
	drop *eventpb.DropCount
}

// Stream is a timeline of one host's events, connections and snapshots.
type Stream struct {
	items []item
	seq   uint64
}

func (s *Stream) add(it item) {
	it.n = len(s.items)
	s.items = append(s.items, it)
}

// Event adds e (its kind follows its type); Seq is filled in when zero.
func (s *Stream) Event(e *eventpb.Event) {
	if e.Seq == 0 {
		s.seq++
		e.Seq = s.seq
	}
	s.add(item{t: int64(e.TimeUnixNano), kind: wire.KindOf(e.Type), ev: e})
}

// Conn adds a finished connection.
func (s *Stream) Conn(c *eventpb.Connection) {
	if c.Seq == 0 {
		s.seq++
		c.Seq = s.seq
	}
	s.add(item{t: int64(c.TimeUnixNano), kind: wire.KindConn, conn: c})
}

// Snapshot adds a snapshot.
func (s *Stream) Snapshot(sn *eventpb.Snapshot) {
	s.add(item{t: int64(sn.TimeUnixNano), kind: wire.KindSnapshot, snap: sn})
}

// Drop adds drop counts, at the end of their interval.
func (s *Stream) Drop(ds ...*eventpb.DropCount) {
	for _, d := range ds {
		s.add(item{t: int64(d.EndUnixNano), kind: wire.KindDrop, drop: d})
	}
}

// Len is the number of events, connections and snapshots.
func (s *Stream) Len() int { return len(s.items) }

// Step is what the framework does between two evaluations: deliver the
// batches that arrived, then call Evaluate at Now.
type Step struct {
	Now    time.Time
	Inputs []detect.Input
}

// Steps sorts the stream by time and cuts it into one evaluation every
// `every` from `from` to `to` (inclusive). Each step gets the items with
// times in (previous now, now], one batch per kind and flush period (as the
// probe flushes), only of the given kinds (nil: all). Items before from go
// to the first step.
func (s *Stream) Steps(from, to time.Time, every, flush time.Duration, kinds []string) []Step {
	slices.SortStableFunc(s.items, func(a, b item) int {
		if a.t != b.t {
			if a.t < b.t {
				return -1
			}
			return 1
		}
		return a.n - b.n
	})
	var steps []Step
	i := 0
	for now := from; !now.After(to); now = now.Add(every) {
		st := Step{Now: now}
		lim := now.UnixNano()
		var open map[string]*eventpb.Batch
		var flushAt int64
		for ; i < len(s.items) && s.items[i].t <= lim; i++ {
			it := s.items[i]
			if kinds != nil && !slices.Contains(kinds, it.kind) {
				continue
			}
			if open == nil || it.t >= flushAt {
				open = map[string]*eventpb.Batch{}
				flushAt = it.t + int64(flush)
			}
			if it.snap != nil {
				st.Inputs = append(st.Inputs, input(it.kind, &eventpb.Batch{SchemaVersion: 1, Host: Host, Snapshot: it.snap}))
				continue
			}
			b := open[it.kind]
			if b == nil {
				b = &eventpb.Batch{SchemaVersion: 1, Host: Host}
				open[it.kind] = b
				st.Inputs = append(st.Inputs, input(it.kind, b))
			}
			switch {
			case it.ev != nil:
				b.Events = append(b.Events, it.ev)
			case it.drop != nil:
				b.Drops = append(b.Drops, it.drop)
			default:
				b.Connections = append(b.Connections, it.conn)
			}
		}
		steps = append(steps, st)
	}
	return steps
}

func input(kind string, b *eventpb.Batch) detect.Input {
	return detect.Input{Host: Host, Kind: kind, Batch: b}
}

// Result is what Evaluate returned at one step.
type Result struct {
	Step       int                `json:"step"`
	Now        time.Time          `json:"now"`
	Conditions []detect.Condition `json:"conditions"`
}

// Run feeds the steps to d and returns every evaluation's conditions.
// With onlyChanges, steps whose conditions equal the previous step's (by
// labels, value and details) are left out: golden files stay readable.
func Run(d detect.Instance, steps []Step, onlyChanges bool) []Result {
	var out []Result
	prev := "-"
	for i, st := range steps {
		for _, in := range st.Inputs {
			d.Observe(in)
		}
		conds := d.Evaluate(st.Now)
		if conds == nil {
			conds = []detect.Condition{} // [] in golden files, not null
		}
		if onlyChanges {
			sig := signature(conds)
			if sig == prev {
				continue
			}
			prev = sig
		}
		out = append(out, Result{Step: i, Now: st.Now, Conditions: conds})
	}
	return out
}

// Count is the number of events, connections and snapshots in the steps.
func Count(steps []Step) int {
	n := 0
	for _, st := range steps {
		for _, in := range st.Inputs {
			n += wire.Records(in.Batch)
		}
	}
	return n
}

// New makes detector name's instance for Host from its registered
// defaults, changed by edit (nil: none).
func New[C any, D detect.Instance](t testing.TB, name string, edit func(*C)) D {
	t.Helper()
	p, ok := detect.Default.Lookup(name)
	if !ok {
		t.Fatalf("%s is not registered", name)
	}
	cfg := p.Config().(*C)
	if edit != nil {
		edit(cfg)
	}
	d, err := p.New(cfg, Host)
	if err != nil {
		t.Fatal(err)
	}
	return d.(D)
}
