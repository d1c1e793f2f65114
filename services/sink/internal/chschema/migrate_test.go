package chschema

import (
	"context"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2/lib/driver"

	"github.com/netpulse/netpulse/lib/testutil/chtest"
)

var srv *chtest.Server

func TestMain(m *testing.M) { chtest.Main(m, &srv) }

// probe returns the test server's features and a connection to a fresh
// database.
func probe(t *testing.T) (driver.Conn, Features, string) {
	t.Helper()
	db := srv.NewDatabase(t)
	conn := srv.Conn(t, "")
	f, err := Probe(context.Background(), conn)
	if err != nil {
		t.Fatalf("Probe: %v", err)
	}
	return conn, f, db
}

func TestProbe(t *testing.T) {
	_, f, _ := probe(t)
	major, _ := strconv.Atoi(strings.SplitN(f.Version, ".", 2)[0])
	switch {
	case major == 18:
		// Debian's 18.16: LowCardinality is listed but experimental.
		if f != (Features{Version: f.Version}) {
			t.Errorf("Probe on %s = %+v, want every feature off", f.Version, f)
		}
	case major >= 22:
		if want := (Features{true, true, true, true, f.Version}); f != want {
			t.Errorf("Probe on %s = %+v, want every feature on", f.Version, f)
		}
	default:
		t.Logf("Probe on %s = %+v (no expectation for this release)", f.Version, f)
	}
	if f.Version == "" {
		t.Error("Probe left Version empty")
	}
}

