package chschema

import (
	"flag"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/AfterShip/clickhouse-sql-parser/parser"
)

var update = flag.Bool("update", false, "rewrite testdata/*.sql from the current rendering")

// goldenOptions are the options the golden files are rendered with.
var goldenOptions = Options{Database: "netpulse", TTLDays: 30}

func TestGolden(t *testing.T) {
	for _, tt := range []struct {
		name string
		f    Features
	}{
		{"legacy", Features{}},
		{"modern", Modern},
	} {
		t.Run(tt.name, func(t *testing.T) {
			for _, table := range Tables {
				path := filepath.Join("testdata", table.Name+"."+tt.name+".sql")
				got := golden(table, tt.f)
				if *update {
					if err := os.WriteFile(path, []byte(got), 0o644); err != nil {
						t.Fatal(err)
					}
				}
				want, err := os.ReadFile(path)
				if err != nil {
					t.Fatalf("%v (run go test -update to create it)", err)
				}
				if got != string(want) {
					t.Errorf("%s rendering of %s differs from %s (go test -update rewrites it):\n%s",
						tt.name, table.Name, path, got)
				}
			}
		})
	}
}

// golden is a table's rendering as testdata/ keeps it: its Doc as a
// comment, then the CREATE statement.
func golden(table *Table, f Features) string {
	var b strings.Builder
	for line := range strings.Lines(table.Doc) {
		b.WriteString(strings.TrimRight("-- "+line, " \n") + "\n")
	}
	return b.String() + table.Create(f, goldenOptions) + ";\n"
}

// Every table says what its rows are.
func TestTablesAreDocumented(t *testing.T) {
	for _, table := range Tables {
		if len(table.Doc) < 100 {
			t.Errorf("%s: Doc %q does not say what a row is and why the layout", table.Name, table.Doc)
		}
	}
}

func TestRender(t *testing.T) {
	got := Render(Features{}, Options{})
	if len(got) != 1+len(Tables) {
		t.Fatalf("Render returned %d statements, want %d", len(got), 1+len(Tables))
	}
	if got[0] != "CREATE DATABASE IF NOT EXISTS netpulse" {
		t.Errorf("first statement = %q, want the default database created", got[0])
	}
	if !strings.HasPrefix(got[1], "CREATE TABLE IF NOT EXISTS netpulse.tcp_events\n") {
		t.Errorf("second statement starts %q", strings.SplitN(got[1], "\n", 2)[0])
	}

	odd := Render(Features{}, Options{Database: "net-pulse`x"})
	if odd[0] != "CREATE DATABASE IF NOT EXISTS `net-pulse\\`x`" {
		t.Errorf("odd database name rendered as %q", odd[0])
	}
	if !slices.Equal(Render(Modern, goldenOptions), Render(Modern, goldenOptions)) {
		t.Error("Render is not deterministic")
	}
}

func TestColumnTypePerFeature(t *testing.T) {
	lcOnly := Features{LowCardinality: true} // a 19.x server: LowCardinality, no DateTime64
	for _, tt := range []struct {
		col  string
		f    Features
		want string
	}{
		{"time", Features{}, "DateTime('UTC')"},
		{"time", lcOnly, "DateTime('UTC')"},
		{"time", Modern, "DateTime64(9, 'UTC')"},
		{"host", Features{}, "String"},
		{"host", lcOnly, "LowCardinality(String)"},
		{"pid", Features{}, "UInt32"},
		{"pid", Modern, "UInt32"},
	} {
		c, ok := TCPEvents.Column(tt.col)
		if !ok {
			t.Fatalf("tcp_events has no column %s", tt.col)
		}
		if got := c.Type(tt.f); got != tt.want {
			t.Errorf("%s.Type(%+v) = %q, want %q", tt.col, tt.f, got, tt.want)
		}
	}
	// Codecs follow their own feature, not the types'.
	c, _ := TCPEvents.Column("time")
	if got := c.def(Features{DateTime64: true}, 0); got != "time DateTime64(9, 'UTC')" {
		t.Errorf("def without codecs = %q", got)
	}
}

// colSpec is one column as the issue specifies it: written out here,
// independently of the Table definitions, and compared with what a
// ClickHouse SQL parser reads back from the rendering.
type colSpec struct {
	name, modern, legacy string
	codec                []string // codec chain, modern only
}

