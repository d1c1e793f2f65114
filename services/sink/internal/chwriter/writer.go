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
	"github.com/netpulse/netpulse/services/sink/internal/chschema"
)

// Writer buffers rows per table and partition and inserts them. It is used
// from one goroutine.
//
// Exactly once, per table: every row carries the stream sequence of its
// NATS message. An INSERT holds the rows of one partition of one table
// only, so it is one part, committed whole or not at all. A message the
// server delivers for the first time cannot be stored yet; a message
// delivered again (its ack was lost, or a sink died holding it) is looked up
// in its table, partition by partition, and what is already there is
// skipped. After an INSERT fails, its outcome is unknown, so the table is
// asked before trying again.
type Writer struct {
	conn driver.Conn
	log  *slog.Logger

	events table[*eventRows]
	conns  table[*connRows]
	snaps  table[*snapRows]
	alerts table[*alertRows]
	addrs  addrCache

	Counters Counters
}

// Counters are the writer's running totals over all tables.
type Counters struct {
	RowsInserted  uint64
	RowsDuplicate uint64 // skipped: already stored
	Inserts       uint64
	InsertErrors  uint64
	Lookups       uint64 // queries for already-stored rows
}

// table is one table's pending rows, per partition.
type table[B rowBuffer] struct {
	spec     *chschema.Table
	name     string // `db`.`table`
	insert   string // INSERT INTO name (columns)
	newRows  func() B
	parts    map[uint32]B
	spare    []B
	buffered int
}

func newTable[B rowBuffer](spec *chschema.Table, database string, newRows func() B) table[B] {
	name := spec.Qualified(database)
	return table[B]{
		spec:    spec,
		name:    name,
		insert:  "INSERT INTO " + name + " (" + strings.Join(spec.ColumnNames(), ", ") + ")",
		newRows: newRows,
		parts:   make(map[uint32]B),
	}
}

// rows returns partition p's buffer.
func (t *table[B]) rows(p uint32) B {
	if r, ok := t.parts[p]; ok {
		return r
	}
	var r B
	if n := len(t.spare); n > 0 {
		r, t.spare = t.spare[n-1], t.spare[:n-1]
	} else {
		r = t.newRows()
	}
	t.parts[p] = r
	return r
}

// New makes a Writer for the tables of database.
func New(conn driver.Conn, database string, log *slog.Logger) *Writer {
	return &Writer{
		conn:   conn,
		log:    log,
		events: newTable(&chschema.TCPEvents, database, func() *eventRows { return &eventRows{} }),
		conns:  newTable(&chschema.TCPConnections, database, func() *connRows { return &connRows{} }),
		snaps:  newTable(&chschema.SocketSnapshots, database, func() *snapRows { return &snapRows{} }),
		alerts: newTable(&chschema.Alerts, database, func() *alertRows { return &alertRows{} }),
	}
}

// Buffered is the number of rows waiting for Flush.
func (w *Writer) Buffered() int {
	return w.events.buffered + w.conns.buffered + w.snaps.buffered + w.alerts.buffered
}

// Add buffers the rows of one message of kind (its subject's last token),
// which Check has accepted: events into tcp_events, connections into
// tcp_connections, a snapshot into socket_snapshots. redelivered says
// whether the server delivered the message before; then rows already stored
// are skipped (counted in RowsDuplicate). An error (the look-up failed)
// leaves nothing of the message buffered: call Add again.
func (w *Writer) Add(ctx context.Context, kind string, streamSeq uint64, redelivered bool, b *eventpb.Batch) error {
	switch TableOf(kind) {
	case chschema.TCPEvents.Name:
		return w.addEvents(ctx, streamSeq, redelivered, b)
	case chschema.TCPConnections.Name:
		return w.addConnections(ctx, streamSeq, redelivered, b)
	case chschema.SocketSnapshots.Name:
		return w.addSnapshot(ctx, streamSeq, redelivered, b)
	}
	return fmt.Errorf("no table for kind %q", kind)
}

