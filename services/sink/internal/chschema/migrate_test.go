package chschema

import (
	"context"
	"fmt"
	"maps"
	"os"
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

// wantColumns is what DESCRIBE should say for table on f.
func wantColumns(table *Table, f Features) []string {
	var cols []string
	for _, c := range table.Columns {
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
	first := map[string]string{}
	for _, table := range Tables {
		first[table.Name] = showCreate(t, conn, db, table.Name)
	}
	if err := Migrate(ctx, conn, f, o); err != nil {
		t.Fatalf("second Migrate: %v", err)
	}
	for _, table := range Tables {
		if second := showCreate(t, conn, db, table.Name); second != first[table.Name] {
			t.Errorf("second Migrate changed %s:\nbefore %s\nafter  %s", table.Name, first[table.Name], second)
		}
		if got, want := describe(t, conn, db, table.Name), wantColumns(table, f); !slices.Equal(got, want) {
			t.Errorf("columns of %s\n got %q\nwant %q", table.Name, got, want)
		}
		if strings.Contains(first[table.Name], "TTL") != f.TTL {
			t.Errorf("TTL support %v but table is %s", f.TTL, first[table.Name])
		}
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
		ts, uint64(ts.UnixNano()), "host-a", "connect_failed", uint32(4242), uint32(4243), "curl",
		"ipv6", "::1", uint16(40000), "2001:db8::1", uint16(443), "SYN_SENT", "CLOSE",
		uint64(1234), uint64(0xffff8880deadbeef), "listener", uint64(8812), int32(111), uint64(2500), uint32(2),
		"client", uint32(3), uint64(0x4000000000001234), uint32(3000000000), "probe-1", uint64(7), uint64(99),
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
		gotTime                         time.Time
		timeNs, dur, sock, seq          uint64
		streamSeq, cgroup, hsUs, cookie uint64
		host, typ, comm, family         string
		saddr, daddr, old, state        string
		probeID, owner, side            string
		pid, tid, hsRetrans, segments   uint32
		segsOut                         uint32
		sport, dport                    uint16
		errno                           int32
	)
	err = conn.QueryRow(ctx, fmt.Sprintf("SELECT %s FROM %s.tcp_events", list, db)).Scan(
		&gotTime, &timeNs, &host, &typ, &pid, &tid, &comm, &family, &saddr, &sport, &daddr, &dport,
		&old, &state, &dur, &sock, &owner, &cgroup, &errno, &hsUs, &hsRetrans, &side, &segments, &cookie, &segsOut,
		&probeID, &seq, &streamSeq)
	if err != nil {
		t.Fatalf("read back: %v", err)
	}
	got := []any{
		gotTime.UTC(), timeNs, host, typ, pid, tid, comm, family, saddr, sport, daddr, dport,
		old, state, dur, sock, owner, cgroup, errno, hsUs, hsRetrans, side, segments, cookie, segsOut,
		probeID, seq, streamSeq,
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
	if got, want := describe(t, conn, db, "tcp_events"), wantColumns(&TCPEvents, f); !slices.Equal(got, want) {
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

// TestMigrateFromOlderReleases upgrades tcp_events as earlier releases of
// the sink made it (testdata/tcp_events.<release>.legacy.sql, frozen copies
// of those renderings), holding a row: the columns of newer Event fields
// are added in their place, the row keeps its values and reads defaults in
// them, and the sink's full INSERT works on the migrated table.
func TestMigrateFromOlderReleases(t *testing.T) {
	at := time.Unix(1795000000, 0)
	// Columns a release lacks and the defaults its rows read there.
	sinceV1 := map[string]string{"owner_source": "unknown", "cgroup_id": "0", "error": "0", "handshake_us": "0",
		"handshake_retransmits": "0", "side": "unspecified", "segments": "0", "cookie": "0", "segs_out": "0"}
	sinceV2 := map[string]string{"segs_out": "0"}
	for _, tt := range []struct {
		release string
		columns string // of the old row
		values  []any
		kept    map[string]string // what the old row reads after Migrate, besides the defaults
		added   map[string]string
	}{
		{
			"v1", "time, time_ns, host, type, pid, comm, family, saddr, sport, new_state, sock_id, stream_seq",
			[]any{at, uint64(1795000000123456789), "h1", "state_change", uint32(42), "nginx", "ipv4", "10.0.0.1", uint16(80), "CLOSE_WAIT", uint64(77), uint64(5)},
			map[string]string{"time_ns": "1795000000123456789", "host": "h1", "comm": "nginx", "new_state": "CLOSE_WAIT",
				"saddr": "10.0.0.1", "sock_id": "77", "stream_seq": "5"},
			sinceV1,
		},
		{
			// Before segs_out: a retransmit row with the fields v1 lacked.
			"v2", "time, time_ns, host, type, sock_id, owner_source, cgroup_id, side, segments, cookie, stream_seq",
			[]any{at, uint64(1795000000000000001), "h2", "retransmit", uint64(78), "socket", uint64(600), "server", uint32(4), uint64(0x5000), uint64(6)},
			map[string]string{"time_ns": "1795000000000000001", "host": "h2", "type": "retransmit", "sock_id": "78",
				"owner_source": "socket", "cgroup_id": "600", "side": "server", "segments": "4", "cookie": "20480", "stream_seq": "6"},
			sinceV2,
		},
	} {
		t.Run(tt.release, func(t *testing.T) {
			conn, f, db := probe(t)
			ctx := context.Background()
			old, err := os.ReadFile("testdata/tcp_events." + tt.release + ".legacy.sql")
			if err != nil {
				t.Fatal(err)
			}
			if err := conn.Exec(ctx, "CREATE DATABASE IF NOT EXISTS "+db); err != nil {
				t.Fatal(err)
			}
			create := strings.TrimSuffix(strings.Replace(string(old), "netpulse.tcp_events", db+".tcp_events", 1), ";\n")
			if err := conn.Exec(ctx, create); err != nil {
				t.Fatalf("create the %s table: %v", tt.release, err)
			}
			have := describe(t, conn, db, "tcp_events")
			for c := range tt.added {
				if slices.ContainsFunc(have, func(d string) bool { return strings.HasPrefix(d, c+" ") }) {
					t.Fatalf("the %s table already has %s: not a table of that release", tt.release, c)
				}
			}
			insertRow(t, conn, db+".tcp_events", tt.columns, tt.values...)

			if err := Migrate(ctx, conn, f, Options{Database: db}); err != nil {
				t.Fatalf("Migrate: %v", err)
			}
			if got, want := describe(t, conn, db, "tcp_events"), wantColumns(&TCPEvents, f); !slices.Equal(got, want) {
				t.Errorf("columns after Migrate\n got %q\nwant %q", got, want)
			}
			want := maps.Clone(tt.kept)
			maps.Copy(want, tt.added)
			names := slices.Sorted(maps.Keys(want))
			var exprs []string
			for _, c := range names {
				exprs = append(exprs, "toString("+c+")")
			}
			var got []string
			q := fmt.Sprintf("SELECT [%s] FROM %s.tcp_events", strings.Join(exprs, ", "), db)
			if err := conn.QueryRow(ctx, q).Scan(&got); err != nil {
				t.Fatalf("read the old row: %v", err)
			}
			for i, c := range names {
				if got[i] != want[c] {
					t.Errorf("old row's %s = %q after Migrate, want %q", c, got[i], want[c])
				}
			}

			if err := conn.Exec(ctx, fmt.Sprintf(`INSERT INTO %s.tcp_events (%s) SELECT %s FROM %s.tcp_events`,
				db, strings.Join(TCPEvents.ColumnNames(), ", "), strings.Join(TCPEvents.ColumnNames(), ", "), db)); err != nil {
				t.Fatalf("insert every column into the migrated table: %v", err)
			}
			before := showCreate(t, conn, db, "tcp_events")
			if err := Migrate(ctx, conn, f, Options{Database: db}); err != nil {
				t.Fatalf("second Migrate: %v", err)
			}
			if after := showCreate(t, conn, db, "tcp_events"); after != before {
				t.Errorf("second Migrate changed the table:\nbefore %s\nafter  %s", before, after)
			}
		})
	}
}

// TestMigrateWidensEnums: a table whose Enum8 columns lack values the
// definition has (an older contract) gets them, keeping its rows; 18.16
// does this as a metadata change, even for a column of the sort key.
func TestMigrateWidensEnums(t *testing.T) {
	conn, f, db := probe(t)
	ctx := context.Background()
	o := Options{Database: db}
	narrow := func(typ string, drop ...string) string {
		for _, d := range drop {
			typ = strings.Replace(typ, d, "", 1)
		}
		return typ
	}
	old := SocketSnapshots
	old.Columns = slices.Clone(old.Columns)
	for i, c := range old.Columns {
		switch c.Name {
		case "owner_source":
			old.Columns[i].Modern = narrow(c.Modern, ", 'listener' = 3", ", 'scan' = 4")
		case "row_kind": // in ORDER BY
			old.Columns[i].Modern = narrow(c.Modern, ", 'close_wait' = 2")
		}
	}
	if err := conn.Exec(ctx, "CREATE DATABASE IF NOT EXISTS "+db); err != nil {
		t.Fatal(err)
	}
	if err := conn.Exec(ctx, old.Create(f, o)); err != nil {
		t.Fatalf("create the old table: %v", err)
	}
	if got := describe(t, conn, db, "socket_snapshots"); slices.Equal(got, wantColumns(&SocketSnapshots, f)) {
		t.Fatal("the old table already has the new enum values")
	}
	at := time.Unix(1795000000, 0)
	insertRow(t, conn, db+".socket_snapshots", "time, row_kind, owner_source, pid", at, "group", "socket", uint32(1))
	insertRow(t, conn, db+".socket_snapshots", "time, row_kind, owner_source, pid", at, "summary", "task", uint32(2))
	if err := Migrate(ctx, conn, f, o); err != nil {
		t.Fatalf("Migrate: %v", err)
	}
	if got, want := describe(t, conn, db, "socket_snapshots"), wantColumns(&SocketSnapshots, f); !slices.Equal(got, want) {
		t.Errorf("columns after Migrate\n got %q\nwant %q", got, want)
	}
	insertRow(t, conn, db+".socket_snapshots", "time, row_kind, owner_source, pid", at, "close_wait", "scan", uint32(3))
	var got []string
	rows, err := conn.Query(ctx, fmt.Sprintf("SELECT concat(toString(pid), ' ', toString(row_kind), ' ', toString(owner_source)) FROM %s.socket_snapshots ORDER BY pid", db))
	if err != nil {
		t.Fatal(err)
	}
	for rows.Next() {
		var s string
		if err := rows.Scan(&s); err != nil {
			t.Fatal(err)
		}
		got = append(got, s)
	}
	rows.Close()
	if want := []string{"1 group socket", "2 summary task", "3 close_wait scan"}; !slices.Equal(got, want) {
		t.Errorf("rows after widening %q, want %q", got, want)
	}
}

// TestMigrateRefusesConflictingEnum: an Enum8 whose values clash with the
// definition is not touched, and the error names it.
func TestMigrateRefusesConflictingEnum(t *testing.T) {
	conn, f, db := probe(t)
	ctx := context.Background()
	o := Options{Database: db}
	old := TCPConnections
	old.Columns = slices.Clone(old.Columns)
	for i, c := range old.Columns {
		if c.Name == "side" {
			old.Columns[i].Modern = "Enum8('unspecified' = 0, 'server' = 1)"
		}
	}
	if err := conn.Exec(ctx, "CREATE DATABASE IF NOT EXISTS "+db); err != nil {
		t.Fatal(err)
	}
	if err := conn.Exec(ctx, old.Create(f, o)); err != nil {
		t.Fatal(err)
	}
	err := Migrate(ctx, conn, f, o)
	if err == nil || !strings.Contains(err.Error(), "column side of "+db+".tcp_connections") {
		t.Fatalf("Migrate = %v, want an error naming the conflicting column", err)
	}
}

// insertRow inserts one row the way the sink does (PrepareBatch with a
// column list: 18.16 does not take VALUES through Exec).
func insertRow(t *testing.T, conn driver.Conn, table, columns string, values ...any) {
	t.Helper()
	b, err := conn.PrepareBatch(context.Background(), "INSERT INTO "+table+" ("+columns+")")
	if err != nil {
		t.Fatalf("insert into %s: %v", table, err)
	}
	if err := b.Append(values...); err != nil {
		t.Fatalf("insert into %s: %v", table, err)
	}
	if err := b.Send(); err != nil {
		t.Fatalf("insert into %s: %v", table, err)
	}
}

func TestPartitionOf(t *testing.T) {
	tests := []struct {
		table *Table
		at    time.Time
		want  uint32
		days  int
	}{
		{&TCPEvents, time.Date(2026, 11, 24, 0, 0, 0, 0, time.UTC), 20261124, 1},
		{&TCPEvents, time.Date(2026, 11, 24, 23, 59, 59, 999999999, time.UTC), 20261124, 1},
		{&TCPEvents, time.Date(2026, 11, 25, 0, 30, 0, 0, time.FixedZone("CET", 3600)), 20261124, 1}, // 23:30 UTC
		{&TCPEvents, time.Date(2024, 2, 29, 12, 0, 0, 0, time.UTC), 20240229, 1},
		{&Alerts, time.Date(2024, 2, 29, 12, 0, 0, 0, time.UTC), 202402, 29},
		{&Alerts, time.Date(2026, 12, 31, 23, 59, 59, 0, time.UTC), 202612, 31},
	}
	for _, tt := range tests {
		got := tt.table.PartitionOf(tt.at.UnixNano())
		if got != tt.want {
			t.Errorf("%s.PartitionOf(%s) = %d, want %d", tt.table.Name, tt.at, got, tt.want)
		}
		start, end := tt.table.PartitionBounds(got)
		if s := tt.at.Unix(); s < start || s >= end || end-start != int64(tt.days)*86400 {
			t.Errorf("%s.PartitionBounds(%d) = [%d, %d), does not hold %s or is not %d days", tt.table.Name, got, start, end, tt.at, tt.days)
		}
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
