package e2e

import (
	"context"
	"regexp"
	"strconv"
	"testing"
	"time"
)

// Three sinks share the stream through one durable consumer. Mid-load one
// is killed -9 and the others are restarted one after the other (SIGTERM,
// as a rolling update does); the dead one comes back later. Every record
// the probe published is stored exactly once, and each sink stored a share.
func TestSinksShareTheStream(t *testing.T) {
	p := newPipeline(t)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	stats := p.statsWatcher(t)
	// A short ack_wait: the dead sink's messages come back to the others
	// 15 s after their last extension.
	sinkArgs := []string{"--consumer.ack_wait=15s", "--stats.interval=500ms"}
	var sinks [3]*proc
	for i := range sinks {
		sinks[i] = p.startSink(ctx, sinkArgs...)
	}
	var stopped []*proc // sinks that ended, for their logs and counters
	t.Cleanup(func() {
		if t.Failed() {
			for i, s := range append(stopped, sinks[:]...) {
				t.Logf("sink %d log:\n%s", i, s.log())
			}
		}
	})
	probe := p.startProbe(ctx)

	loadDone := make(chan struct{})
	go func() {
		defer close(loadDone)
		connect(t, "tcp4", "127.0.0.1:0", 30000, 8)
	}()
	const events = "SELECT count() FROM tcp_events WHERE host = ?"
	p.waitRows(ctx, 20000, events, p.host)
	// Killed once it has stored a share, in the middle of more.
	sinks[1].waitLine(ctx, "rows inserted", func(l string) bool { return lastCounter(l, "rows_inserted") > 0 })
	sinks[1].kill(killSignal)
	killedAt := p.uint64(events, p.host)
	dead := sinks[1]
	// The rolling restart, while the load runs and sink 1 is down: each
	// stops cleanly (stores and acks what it holds) and starts again.
	for _, i := range []int{0, 2} {
		before := p.uint64(events, p.host)
		p.waitRows(ctx, before+5000, events, p.host) // it is in the middle of work
		sinks[i].stop()
		stopped = append(stopped, sinks[i])
		sinks[i] = p.startSink(ctx, sinkArgs...)
	}
	<-loadDone
	sinks[1] = p.startSink(ctx, sinkArgs...)
	probe.stop()
	last := stats(2 * time.Second)
	t.Logf("sink 1 killed with %d rows stored", killedAt)
	p.storedOnce(ctx, last, 300000)
	if t.Failed() {
		p.explainDuplicates()
	}

	var lookups, duplicates uint64
	for _, s := range append(stopped, sinks[:]...) {
		lookups += lastCounter(s.log(), "lookups")
		duplicates += lastCounter(s.log(), "rows_duplicate")
	}
	t.Logf("redelivered messages looked up: %d; rows found stored already and skipped: %d", lookups, duplicates)
	if lookups == 0 {
		t.Error("no redelivered message was looked up: the dead sink's messages did not come back to the others")
	}
	// Each of the first three sinks stored rows before it ended.
	for i, s := range []*proc{stopped[0], dead, stopped[1]} {
		if n := lastCounter(s.log(), "rows_inserted"); n == 0 {
			t.Errorf("sink %d (first run) inserted no rows: the consumer did not share the messages", i)
		} else {
			t.Logf("sink %d (first run) inserted %d rows", i, n)
		}
	}
}

// lastCounter is the largest value of counter in a service's stats lines.
func lastCounter(log, counter string) uint64 {
	var n uint64
	for _, m := range regexp.MustCompile(`\b`+counter+`=(\d+)`).FindAllStringSubmatch(log, -1) {
		v, _ := strconv.ParseUint(m[1], 10, 64)
		n = max(n, v)
	}
	return n
}

// explainDuplicates logs records stored twice (with the stream sequences
// of their messages) and records missing, to tell a sink's fault from the
// stream's.
func (p *pipeline) explainDuplicates() {
	ctx := context.Background()
	for _, table := range []string{"tcp_events", "tcp_connections"} {
		var n uint64
		_ = p.ch.QueryRow(ctx, "SELECT count() - uniqExact(seq) FROM "+table+" WHERE host = ?", p.host).Scan(&n)
		p.t.Logf("%s: %d rows stored twice", table, n)
		rows, err := p.ch.Query(ctx, `SELECT seq, groupArray(stream_seq) FROM `+table+` WHERE host = ?
			GROUP BY seq HAVING count() > 1 ORDER BY seq LIMIT 5`, p.host)
		if err != nil {
			p.t.Log(err)
			return
		}
		for rows.Next() {
			var seq uint64
			var streamSeqs []uint64
			if err := rows.Scan(&seq, &streamSeqs); err == nil {
				p.t.Logf("%s: seq %d stored %d times, from stream_seq %v", table, seq, len(streamSeqs), streamSeqs)
			}
		}
		rows.Close()
	}
	rows, err := p.ch.Query(ctx, `SELECT seq FROM (SELECT seq FROM tcp_events WHERE host = ? UNION ALL SELECT seq FROM tcp_connections WHERE host = ?) GROUP BY seq ORDER BY seq`, p.host, p.host)
	if err != nil {
		p.t.Log(err)
		return
	}
	defer rows.Close()
	var prev uint64
	gaps := 0
	for rows.Next() {
		var seq uint64
		if rows.Scan(&seq) != nil {
			continue
		}
		if seq > prev+1 && gaps < 10 {
			gaps++
			p.t.Logf("records %d..%d missing", prev+1, seq-1)
		}
		prev = seq
	}
}
