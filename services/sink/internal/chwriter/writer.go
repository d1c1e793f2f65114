package chwriter

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"reflect"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2/lib/column"
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
//
// Detach hands the buffered rows to another goroutine, which inserts them
// (Detached.Flush) while the Writer buffers the next rows.
//
// On a ClickHouse cluster (NewCluster) the rows of each host go to the
// shard that owns it, into the shard's local tables, and a redelivered
// message is looked up there: the rules above hold per shard.
type Writer struct {
	shards   []shard
	shardOf  func(host string) int
	addrs    addrCache
	detached uint64 // Detach calls: which prepared batches the next gets

	Counters Counters
}

// shard is the rows bound for one ClickHouse server, or one shard of a
// cluster, and the connection they go through.
type shard struct {
	inserter
	tables
	// alt are the prepared batches Detach hands out every other time, so
	// that two detached batches can insert at once, each with columns of
	// its own (a prepared batch is used by one INSERT at a time).
	alt *batches
}

// inserter is what inserting needs; the Writer and its Detached batches
// share it (driver.Conn is safe for concurrent use).
type inserter struct {
	conn    driver.Conn
	log     *slog.Logger
	batches *batches
	// observe, when set, is told how long each successful INSERT took.
	observe func(table string, d time.Duration)
}

// batches keeps one prepared batch per INSERT statement, sent again for
// every INSERT of that table: clickhouse-go's columns keep their memory
// between INSERTs instead of growing from nothing each time (the growing
// was a third of the sink's CPU, with the garbage collection it caused).
// Each Send of a batch is an INSERT statement of its own: clickhouse-go
// takes a connection, sends the query, the block and its end, and returns
// the server's answer (its batch retry).
type batches struct {
	mu   sync.Mutex // held during an INSERT: the Writer's and a Detached's Flush may overlap
	open map[string]*openBatch
}

// openBatch is a prepared batch and its columns.
type openBatch struct {
	ctx  context.Context // the batch's: it sends with it
	b    driver.Batch
	cols []column.Interface
}

// tables are the pending rows of every table.
type tables struct {
	events table[*eventRows]
	conns  table[*connRows]
	snaps  table[*snapRows]
	drops  table[*dropRows]
	alerts table[*alertRows]
}

func (ts *tables) buffered() int {
	return ts.events.buffered + ts.conns.buffered + ts.snaps.buffered + ts.drops.buffered + ts.alerts.buffered
}

// flush inserts every buffered partition of every table; see Writer.Flush.
func (ts *tables) flush(ctx context.Context, in inserter, c *Counters) error {
	if err := flush(ctx, in, c, &ts.events); err != nil {
		return err
	}
	if err := flush(ctx, in, c, &ts.conns); err != nil {
		return err
	}
	if err := flush(ctx, in, c, &ts.snaps); err != nil {
		return err
	}
	if err := flush(ctx, in, c, &ts.drops); err != nil {
		return err
	}
	return flush(ctx, in, c, &ts.alerts)
}

// Counters are the writer's running totals over all tables.
type Counters struct {
	RowsInserted  uint64
	RowsDuplicate uint64 // skipped: already stored
	Inserts       uint64
	InsertErrors  uint64
	Lookups       uint64 // queries for already-stored rows
}

