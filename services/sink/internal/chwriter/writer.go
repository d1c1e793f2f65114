package chwriter

import (
	"context"
	"fmt"
	"log/slog"
	"sort"
	"strings"

	"github.com/ClickHouse/clickhouse-go/v2/lib/driver"

	"github.com/netpulse/netpulse/lib/eventpb"
)

// Writer buffers rows per partition and inserts them. It is used from one
// goroutine.
//
// Exactly-once: rows carry the stream sequence of their NATS message. An
// INSERT holds rows of one partition only, so it is one part, committed
// whole or not at all, and the sink inserts messages in delivery order. So
// for each partition, every message up to the highest stream_seq in the
// table is stored, and a redelivered message at or below that watermark is
// skipped. The watermark is read from the table itself (never from a second
// table that could disagree after a crash) the first time a partition is
// touched, and again whenever an INSERT's outcome is unknown.
type Writer struct {
	conn  driver.Conn
	table string // `db`.`tcp_events`
	log   *slog.Logger

	parts     map[uint32]*rows
	spare     []*rows
	watermark map[uint32]uint64
	ackFloor  uint64
	buffered  int

	Counters Counters
}

// Counters are the writer's running totals.
type Counters struct {
	RowsInserted    uint64
	RowsDuplicate   uint64 // skipped: at or below the partition's watermark
	Inserts         uint64
	InsertErrors    uint64
	WatermarkQueries uint64
}

// New makes a Writer for database.tcp_events.
func New(conn driver.Conn, database string, log *slog.Logger) *Writer {
	return &Writer{
		conn:      conn,
		table:     "`" + database + "`.`tcp_events`",
		log:       log,
		parts:     make(map[uint32]*rows),
		watermark: make(map[uint32]uint64),
	}
}

// SetAckFloor tells the writer that every message up to seq is stored and
// acknowledged, which bounds the watermark queries.
func (w *Writer) SetAckFloor(seq uint64) { w.ackFloor = seq }

// Buffered is the number of rows waiting for Flush.
func (w *Writer) Buffered() int { return w.buffered }

// Add buffers the events of one message. It returns how many rows were
// skipped because they are already stored. An error (a watermark query that
// failed) leaves nothing of the message buffered: call Add again.
func (w *Writer) Add(ctx context.Context, streamSeq uint64, b *eventpb.Batch) (dup int, err error) {
	// Watermarks first, so that a failure leaves the buffers untouched.
	for _, ev := range b.Events {
		if _, err := w.mark(ctx, partitionOf(ev.TimeUnixNano)); err != nil {
			return 0, err
		}
	}
	for _, ev := range b.Events {
		p := partitionOf(ev.TimeUnixNano)
		if streamSeq <= w.watermark[p] {
			dup++
			continue
		}
		r := w.parts[p]
		if r == nil {
			r = w.newRows()
			w.parts[p] = r
		}
		r.add(b.Host, b.ProbeId, streamSeq, ev)
		w.buffered++
	}
	w.Counters.RowsDuplicate += uint64(dup)
	return dup, nil
}

// Flush inserts every buffered partition. On error the partitions not yet
// inserted stay buffered: call Flush again (after a pause).
func (w *Writer) Flush(ctx context.Context) error {
	days := make([]uint32, 0, len(w.parts))
	for d := range w.parts {
		days = append(days, d)
	}
	sort.Slice(days, func(i, j int) bool { return days[i] < days[j] })
	for _, d := range days {
		r := w.parts[d]
		// After a failed INSERT the outcome is unknown: ask the table.
		wm, err := w.mark(ctx, d)
		if err != nil {
			return err
		}
		if wm >= r.maxSeq {
			w.log.Info("rows already stored by an INSERT whose reply was lost; not inserting again",
				"partition", d, "rows", r.len(), "watermark", wm)
			w.Counters.RowsDuplicate += uint64(r.len())
		} else if err := w.insert(ctx, r); err != nil {
			delete(w.watermark, d)
			w.Counters.InsertErrors++
			return fmt.Errorf("insert %d rows into %s (partition %d): %w", r.len(), w.table, d, err)
		} else {
			w.watermark[d] = r.maxSeq
			w.Counters.RowsInserted += uint64(r.len())
			w.Counters.Inserts++
		}
		w.buffered -= r.len()
		delete(w.parts, d)
		r.reset()
		w.spare = append(w.spare, r)
	}
	return nil
}

func (w *Writer) insert(ctx context.Context, r *rows) error {
	b, err := w.conn.PrepareBatch(ctx, "INSERT INTO "+w.table+" ("+strings.Join(columns, ", ")+")")
	if err != nil {
		return err
	}
	for i, v := range r.values() {
		if err := b.Column(i).Append(v); err != nil {
			_ = b.Abort()
			return fmt.Errorf("column %s: %w", columns[i], err)
		}
	}
	return b.Send()
}

// mark returns the watermark of partition day, querying it when unknown.
func (w *Writer) mark(ctx context.Context, day uint32) (uint64, error) {
	if wm, ok := w.watermark[day]; ok {
		return wm, nil
	}
	start, end := dayBounds(day)
	q := fmt.Sprintf("SELECT max(stream_seq) FROM %s WHERE time >= toDateTime(%d) AND time < toDateTime(%d) AND stream_seq > %d",
		w.table, start, end, w.ackFloor)
	var wm uint64
	w.Counters.WatermarkQueries++
	if err := w.conn.QueryRow(ctx, q).Scan(&wm); err != nil {
		return 0, fmt.Errorf("read watermark of partition %d from %s: %w", day, w.table, err)
	}
	wm = max(wm, w.ackFloor)
	w.watermark[day] = wm
	return wm, nil
}

func (w *Writer) newRows() *rows {
	if n := len(w.spare); n > 0 {
		r := w.spare[n-1]
		w.spare = w.spare[:n-1]
		return r
	}
	return &rows{}
}
