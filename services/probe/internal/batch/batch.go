// Package batch packs raw events into eventpb.Batch messages without
// building the Batch in memory: each record is marshalled straight onto the
// end of one reused buffer, so the hot path does not allocate. One Encoder
// serves one event kind (one subject).
package batch

import (
	"time"

	"google.golang.org/protobuf/encoding/protowire"

	"github.com/netpulse/netpulse/lib/eventpb"
	"github.com/netpulse/netpulse/lib/wire"
)

// Field numbers of eventpb.Batch (see event.proto).
const (
	fieldSchemaVersion = 1
	fieldHost          = 2
	fieldProbeID       = 3
	fieldBatchSeq      = 4
	fieldEvents        = 5
	fieldConnections   = 6
	fieldSnapshot      = 7
	fieldDrops         = 8
)

// Batch is one encoded eventpb.Batch ready to publish.
type Batch struct {
	Seq     uint64 // batch_seq, 1, 2, ... per probe run and kind
	Events  int    // records in it (events, connections or 1 snapshot)
	Data    []byte
	Subject string // netpulse.events.<host>.<kind>
	// MsgID is wire.BatchMsgID: <probe id>-<kind>-<seq>, so a retried
	// publish is stored once.
	MsgID string

	enc *Encoder
}

// Release hands Data back to its Encoder for reuse; call it once the batch
// is no longer needed. It may be called from any goroutine.
func (b Batch) Release() {
	if b.enc != nil {
		b.enc.Recycle(b.Data)
	}
}

// DefaultSpares is how many released buffers a Buffers pool keeps by
// default. Acks come back within milliseconds, so a few spares serve a
// steady stream; after a burst that had publish.max_in_flight batches out
// at once (64 x 260 KiB), the others go back to the GC instead of staying
// resident for good.
const DefaultSpares = 4

// Buffers is a pool of released batch buffers. Encoders sharing one keep
// spares only for the kinds busy at the moment, not a set per kind. Safe
// for concurrent use.
type Buffers struct {
	free chan []byte
}

// NewBuffers makes a pool keeping at most spares buffers.
func NewBuffers(spares int) *Buffers {
	return &Buffers{free: make(chan []byte, max(spares, 0))}
}

// Encoder accumulates records until the batch is full by size or count.
type Encoder struct {
	host, probeID string
	kind          string
	subject       string
	maxBytes      int
	maxEvents     int

	buf     []byte
	events  int
	seq     uint64
	started time.Time
	bufs    *Buffers
}

// NewEncoder makes an Encoder for events of kind from host whose batches
// stay under maxBytes (one record may overshoot it) and hold at most
// maxEvents records. Its buffers come from and go back to bufs; nil gives
// it a pool of its own.
func NewEncoder(host, probeID, kind string, maxBytes, maxEvents int, bufs *Buffers) *Encoder {
	if bufs == nil {
		bufs = NewBuffers(DefaultSpares)
	}
	return &Encoder{
		host: host, probeID: probeID, kind: kind,
		subject:  wire.EventSubject(host, kind),
		maxBytes: maxBytes, maxEvents: maxEvents,
		bufs: bufs,
	}
}

// sizedMessage is what vtprotobuf generates for every message.
type sizedMessage interface {
	SizeVT() int
	MarshalToSizedBufferVT([]byte) (int, error)
}

// Add appends ev to the current batch and reports whether the batch is now
// full and should be taken.
func (e *Encoder) Add(ev *eventpb.Event, now time.Time) (full bool) {
	return e.add(fieldEvents, ev, now)
}

// AddConn appends a finished connection (kind conn).
func (e *Encoder) AddConn(c *eventpb.Connection, now time.Time) (full bool) {
	return e.add(fieldConnections, c, now)
}

// AddSnapshot puts a snapshot in the batch (kind snapshot); a batch holds
// one snapshot, so it is always full afterwards.
func (e *Encoder) AddSnapshot(s *eventpb.Snapshot, now time.Time) {
	e.add(fieldSnapshot, s, now)
}

// AddDrop appends one interval's drop count (kind drop).
func (e *Encoder) AddDrop(d *eventpb.DropCount, now time.Time) (full bool) {
	return e.add(fieldDrops, d, now)
}

func (e *Encoder) add(field protowire.Number, m sizedMessage, now time.Time) (full bool) {
	if e.events == 0 {
		e.start(now)
	}
	n := m.SizeVT()
	e.buf = protowire.AppendTag(e.buf, field, protowire.BytesType)
	e.buf = protowire.AppendVarint(e.buf, uint64(n))
	start := len(e.buf)
	e.buf = append(e.buf, make([]byte, n)...)
	// SizeVT has just been computed for this exact message: cannot fail.
	_, _ = m.MarshalToSizedBufferVT(e.buf[start:])
	e.events++
	return field == fieldSnapshot || len(e.buf) >= e.maxBytes || e.events >= e.maxEvents
}

// Len is the number of events in the current batch.
func (e *Encoder) Len() int { return e.events }

// Age is how long ago the first event of the current batch was added.
func (e *Encoder) Age(now time.Time) time.Duration {
	if e.events == 0 {
		return 0
	}
	return now.Sub(e.started)
}

// Take returns the current batch and starts a new, empty one. The caller
// hands Data back with Recycle once it is no longer needed.
func (e *Encoder) Take() Batch {
	b := Batch{Seq: e.seq, Events: e.events, Data: e.buf, Subject: e.subject,
		MsgID: wire.BatchMsgID(e.probeID, e.kind, e.seq), enc: e}
	e.buf, e.events = nil, 0
	return b
}

// Recycle gives a taken buffer back for reuse (Batch.Release calls it). It
// may be called from any goroutine.
func (e *Encoder) Recycle(buf []byte) {
	select {
	case e.bufs.free <- buf[:0]:
	default: // enough spares already
	}
}

func (e *Encoder) start(now time.Time) {
	select {
	case e.buf = <-e.bufs.free:
	default:
		e.buf = make([]byte, 0, e.maxBytes+4096)
	}
	e.seq++
	e.started = now
	e.buf = protowire.AppendTag(e.buf, fieldSchemaVersion, protowire.VarintType)
	e.buf = protowire.AppendVarint(e.buf, eventpb.SchemaVersion)
	e.buf = protowire.AppendTag(e.buf, fieldHost, protowire.BytesType)
	e.buf = protowire.AppendString(e.buf, e.host)
	e.buf = protowire.AppendTag(e.buf, fieldProbeID, protowire.BytesType)
	e.buf = protowire.AppendString(e.buf, e.probeID)
	e.buf = protowire.AppendTag(e.buf, fieldBatchSeq, protowire.VarintType)
	e.buf = protowire.AppendVarint(e.buf, e.seq)
}