// tableSpec is a table as the issues specify it.
type tableSpec struct {
	name      string
	partition string   // function of the time column
	timeCol   string   // partition key and TTL base
	orderBy   []string // identifiers, or "expr:" and the parser's text
	columns   []colSpec
}

var (
	seqCodec   = []string{"Delta", "ZSTD(1)"}
	smallCodec = []string{"T64", "ZSTD(1)"}
	zstd       = []string{"ZSTD(1)"}
)

var specTCPEvents = tableSpec{"tcp_events", "toYYYYMMDD", "time", []string{"host", "type", "time"}, []colSpec{
	{"time", "DateTime64(9,'UTC')", "DateTime('UTC')", seqCodec},
	{"time_ns", "UInt64", "UInt64", seqCodec},
	{"host", "LowCardinality(String)", "String", zstd},
	{"type", "LowCardinality(String)", "String", zstd},
	{"pid", "UInt32", "UInt32", smallCodec},
	{"tid", "UInt32", "UInt32", smallCodec},
	{"comm", "LowCardinality(String)", "String", zstd},
	{"family", "Enum8", "Enum8", nil},
	{"saddr", "String", "String", zstd},
	{"sport", "UInt16", "UInt16", smallCodec},
	{"daddr", "String", "String", zstd},
	{"dport", "UInt16", "UInt16", smallCodec},
	{"old_state", "Enum8", "Enum8", nil},
	{"new_state", "Enum8", "Enum8", nil},
	{"state_duration_us", "UInt64", "UInt64", smallCodec},
	{"sock_id", "UInt64", "UInt64", zstd},
	{"owner_source", "Enum8", "Enum8", nil},
	{"cgroup_id", "UInt64", "UInt64", smallCodec},
	{"error", "Int32", "Int32", smallCodec},
	{"handshake_us", "UInt64", "UInt64", smallCodec},
	{"handshake_retransmits", "UInt32", "UInt32", smallCodec},
	{"side", "Enum8", "Enum8", nil},
	{"segments", "UInt32", "UInt32", smallCodec},
	{"cookie", "UInt64", "UInt64", zstd},
	{"segs_out", "UInt32", "UInt32", smallCodec},
	{"probe_id", "LowCardinality(String)", "String", zstd},
	{"seq", "UInt64", "UInt64", seqCodec},
	{"stream_seq", "UInt64", "UInt64", seqCodec},
}}

var specTCPConnections = tableSpec{"tcp_connections", "toYYYYMMDD", "time",
	[]string{"host", "expr:toStartOfHour(time)", "comm", "daddr", "time"}, []colSpec{
		{"time", "DateTime64(9,'UTC')", "DateTime('UTC')", seqCodec},
		{"time_ns", "UInt64", "UInt64", seqCodec},
		{"host", "LowCardinality(String)", "String", zstd},
		{"pid", "UInt32", "UInt32", smallCodec},
		{"comm", "LowCardinality(String)", "String", zstd},
		{"cgroup_id", "UInt64", "UInt64", smallCodec},
		{"owner_source", "Enum8", "Enum8", nil},
		{"side", "Enum8", "Enum8", nil},
		{"family", "Enum8", "Enum8", nil},
		{"saddr", "String", "String", zstd},
		{"sport", "UInt16", "UInt16", smallCodec},
		{"daddr", "String", "String", zstd},
		{"dport", "UInt16", "UInt16", smallCodec},
		{"start_time", "DateTime64(9,'UTC')", "DateTime('UTC')", seqCodec},
		{"start_ns", "UInt64", "UInt64", seqCodec},
		{"duration_us", "UInt64", "UInt64", smallCodec},
		{"bytes_sent", "UInt64", "UInt64", smallCodec},
		{"bytes_received", "UInt64", "UInt64", smallCodec},
		{"segments_out", "UInt32", "UInt32", smallCodec},
		{"segments_in", "UInt32", "UInt32", smallCodec},
		{"retransmits", "UInt32", "UInt32", smallCodec},
		{"srtt_us", "UInt32", "UInt32", smallCodec},
		{"handshake_us", "UInt64", "UInt64", smallCodec},
		{"handshake_retransmits", "UInt32", "UInt32", smallCodec},
		{"last_state", "Enum8", "Enum8", nil},
		{"error", "Int32", "Int32", smallCodec},
		{"sock_id", "UInt64", "UInt64", zstd},
		{"cookie", "UInt64", "UInt64", zstd},
		{"probe_id", "LowCardinality(String)", "String", zstd},
		{"seq", "UInt64", "UInt64", seqCodec},
		{"stream_seq", "UInt64", "UInt64", seqCodec},
	}}

