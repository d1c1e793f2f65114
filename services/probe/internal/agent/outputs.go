package agent

import (
	"context"
	"time"

	"github.com/netpulse/netpulse/lib/eventpb"
	"github.com/netpulse/netpulse/lib/wire"
	"github.com/netpulse/netpulse/services/probe/internal/batch"
	"github.com/netpulse/netpulse/services/probe/internal/publish"
)

// outputs keeps one batch encoder per event kind and hands full batches to
// the publisher. It is not safe for concurrent use: the probe holds its
// lock around every call.
type outputs struct {
	pub  *publish.Publisher
	stop context.Context // ends Publish's wait for a free slot
	encs map[string]*batch.Encoder

	unknownKind uint64 // events of a type without a kind (a decoder bug)
}

func newOutputs(host, probeID string, cfg BatchConfig, pub *publish.Publisher, stop context.Context) *outputs {
	o := &outputs{pub: pub, stop: stop, encs: map[string]*batch.Encoder{}}
	// One pool for every kind: spares for the two or so busy at a time,
	// not a set per kind (each buffer is batch.max_bytes).
	bufs := batch.NewBuffers(2 * batch.DefaultSpares)
	for _, kind := range wire.DataKinds {
		o.encs[kind] = batch.NewEncoder(host, probeID, kind, cfg.MaxBytes, cfg.MaxEvents, bufs)
	}
	return o
}

// event batches ev under the kind of its type.
func (o *outputs) event(ev *eventpb.Event, now time.Time) {
	enc := o.encs[wire.KindOf(ev.Type)]
	if enc == nil {
		o.unknownKind++
		return
	}
	if enc.Add(ev, now) {
		o.flush(enc)
	}
}

// conn batches a finished connection.
func (o *outputs) conn(c *eventpb.Connection, now time.Time) {
	if enc := o.encs[wire.KindConn]; enc.AddConn(c, now) {
		o.flush(enc)
	}
}

// snapshot publishes s as a message of its own.
func (o *outputs) snapshot(s *eventpb.Snapshot, now time.Time) {
	enc := o.encs[wire.KindSnapshot]
	enc.AddSnapshot(s, now)
	o.flush(enc)
}

// drop batches one drop count.
func (o *outputs) drop(d *eventpb.DropCount, now time.Time) {
	if enc := o.encs[wire.KindDrop]; enc.AddDrop(d, now) {
		o.flush(enc)
	}
}

// flushKind publishes kind's partial batch.
func (o *outputs) flushKind(kind string) {
	if enc := o.encs[kind]; enc.Len() > 0 {
		o.flush(enc)
	}
}

// flushOlder publishes every partial batch whose first record is at least
// age old.
func (o *outputs) flushOlder(now time.Time, age time.Duration) {
	for _, enc := range o.encs {
		if enc.Len() > 0 && enc.Age(now) >= age {
			o.flush(enc)
		}
	}
}

// flushAll publishes every partial batch.
func (o *outputs) flushAll() {
	for _, enc := range o.encs {
		if enc.Len() > 0 {
			o.flush(enc)
		}
	}
}

func (o *outputs) flush(enc *batch.Encoder) {
	// Publish blocks only while MaxInFlight batches are unacknowledged, or
	// returns at once when the grace period is over (counted as dropped).
	_ = o.pub.Publish(o.stop, enc.Take())
}