func (w *Writer) addEvents(ctx context.Context, streamSeq uint64, redelivered bool, b *eventpb.Batch) error {
	t := &w.events
	var stored map[uint32]bool
	if redelivered && len(b.Events) > 0 {
		lo, hi := b.Events[0].TimeUnixNano, b.Events[0].TimeUnixNano
		for _, ev := range b.Events {
			lo, hi = min(lo, ev.TimeUnixNano), max(hi, ev.TimeUnixNano)
		}
		var err error
		if stored, err = w.storedPartitions(ctx, t.spec, t.name, streamSeq, lo, hi); err != nil {
			return err
		}
	}
	// Consecutive events share a partition: look the buffer up once per run.
	var r *eventRows
	var cur uint32
	for _, ev := range b.Events {
		p := t.spec.PartitionOf(int64(ev.TimeUnixNano))
		if stored[p] {
			w.Counters.RowsDuplicate++
			continue
		}
		if r == nil || p != cur {
			r, cur = t.rows(p), p
		}
		r.add(b.Host, b.ProbeId, streamSeq, ev, &w.addrs)
		t.buffered++
	}
	return nil
}

func (w *Writer) addConnections(ctx context.Context, streamSeq uint64, redelivered bool, b *eventpb.Batch) error {
	t := &w.conns
	var stored map[uint32]bool
	if redelivered && len(b.Connections) > 0 {
		lo, hi := b.Connections[0].TimeUnixNano, b.Connections[0].TimeUnixNano
		for _, c := range b.Connections {
			lo, hi = min(lo, c.TimeUnixNano), max(hi, c.TimeUnixNano)
		}
		var err error
		if stored, err = w.storedPartitions(ctx, t.spec, t.name, streamSeq, lo, hi); err != nil {
			return err
		}
	}
	for _, c := range b.Connections {
		p := t.spec.PartitionOf(int64(c.TimeUnixNano))
		if stored[p] {
			w.Counters.RowsDuplicate++
			continue
		}
		t.rows(p).add(b.Host, b.ProbeId, streamSeq, c, &w.addrs)
		t.buffered++
	}
	return nil
}

// addSnapshot: all rows of a snapshot share its time, so its partition.
func (w *Writer) addSnapshot(ctx context.Context, streamSeq uint64, redelivered bool, b *eventpb.Batch) error {
	t, s := &w.snaps, b.Snapshot
	if s == nil {
		return nil
	}
	n := 1 + len(s.Groups) + len(s.CloseWait)
	p := t.spec.PartitionOf(int64(s.TimeUnixNano))
	if redelivered {
		stored, err := w.storedPartitions(ctx, t.spec, t.name, streamSeq, s.TimeUnixNano, s.TimeUnixNano)
		if err != nil {
			return err
		}
		if stored[p] {
			w.Counters.RowsDuplicate += uint64(n)
			return nil
		}
	}
	t.rows(p).add(b.Host, b.ProbeId, streamSeq, s, &w.addrs)
	t.buffered += n
	return nil
}

// AddAlert buffers the row of one alert message; like Add otherwise.
func (w *Writer) AddAlert(ctx context.Context, streamSeq uint64, redelivered bool, a *AlertMessage) error {
	t := &w.alerts
	ns := a.SentAt.UnixNano()
	p := t.spec.PartitionOf(ns)
	if redelivered {
		stored, err := w.storedPartitions(ctx, t.spec, t.name, streamSeq, uint64(ns), uint64(ns))
		if err != nil {
			return err
		}
		if stored[p] {
			w.Counters.RowsDuplicate++
			return nil
		}
	}
	t.rows(p).add(streamSeq, a)
	t.buffered++
	return nil
}

// Flush inserts every buffered partition of every table. On error the
// partitions not yet inserted stay buffered: call Flush again (after a
// pause).
func (w *Writer) Flush(ctx context.Context) error {
	if err := flush(ctx, w, &w.events); err != nil {
		return err
	}
	if err := flush(ctx, w, &w.conns); err != nil {
		return err
	}
	if err := flush(ctx, w, &w.snaps); err != nil {
		return err
	}
	return flush(ctx, w, &w.alerts)
}

