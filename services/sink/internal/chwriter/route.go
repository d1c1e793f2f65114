package chwriter

import (
	"fmt"
	"time"

	"github.com/netpulse/netpulse/lib/eventpb"
	"github.com/netpulse/netpulse/lib/wire"
	"github.com/netpulse/netpulse/services/sink/internal/chschema"
)

// TableOf is the table the messages of a raw-event kind go to, "" for kinds
// the sink does not store (stats, unknown ones).
func TableOf(kind string) string {
	switch kind {
	case wire.KindState, wire.KindRetransmit, wire.KindReset, wire.KindError:
		return chschema.TCPEvents.Name
	case wire.KindConn:
		return chschema.TCPConnections.Name
	case wire.KindSnapshot:
		return chschema.SocketSnapshots.Name
	case wire.KindDrop:
		return chschema.TCPDrops.Name
	}
	return ""
}

// Times the tables can hold: DateTime (legacy) counts seconds in a UInt32.
// A time outside would be stored wrapped, in a partition other than the one
// the writer computed.
var (
	minTime = time.Date(1970, 1, 2, 0, 0, 0, 0, time.UTC)
	maxTime = time.Date(2106, 1, 1, 0, 0, 0, 0, time.UTC)
	minNs   = uint64(minTime.UnixNano())
	maxNs   = uint64(maxTime.UnixNano())
)

func badNs(ns uint64) bool     { return ns < minNs || ns >= maxNs }
func badTime(t time.Time) bool { return t.Before(minTime) || !t.Before(maxTime) }

// Check says whether batch b is what a message of kind must hold: an empty
// reason when it is, else a short fixed reason (for counting and logging
// once) and the details. A batch of an event kind holds only events, each
// of a type published under that kind; conn holds only connections;
// snapshot holds only a snapshot; drop holds only drop counts. Every row
// time must fit the tables.
func Check(kind string, b *eventpb.Batch) (reason string, err error) {
	table := TableOf(kind)
	if table == "" {
		return "unknown kind", fmt.Errorf("kind %q is not one the sink stores", kind)
	}
	mismatch := kind + ": payload does not match its kind"
	hasSnap := b.Snapshot != nil
	got := func(want string) error {
		return fmt.Errorf("want %s only, got %d events, %d connections, snapshot %v, %d drop counts",
			want, len(b.Events), len(b.Connections), hasSnap, len(b.Drops))
	}
	switch table {
	case chschema.TCPEvents.Name:
		if len(b.Events) == 0 || len(b.Connections) > 0 || hasSnap || len(b.Drops) > 0 {
			return mismatch, got("events")
		}
		for i, ev := range b.Events {
			if k := wire.KindOf(ev.Type); k != kind {
				if k == "" {
					return kind + ": unknown event type", fmt.Errorf("event %d has type %d, unknown to this sink", i, ev.Type)
				}
				return kind + ": event type of another kind", fmt.Errorf("event %d is %s, published under kind %s", i, wire.EventTypes.Name(ev.Type), k)
			}
			if badNs(ev.TimeUnixNano) {
				return kind + ": time out of range", fmt.Errorf("event %d has time_unix_nano %d", i, ev.TimeUnixNano)
			}
		}
	case chschema.TCPConnections.Name:
		if len(b.Connections) == 0 || len(b.Events) > 0 || hasSnap || len(b.Drops) > 0 {
			return mismatch, got("connections")
		}
		for i, c := range b.Connections {
			if badNs(c.TimeUnixNano) || (c.StartUnixNano != 0 && badNs(c.StartUnixNano)) {
				return kind + ": time out of range", fmt.Errorf("connection %d has time_unix_nano %d, start_unix_nano %d", i, c.TimeUnixNano, c.StartUnixNano)
			}
		}
	case chschema.SocketSnapshots.Name:
		if !hasSnap || len(b.Events) > 0 || len(b.Connections) > 0 || len(b.Drops) > 0 {
			return mismatch, got("a snapshot")
		}
		if badNs(b.Snapshot.TimeUnixNano) {
			return kind + ": time out of range", fmt.Errorf("snapshot has time_unix_nano %d", b.Snapshot.TimeUnixNano)
		}
	case chschema.TCPDrops.Name:
		if len(b.Drops) == 0 || len(b.Events) > 0 || len(b.Connections) > 0 || hasSnap {
			return mismatch, got("drop counts")
		}
		for i, d := range b.Drops {
			// An interval ends after it starts; a start of 0 is the
			// epoch, which the tables cannot hold either.
			if badNs(d.EndUnixNano) || badNs(d.StartUnixNano) || d.StartUnixNano > d.EndUnixNano {
				return kind + ": time out of range", fmt.Errorf("drop count %d has start_unix_nano %d, end_unix_nano %d", i, d.StartUnixNano, d.EndUnixNano)
			}
		}
	}
	return "", nil
}