var specSocketSnapshots = tableSpec{"socket_snapshots", "toYYYYMMDD", "time",
	[]string{"host", "row_kind", "state", "time"}, []colSpec{
		{"time", "DateTime64(9,'UTC')", "DateTime('UTC')", seqCodec},
		{"time_ns", "UInt64", "UInt64", seqCodec},
		{"host", "LowCardinality(String)", "String", zstd},
		{"row_kind", "Enum8", "Enum8", nil},
		{"state", "Enum8", "Enum8", nil},
		{"pid", "UInt32", "UInt32", smallCodec},
		{"comm", "LowCardinality(String)", "String", zstd},
		{"cgroup_id", "UInt64", "UInt64", smallCodec},
		{"owner_source", "Enum8", "Enum8", nil},
		{"side", "Enum8", "Enum8", nil},
		{"local_port", "UInt16", "UInt16", smallCodec},
		{"count", "UInt32", "UInt32", smallCodec},
		{"family", "Enum8", "Enum8", nil},
		{"saddr", "String", "String", zstd},
		{"daddr", "String", "String", zstd},
		{"dport", "UInt16", "UInt16", smallCodec},
		{"sock_id", "UInt64", "UInt64", zstd},
		{"cookie", "UInt64", "UInt64", zstd},
		{"age_us", "UInt64", "UInt64", smallCodec},
		{"age_estimated", "UInt8", "UInt8", nil},
		{"recv_queue", "UInt32", "UInt32", smallCodec},
		{"groups_cut", "UInt32", "UInt32", smallCodec},
		{"close_wait_total", "UInt32", "UInt32", smallCodec},
		{"close_wait_cut", "UInt32", "UInt32", smallCodec},
		{"sockets_total", "UInt32", "UInt32", smallCodec},
		{"seeded", "UInt8", "UInt8", nil},
		{"tcp_out_segs", "UInt64", "UInt64", seqCodec},
		{"tcp_retrans_segs", "UInt64", "UInt64", seqCodec},
		{"interval_ms", "UInt32", "UInt32", smallCodec},
		{"time_wait", "UInt32", "UInt32", smallCodec},
		{"fin_wait2", "UInt32", "UInt32", smallCodec},
		{"live", "UInt32", "UInt32", smallCodec},
		{"time_wait_entered", "UInt64", "UInt64", smallCodec},
		{"endpoints_cut", "UInt32", "UInt32", smallCodec},
		{"endpoints_read", "UInt8", "UInt8", nil},
		{"port_range_low", "UInt16", "UInt16", smallCodec},
		{"port_range_high", "UInt16", "UInt16", smallCodec},
		{"fin_timeout_s", "UInt32", "UInt32", smallCodec},
		{"max_tw_buckets", "UInt32", "UInt32", smallCodec},
		{"tw_reuse", "UInt8", "UInt8", nil},
		{"events_seq", "UInt64", "UInt64", seqCodec},
		{"probe_id", "LowCardinality(String)", "String", zstd},
		{"seq", "UInt64", "UInt64", seqCodec},
		{"stream_seq", "UInt64", "UInt64", seqCodec},
	}}

var specTCPDrops = tableSpec{"tcp_drops", "toYYYYMMDD", "time",
	[]string{"host", "expr:toStartOfHour(time)", "reason", "sport", "time"}, []colSpec{
		{"time", "DateTime64(9,'UTC')", "DateTime('UTC')", seqCodec},
		{"time_ns", "UInt64", "UInt64", seqCodec},
		{"start_time", "DateTime64(9,'UTC')", "DateTime('UTC')", seqCodec},
		{"start_ns", "UInt64", "UInt64", seqCodec},
		{"host", "LowCardinality(String)", "String", zstd},
		{"source", "Enum8", "Enum8", nil},
		{"reason", "LowCardinality(String)", "String", zstd},
		{"family", "Enum8", "Enum8", nil},
		{"saddr", "String", "String", zstd},
		{"sport", "UInt16", "UInt16", smallCodec},
		{"daddr", "String", "String", zstd},
		{"dport", "UInt16", "UInt16", smallCodec},
		{"ingress", "UInt8", "UInt8", smallCodec},
		{"pid", "UInt32", "UInt32", smallCodec},
		{"comm", "LowCardinality(String)", "String", zstd},
		{"cgroup_id", "UInt64", "UInt64", smallCodec},
		{"count", "UInt64", "UInt64", smallCodec},
		{"accept_queue", "UInt32", "UInt32", smallCodec},
		{"backlog", "UInt32", "UInt32", smallCodec},
		{"probe_id", "LowCardinality(String)", "String", zstd},
		{"seq", "UInt64", "UInt64", seqCodec},
		{"stream_seq", "UInt64", "UInt64", seqCodec},
	}}