// describe lists a table's columns as "name type", in order.
func describe(t *testing.T, conn driver.Conn, db, table string) []string {
	t.Helper()
	// DESCRIBE keeps the table's order (18.16's system.columns has no position).
	rows, err := conn.Query(context.Background(), "DESCRIBE TABLE "+db+"."+table)
	if err != nil {
		t.Fatalf("describe %s.%s: %v", db, table, err)
	}
	defer rows.Close()
	var cols []string
	for rows.Next() {
		// All String; how many depends on the release.
		vals := make([]any, len(rows.Columns()))
		for i := range vals {
			vals[i] = new(string)
		}
		if err := rows.Scan(vals...); err != nil {
			t.Fatal(err)
		}
		cols = append(cols, *vals[0].(*string)+" "+*vals[1].(*string))
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	return cols
}

func showCreate(t *testing.T, conn driver.Conn, db, table string) string {
	t.Helper()
	var stmt string
	if err := conn.QueryRow(context.Background(), "SHOW CREATE TABLE "+db+"."+table).Scan(&stmt); err != nil {
		t.Fatalf("SHOW CREATE TABLE %s.%s: %v", db, table, err)
	}
	return stmt
}

// wantColumns is what system.columns should say for tcp_events on f.
func wantColumns(f Features) []string {
	var cols []string
	for _, c := range TCPEvents.Columns {
		cols = append(cols, c.Name+" "+c.Type(f))
	}
	return cols
}

func TestMigrateIsIdempotent(t *testing.T) {
	conn, f, db := probe(t)
	ctx := context.Background()
	o := Options{Database: db, TTLDays: 30} // no TTL where the server has none

	if err := Migrate(ctx, conn, f, o); err != nil {
		t.Fatalf("first Migrate: %v", err)
	}
	first := showCreate(t, conn, db, "tcp_events")
	if err := Migrate(ctx, conn, f, o); err != nil {
		t.Fatalf("second Migrate: %v", err)
	}
	if second := showCreate(t, conn, db, "tcp_events"); second != first {
		t.Errorf("second Migrate changed the table:\nbefore %s\nafter  %s", first, second)
	}
	if got, want := describe(t, conn, db, "tcp_events"), wantColumns(f); !slices.Equal(got, want) {
		t.Errorf("columns\n got %q\nwant %q", got, want)
	}
	if strings.Contains(first, "TTL") != f.TTL {
		t.Errorf("TTL support %v but table is %s", f.TTL, first)
	}
}

// TestInsertAndReadBack writes one row the way the sink does (explicit
// column list from ColumnNames, PrepareBatch) and reads it back.
func TestInsertAndReadBack(t *testing.T) {
	conn, f, db := probe(t)
	ctx := context.Background()
	if err := Migrate(ctx, conn, f, Options{Database: db}); err != nil {
		t.Fatalf("Migrate: %v", err)
	}

	ts := time.Date(2026, 11, 24, 18, 30, 15, 123456789, time.UTC)
	row := []any{
		ts, uint64(ts.UnixNano()), "host-a", "state_change", uint32(4242), uint32(4243), "curl",
		"ipv6", "::1", uint16(40000), "2001:db8::1", uint16(443), "SYN_SENT", "ESTABLISHED",
		uint64(1234), uint64(0xffff8880deadbeef), "probe-1", uint64(7), uint64(99),
	}
	cols := TCPEvents.ColumnNames()
	if len(row) != len(cols) {
		t.Fatalf("test row has %d values for %d columns", len(row), len(cols))
	}
	list := strings.Join(cols, ", ")
	batch, err := conn.PrepareBatch(ctx, fmt.Sprintf("INSERT INTO %s.tcp_events (%s)", db, list))
	if err != nil {
		t.Fatalf("PrepareBatch: %v", err)
	}
	if err := batch.Append(row...); err != nil {
		t.Fatalf("Append: %v", err)
	}
	if err := batch.Send(); err != nil {
		t.Fatalf("Send: %v", err)
	}

	var (
		gotTime                  time.Time
		timeNs, dur, sock, seq   uint64
		streamSeq                uint64
		host, typ, comm, family  string
		saddr, daddr, old, state string
		probeID                  string
		pid, tid                 uint32
		sport, dport             uint16
	)
	err = conn.QueryRow(ctx, fmt.Sprintf("SELECT %s FROM %s.tcp_events", list, db)).Scan(
		&gotTime, &timeNs, &host, &typ, &pid, &tid, &comm, &family, &saddr, &sport, &daddr, &dport,
		&old, &state, &dur, &sock, &probeID, &seq, &streamSeq)
	if err != nil {
		t.Fatalf("read back: %v", err)
	}
	got := []any{
		gotTime.UTC(), timeNs, host, typ, pid, tid, comm, family, saddr, sport, daddr, dport,
		old, state, dur, sock, probeID, seq, streamSeq,
	}
	want := slices.Clone(row)
	if !f.DateTime64 {
		want[0] = ts.Truncate(time.Second) // DateTime has seconds; time_ns keeps the rest
	}
	for i := range want {
		if got[i] != want[i] {
			t.Errorf("%s: read back %v, wrote %v", cols[i], got[i], want[i])
		}
	}

	var partition string
	err = conn.QueryRow(ctx, "SELECT partition FROM system.parts WHERE database = ? AND table = 'tcp_events' AND active", db).Scan(&partition)
	if err != nil {
		t.Fatal(err)
	}
	if want := ts.Format("20060102"); partition != want {
		t.Errorf("row landed in partition %s, want the UTC day %s", partition, want)
	}
}

// TestMigrateAddsMissingColumns upgrades a table made by an older sink: it
// lacks a column in the middle and the last three.
func TestMigrateAddsMissingColumns(t *testing.T) {
	conn, f, db := probe(t)
	ctx := context.Background()
	o := Options{Database: db}
	old := TCPEvents
	old.Columns = slices.DeleteFunc(slices.Clone(old.Columns), func(c Column) bool {
		return c.Name == "comm" || c.Name == "probe_id" || c.Name == "seq" || c.Name == "stream_seq"
	})
	if err := conn.Exec(ctx, "CREATE DATABASE IF NOT EXISTS "+db); err != nil {
		t.Fatal(err)
	}
	if err := conn.Exec(ctx, old.Create(f, o)); err != nil {
		t.Fatalf("create old table: %v", err)
	}
	insert := fmt.Sprintf("INSERT INTO %s.tcp_events (time, time_ns, host, type) VALUES", db)
	batch, err := conn.PrepareBatch(ctx, insert)
	if err != nil {
		t.Fatal(err)
	}
	if err := batch.Append(time.Unix(1, 0), uint64(1e9), "h", "retransmit"); err != nil {
		t.Fatal(err)
	}
	if err := batch.Send(); err != nil {
		t.Fatalf("insert into old table: %v", err)
	}

	if err := Migrate(ctx, conn, f, o); err != nil {
		t.Fatalf("Migrate: %v", err)
	}
	if got, want := describe(t, conn, db, "tcp_events"), wantColumns(f); !slices.Equal(got, want) {
		t.Errorf("columns after Migrate\n got %q\nwant %q", got, want)
	}
	var comm, probeID string
	var seq, streamSeq uint64
	err = conn.QueryRow(ctx, fmt.Sprintf("SELECT comm, probe_id, seq, stream_seq FROM %s.tcp_events", db)).
		Scan(&comm, &probeID, &seq, &streamSeq)
	if err != nil {
		t.Fatalf("read old row: %v", err)
	}
	if comm != "" || probeID != "" || seq != 0 || streamSeq != 0 {
		t.Errorf("old row's new columns = %q %q %d %d, want defaults", comm, probeID, seq, streamSeq)
	}

	before := showCreate(t, conn, db, "tcp_events")
	if err := Migrate(ctx, conn, f, o); err != nil {
		t.Fatalf("second Migrate: %v", err)
	}
	if after := showCreate(t, conn, db, "tcp_events"); after != before {
		t.Errorf("second Migrate changed the table:\nbefore %s\nafter  %s", before, after)
	}
}

func TestMigrateRejectsNegativeTTL(t *testing.T) {
	conn, f, db := probe(t)
	err := Migrate(context.Background(), conn, f, Options{Database: db, TTLDays: -1})
	if err == nil || !strings.Contains(err.Error(), "-1 days") {
		t.Fatalf("Migrate with TTLDays -1 = %v, want an error naming it", err)
	}
}

// TestMigrateNamesTheFailingStatement runs the modern rendering on a server
// without those features (skipped where it has them).
func TestMigrateNamesTheFailingStatement(t *testing.T) {
	conn, f, db := probe(t)
	if f.DateTime64 {
		t.Skip("server has DateTime64: the modern rendering succeeds")
	}
	err := Migrate(context.Background(), conn, Modern, Options{Database: db})
	if err == nil || !strings.Contains(err.Error(), "create table "+db+".tcp_events") {
		t.Fatalf("Migrate of the modern rendering on %s = %v, want an error naming the table", f.Version, err)
	}
}