func (c *Counters) add(o Counters) {
	c.RowsInserted += o.RowsInserted
	c.RowsDuplicate += o.RowsDuplicate
	c.Inserts += o.Inserts
	c.InsertErrors += o.InsertErrors
	c.Lookups += o.Lookups
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

func newTable[B rowBuffer](spec *chschema.Table, database string, local bool, newRows func() B) table[B] {
	name := spec.Qualified(database)
	if local {
		name = spec.LocalQualified(database)
	}
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

// New makes a Writer for the tables of database on one server.
func New(conn driver.Conn, database string, log *slog.Logger) *Writer {
	return &Writer{shards: []shard{newShard(conn, database, false, log)}, shardOf: func(string) int { return 0 }}
}

// NewCluster makes a Writer for the tables of database on a cluster: the
// rows of host go into the local tables of shard shardOf(host), through
// shards[shardOf(host)] (a connection to that shard's replicas).
func NewCluster(shards []driver.Conn, shardOf func(host string) int, database string, log *slog.Logger) *Writer {
	w := &Writer{shardOf: shardOf}
	for i, conn := range shards {
		w.shards = append(w.shards, newShard(conn, database, true, log.With("shard", i+1)))
	}
	return w
}

func newShard(conn driver.Conn, database string, local bool, log *slog.Logger) shard {
	return shard{
		alt:      &batches{open: map[string]*openBatch{}},
		inserter: inserter{conn: conn, log: log, batches: &batches{open: map[string]*openBatch{}}},
		tables: tables{
			events: newTable(&chschema.TCPEvents, database, local, func() *eventRows { return &eventRows{} }),
			conns:  newTable(&chschema.TCPConnections, database, local, func() *connRows { return &connRows{} }),
			snaps:  newTable(&chschema.SocketSnapshots, database, local, func() *snapRows { return &snapRows{} }),
			drops:  newTable(&chschema.TCPDrops, database, local, func() *dropRows { return &dropRows{} }),
			alerts: newTable(&chschema.Alerts, database, local, func() *alertRows { return &alertRows{} }),
		},
	}
}

// ObserveInserts has observe told the duration of every successful
// INSERT, by table. Call it before the first Detach.
func (w *Writer) ObserveInserts(observe func(table string, d time.Duration)) {
	for i := range w.shards {
		w.shards[i].observe = observe
	}
}

// shard is the shard that holds host's rows.
func (w *Writer) shard(host string) *shard { return &w.shards[w.shardOf(host)] }

// Buffered is the number of rows waiting for Flush.
func (w *Writer) Buffered() int { return buffered(w.shards) }

func buffered(shards []shard) int {
	n := 0
	for i := range shards {
		n += shards[i].buffered()
	}
	return n
}

// Detached is rows taken out of a Writer by Detach, inserted by Flush from
// a goroutine of its own while the Writer buffers more: the two share no
// state but the connection pool. The exactly-once rules hold per Detached
// as per Writer (one INSERT per partition; a failed INSERT is looked up
// before the next try), and a message's rows are all in one of them.
type Detached struct {
	shards   []shard
	Counters Counters // of this batch's Flush calls; Reclaim adds them to the Writer's
}

// Detach moves every buffered row into a Detached and leaves the Writer
// empty, with fresh buffers (those of earlier, reclaimed batches).
func (w *Writer) Detach() *Detached {
	d := &Detached{shards: make([]shard, len(w.shards))}
	w.detached++
	for i := range w.shards {
		sh := &w.shards[i]
		in := sh.inserter
		if w.detached%2 == 0 {
			in.batches = sh.alt
		}
		d.shards[i] = shard{inserter: in, tables: tables{
			events: sh.events.detach(),
			conns:  sh.conns.detach(),
			snaps:  sh.snaps.detach(),
			drops:  sh.drops.detach(),
			alerts: sh.alerts.detach(),
		}}
	}
	return d
}

// Reclaim takes back what d no longer needs, once no Flush of d runs: its
// counters, and its emptied buffers for the next rows. Rows d still holds
// (its last Flush failed) stay in d.
func (w *Writer) Reclaim(d *Detached) {
	w.Counters.add(d.Counters)
	d.Counters = Counters{}
	for i := range w.shards {
		sh, dsh := &w.shards[i], &d.shards[i]
		reclaim(&sh.events, &dsh.events)
		reclaim(&sh.conns, &dsh.conns)
		reclaim(&sh.snaps, &dsh.snaps)
		reclaim(&sh.drops, &dsh.drops)
		reclaim(&sh.alerts, &dsh.alerts)
	}
}

// Buffered is the number of rows waiting for Flush.
func (d *Detached) Buffered() int { return buffered(d.shards) }

// Flush inserts every partition of every table; like Writer.Flush.
func (d *Detached) Flush(ctx context.Context) error { return flushShards(ctx, d.shards, &d.Counters) }

// flushShards flushes the shards at the same time (each INSERTs through
// its own connection); what one stored stays stored when another fails.
func flushShards(ctx context.Context, shards []shard, c *Counters) error {
	if len(shards) == 1 {
		return shards[0].flush(ctx, shards[0].inserter, c)
	}
	counters := make([]Counters, len(shards))
	errs := make([]error, len(shards))
	var wg sync.WaitGroup
	for i := range shards {
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs[i] = shards[i].flush(ctx, shards[i].inserter, &counters[i])
		}()
	}
	wg.Wait()
	for _, sc := range counters {
		c.add(sc)
	}
	return errors.Join(errs...)
}

// detach moves t's partitions into a table of their own (sharing nothing
// mutable with t).
func (t *table[B]) detach() table[B] {
	d := *t
	d.spare = nil
	t.parts = make(map[uint32]B, len(d.parts))
	t.buffered = 0
	return d
}

func reclaim[B rowBuffer](t, d *table[B]) {
	t.spare = append(t.spare, d.spare...)
	clear(d.spare)
	d.spare = d.spare[:0]
}

// Add buffers the rows of one message of kind (its subject's last token),
// which Check has accepted: events into tcp_events, connections into
// tcp_connections, a snapshot into socket_snapshots, drop counts into
// tcp_drops. redelivered says whether the server delivered the message
// before; then rows already stored are skipped (counted in RowsDuplicate).
// An error (the look-up failed) leaves nothing of the message buffered:
// call Add again.
func (w *Writer) Add(ctx context.Context, kind string, streamSeq uint64, redelivered bool, b *eventpb.Batch) error {
	sh := w.shard(b.Host)
	switch TableOf(kind) {
	case chschema.TCPEvents.Name:
		return w.addEvents(ctx, sh, streamSeq, redelivered, b)
	case chschema.TCPConnections.Name:
		return w.addConnections(ctx, sh, streamSeq, redelivered, b)
	case chschema.SocketSnapshots.Name:
		return w.addSnapshot(ctx, sh, streamSeq, redelivered, b)
	case chschema.TCPDrops.Name:
		return w.addDrops(ctx, sh, streamSeq, redelivered, b)
	}
	return fmt.Errorf("no table for kind %q", kind)
}

func (w *Writer) addEvents(ctx context.Context, sh *shard, streamSeq uint64, redelivered bool, b *eventpb.Batch) error {
	t := &sh.events
	var stored map[uint32]bool
	if redelivered && len(b.Events) > 0 {
		lo, hi := b.Events[0].TimeUnixNano, b.Events[0].TimeUnixNano
		for _, ev := range b.Events {
			lo, hi = min(lo, ev.TimeUnixNano), max(hi, ev.TimeUnixNano)
		}
		var err error
		if stored, err = sh.storedPartitions(ctx, &w.Counters, t.spec, t.name, streamSeq, lo, hi); err != nil {
			return err
		}
	}
	// Consecutive events share a partition: look it and its buffer up once
	// per run, [lo, hi) being its time range (ns).
	var r *eventRows // nil: the rows of partition p are stored already
	var lo, hi uint64
	for _, ev := range b.Events {
		if ns := ev.TimeUnixNano; ns < lo || ns >= hi {
			p := t.spec.PartitionOf(int64(ns))
			start, end := t.spec.PartitionBounds(p)
			lo, hi = uint64(start)*1e9, uint64(end)*1e9
			r = nil
			if !stored[p] {
				r = t.rows(p)
			}
		}
		if r == nil {
			w.Counters.RowsDuplicate++
			continue
		}
		r.add(b.Host, b.ProbeId, streamSeq, ev, &w.addrs)
		t.buffered++
	}
	return nil
}

func (w *Writer) addConnections(ctx context.Context, sh *shard, streamSeq uint64, redelivered bool, b *eventpb.Batch) error {
	t := &sh.conns
	var stored map[uint32]bool
	if redelivered && len(b.Connections) > 0 {
		lo, hi := b.Connections[0].TimeUnixNano, b.Connections[0].TimeUnixNano
		for _, c := range b.Connections {
			lo, hi = min(lo, c.TimeUnixNano), max(hi, c.TimeUnixNano)
		}
		var err error
		if stored, err = sh.storedPartitions(ctx, &w.Counters, t.spec, t.name, streamSeq, lo, hi); err != nil {
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
func (w *Writer) addSnapshot(ctx context.Context, sh *shard, streamSeq uint64, redelivered bool, b *eventpb.Batch) error {
	t, s := &sh.snaps, b.Snapshot
	if s == nil {
		return nil
	}
	n := 1 + len(s.Groups) + len(s.CloseWait) + len(s.Endpoints)
	p := t.spec.PartitionOf(int64(s.TimeUnixNano))
	if redelivered {
		stored, err := sh.storedPartitions(ctx, &w.Counters, t.spec, t.name, streamSeq, s.TimeUnixNano, s.TimeUnixNano)
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

// addDrops: a drop message is one interval, so its rows share a time and
// a partition but at a day's end.
func (w *Writer) addDrops(ctx context.Context, sh *shard, streamSeq uint64, redelivered bool, b *eventpb.Batch) error {
	t := &sh.drops
	var stored map[uint32]bool
	if redelivered && len(b.Drops) > 0 {
		lo, hi := b.Drops[0].EndUnixNano, b.Drops[0].EndUnixNano
		for _, d := range b.Drops {
			lo, hi = min(lo, d.EndUnixNano), max(hi, d.EndUnixNano)
		}
		var err error
		if stored, err = sh.storedPartitions(ctx, &w.Counters, t.spec, t.name, streamSeq, lo, hi); err != nil {
			return err
		}
	}
	for _, d := range b.Drops {
		p := t.spec.PartitionOf(int64(d.EndUnixNano))
		if stored[p] {
			w.Counters.RowsDuplicate++
			continue
		}
		t.rows(p).add(b.Host, b.ProbeId, streamSeq, b.BatchSeq, d, &w.addrs)
		t.buffered++
	}
	return nil
}

// AddAlert buffers the row of one alert message; like Add otherwise.
func (w *Writer) AddAlert(ctx context.Context, streamSeq uint64, redelivered bool, a *AlertMessage) error {
	sh := w.shard(a.Host)
	t := &sh.alerts
	ns := a.SentAt.UnixNano()
	p := t.spec.PartitionOf(ns)
	if redelivered {
		stored, err := sh.storedPartitions(ctx, &w.Counters, t.spec, t.name, streamSeq, uint64(ns), uint64(ns))
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
func (w *Writer) Flush(ctx context.Context) error { return flushShards(ctx, w.shards, &w.Counters) }

func flush[B rowBuffer](ctx context.Context, w inserter, c *Counters, t *table[B]) error {
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
			n, err := w.countStored(ctx, c, t.spec, t.name, p, st.msgs)
			if err != nil {
				return err
			}
			switch {
			case n == uint64(st.rows):
				landed = true
				w.log.Info("rows stored by an INSERT whose reply was lost; not inserting again", "table", t.spec.Name, "partition", p, "rows", n)
				c.RowsDuplicate += n
			case n != 0:
				// One INSERT into one partition is one part: this cannot happen
				// unless something else writes these stream sequences.
				return fmt.Errorf("partition %d of %s holds %d of %d rows of a failed INSERT; refusing to guess (messages %d..%d)",
					p, t.name, n, st.rows, st.msgs[0], st.msgs[len(st.msgs)-1])
			}
		}
		if !landed {
			start := time.Now()
			if err := w.insert(ctx, t.insert, t.spec, r); err != nil {
				st.uncertain = true
				c.InsertErrors++
				return fmt.Errorf("insert %d rows into %s (partition %d): %w", st.rows, t.name, p, err)
			}
			c.RowsInserted += uint64(st.rows)
			c.Inserts++
			if w.observe != nil {
				w.observe(t.spec.Name, time.Since(start))
			}
		}
		t.buffered -= st.rows
		delete(t.parts, p)
		r.reset()
		t.spare = append(t.spare, r)
	}
	return nil
}

// ordered is a row buffer that can list its rows in the table's sort order
// (see eventRows.order).
type ordered interface {
	order() []span
}

// insert is one INSERT of r's rows: one block, in the table's sort order
// when r can give it (see ordered).
func (w inserter) insert(ctx context.Context, insert string, spec *chschema.Table, r rowBuffer) error {
	var spans []span
	if o, ok := r.(ordered); ok {
		spans = o.order()
	}
	w.batches.mu.Lock()
	defer w.batches.mu.Unlock()
	// The batch is kept only if this INSERT succeeds: after any error the
	// next one starts from a new batch.
	ob := w.batches.open[insert]
	delete(w.batches.open, insert)
	if ob == nil || !sameContext(ob.ctx, ctx) {
		if ob != nil {
			_ = ob.b.Abort() // sent already: only releases what it may hold
		}
		b, err := w.conn.PrepareBatch(ctx, insert)
		if err != nil {
			return err
		}
		ob = &openBatch{ctx: ctx, b: b, cols: b.Columns()}
		if len(ob.cols) != len(spec.Columns) {
			_ = b.Abort()
			return fmt.Errorf("INSERT into %s has %d columns, want %d", spec.Name, len(ob.cols), len(spec.Columns))
		}
	}
	for i, v := range r.values() {
		col := ob.cols[i]
		col.Reset() // the previous INSERT's rows; the memory stays
		var err error
		if spans == nil {
			_, err = col.Append(v)
		} else {
			for _, s := range spans {
				if _, err = col.Append(subslice(v, s)); err != nil {
					break
				}
			}
		}
		if err != nil {
			_ = ob.b.Abort()
			return fmt.Errorf("column %s: %w", spec.Columns[i].Name, err)
		}
	}
	if err := ob.b.Send(); err != nil {
		return err
	}
	w.batches.open[insert] = ob
	return nil
}

// sameContext says whether a and b are the same context (a batch sends with
// the context it was prepared with: one that has ended would fail every
// INSERT after it).
func sameContext(a, b context.Context) bool {
	ta := reflect.TypeOf(a)
	return ta == reflect.TypeOf(b) && ta.Comparable() && a == b
}

// subslice is rows s of column v, one of the slices values returns.
func subslice(v any, s span) any {
	switch v := v.(type) {
	case []string:
		return v[s.lo:s.hi]
	case []uint64:
		return v[s.lo:s.hi]
	case []uint32:
		return v[s.lo:s.hi]
	case []uint16:
		return v[s.lo:s.hi]
	case []int32:
		return v[s.lo:s.hi]
	case []int8:
		return v[s.lo:s.hi]
	case []time.Time:
		return v[s.lo:s.hi]
	}
	return reflect.ValueOf(v).Slice(s.lo, s.hi).Interface()
}

// storedPartitions returns the partitions of table that already hold rows
// of message streamSeq. The time range [lo, hi] (ns) of its rows lets the
// server skip every other partition.
func (w inserter) storedPartitions(ctx context.Context, c *Counters, spec *chschema.Table, table string, streamSeq, lo, hi uint64) (map[uint32]bool, error) {
	q := fmt.Sprintf("SELECT DISTINCT %s FROM %s WHERE %s >= toDateTime(%d) AND %s <= toDateTime(%d) AND stream_seq = %d",
		spec.PartitionBy(), table, spec.TimeColumn, lo/1e9, spec.TimeColumn, hi/1e9+1, streamSeq)
	c.Lookups++
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
func (w inserter) countStored(ctx context.Context, c *Counters, spec *chschema.Table, table string, p uint32, msgs []uint64) (uint64, error) {
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
	c.Lookups++
	if err := w.conn.QueryRow(ctx, q).Scan(&n); err != nil {
		return 0, fmt.Errorf("count rows of a failed INSERT in %s (partition %d): %w", table, p, err)
	}
	return n, nil
}