var specAlerts = tableSpec{"alerts", "toYYYYMM", "sent_at",
	[]string{"detector", "host", "fingerprint", "sent_at"}, []colSpec{
		{"sent_at", "DateTime64(3,'UTC')", "DateTime('UTC')", seqCodec},
		{"fingerprint", "String", "String", zstd},
		{"detector", "LowCardinality(String)", "String", zstd},
		{"status", "LowCardinality(String)", "String", zstd},
		{"severity", "LowCardinality(String)", "String", zstd},
		{"host", "LowCardinality(String)", "String", zstd},
		{"starts_at", "DateTime64(3,'UTC')", "DateTime('UTC')", seqCodec},
		{"ends_at", "Nullable(DateTime64(3,'UTC'))", "Nullable(DateTime('UTC'))", zstd},
		{"label_names", "Array(LowCardinality(String))", "Array(String)", zstd},
		{"label_values", "Array(String)", "Array(String)", zstd},
		{"summary", "String", "String", zstd},
		{"description", "String", "String", zstd},
		{"value", "Float64", "Float64", nil},
		{"threshold", "Float64", "Float64", nil},
		{"evidence", "String", "String", zstd},
		{"sql", "String", "String", zstd},
		{"stream_seq", "UInt64", "UInt64", seqCodec},
		{"annotation_names", "Array(LowCardinality(String))", "Array(String)", zstd},
		{"annotation_values", "Array(String)", "Array(String)", zstd},
		{"generator_url", "String", "String", zstd},
	}}

var specTables = []tableSpec{specTCPEvents, specTCPConnections, specSocketSnapshots, specTCPDrops, specAlerts}

// Enum values as the kernel and the proto number them (include/net/tcp_states.h,
// AF_INET/AF_INET6 as 4/6, OwnerSource, Side), per Enum8 column name.
var (
	specFamily = map[string]int{"unknown": 0, "ipv4": 4, "ipv6": 6}
	specState  = map[string]int{
		"UNKNOWN": 0, "ESTABLISHED": 1, "SYN_SENT": 2, "SYN_RECV": 3, "FIN_WAIT1": 4,
		"FIN_WAIT2": 5, "TIME_WAIT": 6, "CLOSE": 7, "CLOSE_WAIT": 8, "LAST_ACK": 9,
		"LISTEN": 10, "CLOSING": 11, "NEW_SYN_RECV": 12,
	}
	specEnums = map[string]map[string]int{
		"family": specFamily, "old_state": specState, "new_state": specState, "state": specState, "last_state": specState,
		"owner_source": {"unknown": 0, "task": 1, "socket": 2, "listener": 3, "scan": 4},
		"side":         {"unspecified": 0, "client": 1, "server": 2},
		"row_kind":     {"summary": 0, "group": 1, "close_wait": 2, "endpoint": 3},
		"source":       {"unspecified": 0, "kfree_skb": 1, "listener": 2},
	}
)

