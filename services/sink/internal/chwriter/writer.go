package chwriter

import (
	"context"
	"fmt"
	"log/slog"
	"sort"
	"strconv"
	"strings"

	"github.com/ClickHouse/clickhouse-go/v2/lib/driver"

	"github.com/netpulse/netpulse/lib/eventpb"
)

// Writer buffers rows per partition and inserts them. It is used from one
// goroutine.
//
// Exactly once: every row carries the stream sequence of its NATS message.
// An INSERT holds the rows of one partition only, so it is one part,
// committed whole or not at all. A message the server delivers for the
// first time cannot be stored yet; a message delivered again (its ack was
// lost, or a sink died holding it) is looked up in the table, partition by
// partition, and what is already there is skipped. After an INSERT fails,
// its outcome is unknown, so the table is asked before trying again.
type Writer struct {
	conn  driver.Conn
	table string // `db`.`tcp_events`
	log   *slog.Logger

	parts    map[uint32]*rows
	spare    []*rows
	buffered int
	addrs    addrCache

	Counters Counters
}

// Counters are the writer's running totals.
type Counters struct {
	RowsInserted  uint64
	RowsDuplicate uint64 // skipped: already stored
	Inserts       uint64
	InsertErrors  uint64
	Lookups       uint64 // queries for already-stored rows
}

// New makes a Writer for database.tcp_events.
func New(conn driver.Conn, database string, log *slog.Logger) *Writer {
	return &Writer{
		conn:  conn,
		table: "`" + database + "`.`tcp_events`",
		log:   log,
		parts: make(map[uint32]*rows),
	}
}

// Buffered is the number of rows waiting for Flush.
func (w *Writer) Buffered() int { return w.buffered }

// Add buffers the events of one message. redelivered says whether the
// server delivered the message before; then rows already stored are skipped,
// and their number returned. An error (the look-up failed) leaves nothing of
// the message buffered: call Add again.
func (w *Writer) Add(ctx context.Context, streamSeq uint64, redelivered bool, b *eventpb.Batch) (dup int, err error) {
	var stored map[uint32]bool
	if redelivered && len(b.Events) > 0 {
		if stored, err = w.storedPartitions(ctx, streamSeq, b); err != nil {
			return 0, err
		}
	}
	for _, ev := range b.Events {
		p := partitionOf(ev.TimeUnixNano)
		if stored[p] {
			dup++
			continue
		}
		r := w.parts[p]
		if r == nil {
			r = w.newRows()
			w.parts[p] = r
		}
		r.add(b.Host, b.ProbeId, streamSeq, ev, &w.addrs)
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
		landed := false
		if r.uncertain {
			n, err := w.countStored(ctx, d, r.msgs)
			if err != nil {
				return err
			}
			switch {
			case n == uint64(r.len()):
				landed = true
				w.log.Info("rows stored by an INSERT whose reply was lost; not inserting again", "partition", d, "rows", n)
				w.Counters.RowsDuplicate += n
			case n != 0:
				// One INSERT into one partition is one part: this cannot happen
				// unless something else writes these stream sequences.
				return fmt.Errorf("partition %d holds %d of %d rows of a failed INSERT; refusing to guess (messages %d..%d)",
					d, n, r.len(), r.msgs[0], r.msgs[len(r.msgs)-1])
			}
		}
		if !landed {
			if err := w.insert(ctx, r); err != nil {
				r.uncertain = true
				w.Counters.InsertErrors++
				return fmt.Errorf("insert %d rows into %s (partition %d): %w", r.len(), w.table, d, err)
			}
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

// storedPartitions returns the partitions that already hold rows of message
// streamSeq. The time range of its events lets the server skip every other
// partition.
func (w *Writer) storedPartitions(ctx context.Context, streamSeq uint64, b *eventpb.Batch) (map[uint32]bool, error) {
	lo, hi := b.Events[0].TimeUnixNano, b.Events[0].TimeUnixNano
	for _, ev := range b.Events {
		lo, hi = min(lo, ev.TimeUnixNano), max(hi, ev.TimeUnixNano)
	}
	q := fmt.Sprintf("SELECT DISTINCT toYYYYMMDD(time) FROM %s WHERE time >= toDateTime(%d) AND time <= toDateTime(%d) AND stream_seq = %d",
		w.table, lo/1e9, hi/1e9+1, streamSeq)
	w.Counters.Lookups++
	rows, err := w.conn.Query(ctx, q)
	if err != nil {
		return nil, fmt.Errorf("look up message %d in %s: %w", streamSeq, w.table, err)
	}
	defer rows.Close()
	stored := map[uint32]bool{}
	for rows.Next() {
		var d uint32
		if err := rows.Scan(&d); err != nil {
			return nil, fmt.Errorf("look up message %d in %s: %w", streamSeq, w.table, err)
		}
		stored[d] = true
	}
	return stored, rows.Err()
}

// countStored counts the rows of messages msgs in partition day.
func (w *Writer) countStored(ctx context.Context, day uint32, msgs []uint64) (uint64, error) {
	start, end := dayBounds(day)
	var in strings.Builder
	for i, s := range msgs {
		if i > 0 {
			in.WriteByte(',')
		}
		in.WriteString(strconv.FormatUint(s, 10))
	}
	q := fmt.Sprintf("SELECT count() FROM %s WHERE time >= toDateTime(%d) AND time < toDateTime(%d) AND stream_seq IN (%s)",
		w.table, start, end, in.String())
	var n uint64
	w.Counters.Lookups++
	if err := w.conn.QueryRow(ctx, q).Scan(&n); err != nil {
		return 0, fmt.Errorf("count rows of a failed INSERT in %s (partition %d): %w", w.table, day, err)
	}
	return n, nil
}

func (w *Writer) newRows() *rows {
	if n := len(w.spare); n > 0 {
		r := w.spare[n-1]
		w.spare = w.spare[:n-1]
		return r
	}
	return &rows{}
}