func flush[B rowBuffer](ctx context.Context, w *Writer, t *table[B]) error {
	if len(t.parts) == 0 {
		return nil
	}
	parts := make([]uint32, 0, len(t.parts))
	for p := range t.parts {
		parts = append(parts, p)
	}
	sort.Slice(parts, func(i, j int) bool { return parts[i] < parts[j] })
	for _, p := range parts {
		r := t.parts[p]
		st := r.state()
		landed := false
		if st.uncertain {
			n, err := w.countStored(ctx, t.spec, t.name, p, st.msgs)
			if err != nil {
				return err
			}
			switch {
			case n == uint64(st.rows):
				landed = true
				w.log.Info("rows stored by an INSERT whose reply was lost; not inserting again", "table", t.spec.Name, "partition", p, "rows", n)
				w.Counters.RowsDuplicate += n
			case n != 0:
				// One INSERT into one partition is one part: this cannot happen
				// unless something else writes these stream sequences.
				return fmt.Errorf("partition %d of %s holds %d of %d rows of a failed INSERT; refusing to guess (messages %d..%d)",
					p, t.name, n, st.rows, st.msgs[0], st.msgs[len(st.msgs)-1])
			}
		}
		if !landed {
			if err := w.insert(ctx, t.insert, t.spec, r); err != nil {
				st.uncertain = true
				w.Counters.InsertErrors++
				return fmt.Errorf("insert %d rows into %s (partition %d): %w", st.rows, t.name, p, err)
			}
			w.Counters.RowsInserted += uint64(st.rows)
			w.Counters.Inserts++
		}
		t.buffered -= st.rows
		delete(t.parts, p)
		r.reset()
		t.spare = append(t.spare, r)
	}
	return nil
}

func (w *Writer) insert(ctx context.Context, insert string, spec *chschema.Table, r rowBuffer) error {
	b, err := w.conn.PrepareBatch(ctx, insert)
	if err != nil {
		return err
	}
	for i, v := range r.values() {
		if err := b.Column(i).Append(v); err != nil {
			_ = b.Abort()
			return fmt.Errorf("column %s: %w", spec.Columns[i].Name, err)
		}
	}
	return b.Send()
}

// storedPartitions returns the partitions of table that already hold rows
// of message streamSeq. The time range [lo, hi] (ns) of its rows lets the
// server skip every other partition.
func (w *Writer) storedPartitions(ctx context.Context, spec *chschema.Table, table string, streamSeq, lo, hi uint64) (map[uint32]bool, error) {
	q := fmt.Sprintf("SELECT DISTINCT %s FROM %s WHERE %s >= toDateTime(%d) AND %s <= toDateTime(%d) AND stream_seq = %d",
		spec.PartitionBy(), table, spec.TimeColumn, lo/1e9, spec.TimeColumn, hi/1e9+1, streamSeq)
	w.Counters.Lookups++
	rows, err := w.conn.Query(ctx, q)
	if err != nil {
		return nil, fmt.Errorf("look up message %d in %s: %w", streamSeq, table, err)
	}
	defer rows.Close()
	stored := map[uint32]bool{}
	for rows.Next() {
		var p uint32
		if err := rows.Scan(&p); err != nil {
			return nil, fmt.Errorf("look up message %d in %s: %w", streamSeq, table, err)
		}
		stored[p] = true
	}
	return stored, rows.Err()
}

// countStored counts the rows of messages msgs in partition p of table.
func (w *Writer) countStored(ctx context.Context, spec *chschema.Table, table string, p uint32, msgs []uint64) (uint64, error) {
	start, end := spec.PartitionBounds(p)
	var in strings.Builder
	for i, s := range msgs {
		if i > 0 {
			in.WriteByte(',')
		}
		in.WriteString(strconv.FormatUint(s, 10))
	}
	q := fmt.Sprintf("SELECT count() FROM %s WHERE %s >= toDateTime(%d) AND %s < toDateTime(%d) AND stream_seq IN (%s)",
		table, spec.TimeColumn, start, spec.TimeColumn, end, in.String())
	var n uint64
	w.Counters.Lookups++
	if err := w.conn.QueryRow(ctx, q).Scan(&n); err != nil {
		return 0, fmt.Errorf("count rows of a failed INSERT in %s (partition %d): %w", table, p, err)
	}
	return n, nil
}