// TestRenderingParses reads both renderings back with a ClickHouse SQL
// parser (18.16 can run only the legacy one) and checks the AST of every
// table against the specs above: engine, partition key, sort key, TTL, and
// every column's type, enum values and codec chain.
func TestRenderingParses(t *testing.T) {
	for _, tt := range []struct {
		name string
		f    Features
	}{
		{"legacy", Features{}},
		{"modern", Modern},
	} {
		t.Run(tt.name, func(t *testing.T) {
			stmts := Render(tt.f, goldenOptions)
			db := parseOne(t, stmts[0])
			cdb, ok := db.(*parser.CreateDatabase)
			if !ok || !cdb.IfNotExists || cdb.Name.String() != "netpulse" {
				t.Fatalf("statement 1 parsed as %T %q, want CREATE DATABASE IF NOT EXISTS netpulse", db, db.String())
			}
			if len(stmts) != 1+len(specTables) {
				t.Fatalf("%d statements, want the database and %d tables", len(stmts), len(specTables))
			}
			for i, spec := range specTables {
				t.Run(spec.name, func(t *testing.T) {
					ct, ok := parseOne(t, stmts[1+i]).(*parser.CreateTable)
					if !ok {
						t.Fatalf("statement %d is not a CREATE TABLE:\n%s", 2+i, stmts[1+i])
					}
					if !ct.IfNotExists || ct.Name.Database.Name != "netpulse" || ct.Name.Table.Name != spec.name {
						t.Errorf("table name %q (if not exists %v), want netpulse.%s", ct.Name.String(), ct.IfNotExists, spec.name)
					}
					checkEngine(t, ct.Engine, tt.f, spec)
					checkColumns(t, ct.TableSchema, tt.f, spec.columns)
				})
			}
		})
	}
}

func parseOne(t *testing.T, sql string) parser.Expr {
	t.Helper()
	stmts, err := parser.NewParser(sql).ParseStmts()
	if err != nil {
		t.Fatalf("parse:\n%s\n%v", sql, err)
	}
	if len(stmts) != 1 {
		t.Fatalf("parsed %d statements from one:\n%s", len(stmts), sql)
	}
	return stmts[0]
}

func checkEngine(t *testing.T, e *parser.EngineExpr, f Features, spec tableSpec) {
	t.Helper()
	if e == nil || e.Name != "MergeTree" {
		t.Fatalf("engine = %v, want MergeTree", e)
	}
	if e.PartitionBy == nil {
		t.Fatal("no PARTITION BY")
	}
	if name, args := call(e.PartitionBy.Expr); name != spec.partition || !slices.Equal(args, []string{spec.timeCol}) {
		t.Errorf("PARTITION BY %s (%s%v), want %s(%s)", e.PartitionBy.Expr.String(), name, args, spec.partition, spec.timeCol)
	}
	if e.OrderBy == nil || len(e.OrderBy.Items) != 1 {
		t.Fatalf("ORDER BY = %v, want one tuple", e.OrderBy)
	}
	if got := tupleNames(e.OrderBy.Items[0].(*parser.OrderExpr).Expr); !slices.Equal(got, spec.orderBy) {
		t.Errorf("ORDER BY %q, want %q", got, spec.orderBy)
	}

	if !f.TTL {
		if e.TTL != nil {
			t.Errorf("TTL %s on a server without TTL", e.TTL.String())
		}
		return
	}
	if e.TTL == nil || len(e.TTL.Items) != 1 {
		t.Fatalf("TTL = %v, want one expression", e.TTL)
	}
	bin, ok := e.TTL.Items[0].Expr.(*parser.BinaryOperation)
	if !ok || bin.Operation != "+" {
		t.Fatalf("TTL %s, want toDateTime(time) + INTERVAL n DAY", e.TTL.String())
	}
	if name, args := call(bin.LeftExpr); name != "toDateTime" || !slices.Equal(args, []string{spec.timeCol}) {
		t.Errorf("TTL counts from %s, want toDateTime(%s)", bin.LeftExpr.String(), spec.timeCol)
	}
	iv, ok := bin.RightExpr.(*parser.IntervalExpr)
	if !ok || !strings.EqualFold(iv.Unit.Name, "DAY") || iv.Expr.String() != strconv.Itoa(goldenOptions.TTLDays) {
		t.Errorf("TTL adds %s, want INTERVAL %d DAY", bin.RightExpr.String(), goldenOptions.TTLDays)
	}
}

func checkColumns(t *testing.T, schema *parser.TableSchemaClause, f Features, specs []colSpec) {
	t.Helper()
	if len(schema.Columns) != len(specs) {
		t.Fatalf("%d columns, want %d", len(schema.Columns), len(specs))
	}
	for i, spec := range specs {
		col, ok := schema.Columns[i].(*parser.ColumnDef)
		if !ok {
			t.Fatalf("column %d is a %T", i, schema.Columns[i])
		}
		if col.Name.String() != spec.name {
			t.Errorf("column %d is %s, want %s", i, col.Name.String(), spec.name)
			continue
		}
		want := spec.legacy
		if f == Modern {
			want = spec.modern
		}
		typ := col.Type.String()
		if enum, ok := col.Type.(*parser.EnumType); ok {
			typ = enum.Name.Name
			values := map[string]int{}
			for _, v := range enum.Values {
				n, err := strconv.Atoi(v.Value.Literal)
				if err != nil {
					t.Errorf("%s: enum value %s: %v", spec.name, v.String(), err)
				}
				values[v.Name.Literal] = n
			}
			wantValues, ok := specEnums[spec.name]
			if !ok {
				t.Errorf("%s: an Enum8 the spec does not list", spec.name)
			}
			if !mapsEqual(values, wantValues) {
				t.Errorf("%s: enum values %v, want %v", spec.name, values, wantValues)
			}
		}
		if strings.ReplaceAll(typ, " ", "") != want {
			t.Errorf("%s: type %s, want %s", spec.name, typ, want)
		}

		var codec []string
		if col.Codec != nil {
			codec = codecChain(col.Codec)
		}
		wantCodec := spec.codec
		if !f.Codecs {
			wantCodec = nil
		}
		if !slices.Equal(codec, wantCodec) {
			t.Errorf("%s: codec %v, want %v", spec.name, codec, wantCodec)
		}
		// Delta and T64 only prepare data: a chain needs a compressor last.
		if len(codec) > 0 && !strings.HasPrefix(codec[len(codec)-1], "ZSTD") && !strings.HasPrefix(codec[len(codec)-1], "LZ4") {
			t.Errorf("%s: codec chain %v does not end in a compressor", spec.name, codec)
		}
	}
}

// call returns a function call's name and its identifier arguments.
func call(e parser.Expr) (string, []string) {
	fn, ok := unwrap(e).(*parser.FunctionExpr)
	if !ok || fn.Params == nil || fn.Params.Items == nil {
		return "", nil
	}
	var args []string
	for _, a := range fn.Params.Items.Items {
		args = append(args, identName(a))
	}
	return fn.Name.Name, args
}

// unwrap looks through the one-item lists and column wrappers the parser
// puts around expressions.
func unwrap(e parser.Expr) parser.Expr {
	for {
		switch v := e.(type) {
		case *parser.ColumnExprList:
			if len(v.Items) != 1 {
				return e
			}
			e = v.Items[0]
		case *parser.ColumnExpr:
			e = v.Expr
		default:
			return e
		}
	}
}

// tupleNames returns the identifiers of a tuple (a, b, c).
func tupleNames(e parser.Expr) []string {
	var items []parser.Expr
	switch v := unwrap(e).(type) {
	case *parser.ParamExprList:
		items = v.Items.Items
	case *parser.ColumnExprList:
		items = v.Items
	default:
		return []string{e.String()}
	}
	var names []string
	for _, it := range items {
		names = append(names, identName(it))
	}
	return names
}

// identName is the name of a bare identifier expression, else its text.
func identName(e parser.Expr) string {
	switch v := unwrap(e).(type) {
	case *parser.Ident:
		return v.Name
	case *parser.NestedIdentifier:
		if v.DotIdent == nil {
			return v.Ident.Name
		}
	}
	return "expr:" + e.String()
}

// codecChain lists a CODEC(...) clause's codecs with their levels.
func codecChain(c *parser.CompressionCodec) []string {
	var chain []string
	add := func(name *parser.Ident, level *parser.NumberLiteral) {
		if name == nil {
			return
		}
		s := name.Name
		if level != nil {
			s += "(" + level.Literal + ")"
		}
		chain = append(chain, s)
	}
	add(c.Type, c.TypeLevel)
	add(c.Name, c.Level)
	return chain
}

func mapsEqual(a, b map[string]int) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		if w, ok := b[k]; !ok || w != v {
			return false
		}
	}
	return true
}

func TestTTLAlter(t *testing.T) {
	const table = "netpulse.tcp_events"
	for _, tt := range []struct {
		name, engineFull, want, alter string
	}{
		{
			name:       "none wanted, none there",
			engineFull: "MergeTree PARTITION BY toYYYYMMDD(time) ORDER BY (host, type, time) SETTINGS index_granularity = 8192",
		},
		{
			name:       "same TTL in the server's spelling",
			engineFull: "MergeTree PARTITION BY toYYYYMMDD(time) ORDER BY (host, type, time) TTL toDateTime(time) + toIntervalDay(30) SETTINGS index_granularity = 8192",
			want:       "toDateTime(time) + INTERVAL 30 DAY",
		},
		{
			name:       "same TTL spelled as written",
			engineFull: "MergeTree PARTITION BY toYYYYMMDD(time) ORDER BY (host, type, time) TTL toDateTime(time) + INTERVAL 30 DAY",
			want:       "toDateTime(time) + INTERVAL 30 DAY",
		},
		{
			name:       "days changed",
			engineFull: "MergeTree PARTITION BY toYYYYMMDD(time) ORDER BY (host, type, time) TTL toDateTime(time) + toIntervalDay(30) SETTINGS index_granularity = 8192",
			want:       "toDateTime(time) + INTERVAL 7 DAY",
			alter:      "ALTER TABLE netpulse.tcp_events MODIFY TTL toDateTime(time) + INTERVAL 7 DAY",
		},
		{
			name:       "TTL turned on",
			engineFull: "MergeTree PARTITION BY toYYYYMMDD(time) ORDER BY (host, type, time) SETTINGS index_granularity = 8192",
			want:       "toDateTime(time) + INTERVAL 7 DAY",
			alter:      "ALTER TABLE netpulse.tcp_events MODIFY TTL toDateTime(time) + INTERVAL 7 DAY",
		},
		{
			name:       "TTL turned off",
			engineFull: "MergeTree PARTITION BY toYYYYMMDD(time) ORDER BY (host, type, time) TTL toDateTime(time) + toIntervalDay(30) SETTINGS index_granularity = 8192",
			alter:      "ALTER TABLE netpulse.tcp_events REMOVE TTL",
		},
	} {
		t.Run(tt.name, func(t *testing.T) {
			if got := ttlAlter(table, tableTTL(tt.engineFull), tt.want); got != tt.alter {
				t.Errorf("ttlAlter = %q, want %q", got, tt.alter)
			}
		})
	}
}

func TestTTLOnlyWhereSupported(t *testing.T) {
	for _, tt := range []struct {
		f    Features
		o    Options
		want string
	}{
		{Modern, Options{TTLDays: 30}, "toDateTime(time) + INTERVAL 30 DAY"},
		{Modern, Options{}, ""},
		{Features{}, Options{TTLDays: 30}, ""},
		{Features{TTL: true}, Options{TTLDays: 1}, "toDateTime(time) + INTERVAL 1 DAY"},
	} {
		if got := TCPEvents.ttl(tt.f, tt.o); got != tt.want {
			t.Errorf("ttl(%+v, %+v) = %q, want %q", tt.f, tt.o, got, tt.want)
		}
	}
}

// On a cluster every statement runs ON CLUSTER; each table is a Replicated
// local table with a ZooKeeper path per shard and a Distributed table
// under the table's own name, sharded as the sink writes.
func TestRenderOnCluster(t *testing.T) {
	got := Render(Features{}, Options{Cluster: "fleet"})
	if len(got) != 1+2*len(Tables) {
		t.Fatalf("Render returned %d statements, want %d", len(got), 1+2*len(Tables))
	}
	if got[0] != "CREATE DATABASE IF NOT EXISTS netpulse ON CLUSTER fleet" {
		t.Errorf("first statement = %q", got[0])
	}
	local, dist := got[1], got[2]
	for _, want := range []string{
		"CREATE TABLE IF NOT EXISTS netpulse.tcp_events_local ON CLUSTER fleet\n",
		"ENGINE = ReplicatedMergeTree('/clickhouse/tables/{shard}/netpulse/tcp_events_local', '{replica}')\nPARTITION BY toYYYYMMDD(time)",
	} {
		if !strings.Contains(local, want) {
			t.Errorf("local table statement lacks %q:\n%s", want, local)
		}
	}
	if want := "CREATE TABLE IF NOT EXISTS netpulse.tcp_events ON CLUSTER fleet AS netpulse.tcp_events_local\n" +
		"ENGINE = Distributed(fleet, netpulse, tcp_events_local, " + ShardingKey + ")"; dist != want {
		t.Errorf("Distributed table statement:\n got %s\nwant %s", dist, want)
	}
}
