// Package chschema creates and migrates the sink's ClickHouse schema.
//
// Tables are defined once, as data (see TCPEvents), and rendered for the
// server at hand: current releases get DateTime64, LowCardinality, codecs
// and a TTL; old servers (Debian's 18.16) get the plain types they have.
// Migrate is idempotent and only ever adds: missing columns are added to an
// existing table, and on servers with TTL support the table TTL follows
// Options.TTLDays.
package chschema

import (
	"fmt"
	"regexp"
	"strings"
	"time"
)

// defaultDatabase is used when Options.Database is empty.
const defaultDatabase = "netpulse"

// Options are the parts of the schema that come from configuration.
type Options struct {
	Database string
	TTLDays  int // 0 keeps rows forever
	// Cluster, when set, names the ClickHouse cluster (remote_servers) the
	// schema is made on, ON CLUSTER: each table's rows live in a
	// Replicated table named <table>_local on every shard, and <table> is
	// a Distributed table over them, so queries read the whole cluster
	// under the names they use on one server.
	Cluster string
}

// LocalSuffix names a table's Replicated part on each shard of a cluster.
const LocalSuffix = "_local"

// ShardingKey is the Distributed tables' sharding key: the sink computes
// the same (ShardOf) to write each host's rows into one shard itself.
const ShardingKey = "cityHash64(host)"

func (o Options) database() string {
	if o.Database == "" {
		return defaultDatabase
	}
	return o.Database
}

// Column is one column of a table.
type Column struct {
	Name string
	// Modern is the type on servers that have every type family it names
	// (see Features.supports).
	Modern string
	// Legacy is the type on servers that lack one of them; "" when Modern
	// works everywhere.
	Legacy string
	// Codec is the CODEC(...) argument list on servers with codecs; ""
	// leaves the server's default compression.
	Codec string
}

// Type is the column's type on a server with features f.
func (c Column) Type(f Features) string {
	if c.Legacy == "" || f.supports(c.Modern) {
		return c.Modern
	}
	return c.Legacy
}

// def is the column's definition as CREATE TABLE and ADD COLUMN take it,
// the name padded to width.
func (c Column) def(f Features, width int) string {
	s := fmt.Sprintf("%-*s %s", width, quoteIdent(c.Name), c.Type(f))
	if f.Codecs && c.Codec != "" {
		s += " CODEC(" + c.Codec + ")"
	}
	return s
}

// Table is a MergeTree-family table.
type Table struct {
	Name string
	// Doc says what a row is and why the table is laid out so; it heads
	// the table's rendering in testdata/ (the schema's documentation).
	Doc     string
	Columns []Column
	// Engine with its parameters, e.g. "MergeTree".
	Engine string
	// TimeColumn is the DateTime or DateTime64 column the table is
	// partitioned by: one partition per UTC day, or per UTC month when
	// Monthly (for small tables, where daily parts would stay tiny).
	TimeColumn string
	Monthly    bool
	OrderBy    string
	// TTLFrom is the DateTime expression Options.TTLDays counts from; ""
	// means the table never expires rows.
	TTLFrom string
}

// Tables are the tables Migrate manages, in creation order.
var Tables = []*Table{&TCPEvents, &TCPConnections, &SocketSnapshots, &TCPDrops, &Alerts}

// PartitionBy is the table's partition key expression.
func (t *Table) PartitionBy() string {
	if t.Monthly {
		return "toYYYYMM(" + t.TimeColumn + ")"
	}
	return "toYYYYMMDD(" + t.TimeColumn + ")"
}

// PartitionOf is the partition (YYYYMMDD, or YYYYMM when Monthly) of a row
// whose TimeColumn is ns nanoseconds since the epoch: PartitionBy computed
// in Go, so that the writer can split an INSERT by partition.
func (t *Table) PartitionOf(ns int64) uint32 {
	y, m, d := time.Unix(0, ns).UTC().Date()
	if t.Monthly {
		return uint32(y*100 + int(m))
	}
	return uint32(y*10000 + int(m)*100 + d)
}

// PartitionBounds is [start, end) of partition p in Unix seconds.
func (t *Table) PartitionBounds(p uint32) (int64, int64) {
	if t.Monthly {
		start := time.Date(int(p/100), time.Month(p%100), 1, 0, 0, 0, 0, time.UTC)
		return start.Unix(), start.AddDate(0, 1, 0).Unix()
	}
	start := time.Date(int(p/10000), time.Month(p/100%100), int(p%100), 0, 0, 0, 0, time.UTC)
	return start.Unix(), start.AddDate(0, 0, 1).Unix()
}

// Qualified is `database`.`table`, as the writer's statements name it.
func (t *Table) Qualified(database string) string {
	return quoteIdent(Options{Database: database}.database()) + "." + quoteIdent(t.Name)
}

// LocalQualified is `database`.`table_local`: the table a cluster's shard
// stores the rows in, which the writer inserts into and looks up.
func (t *Table) LocalQualified(database string) string {
	return quoteIdent(Options{Database: database}.database()) + "." + quoteIdent(t.Name+LocalSuffix)
}

// ColumnNames are the table's columns in definition order: the explicit
// column list and value order for INSERTs.
func (t *Table) ColumnNames() []string {
	names := make([]string, len(t.Columns))
	for i, c := range t.Columns {
		names[i] = c.Name
	}
	return names
}

// ttl is the TTL expression for a server with features f, "" for none.
func (t *Table) ttl(f Features, o Options) string {
	if !f.TTL || t.TTLFrom == "" || o.TTLDays <= 0 {
		return ""
	}
	return fmt.Sprintf("%s + INTERVAL %d DAY", t.TTLFrom, o.TTLDays)
}

// qualified is database.table, quoted where needed.
func (t *Table) qualified(o Options) string { return t.Qualified(o.database()) }

// stored is the table that holds the rows: t itself on one server, t's
// local table on a cluster.
func (t *Table) stored(o Options) string {
	if o.Cluster != "" {
		return t.Name + LocalSuffix
	}
	return t.Name
}

// onCluster is the ON CLUSTER clause of o's statements, "" on one server.
func (o Options) onCluster() string {
	if o.Cluster == "" {
		return ""
	}
	return " ON CLUSTER " + quoteIdent(o.Cluster)
}

// in is table name of o's database, quoted.
func (o Options) in(name string) string { return quoteIdent(o.database()) + "." + quoteIdent(name) }

// engine is the table's engine clause: on a cluster the Replicated form,
// its ZooKeeper path per shard (the {shard} and {replica} macros of each
// server's config).
func (t *Table) engine(o Options) string {
	if o.Cluster == "" {
		return t.Engine
	}
	path := "/clickhouse/tables/{shard}/" + o.database() + "/" + t.Name + LocalSuffix
	return fmt.Sprintf("Replicated%s('%s', '{replica}')", t.Engine, path)
}

// Create is the table's CREATE TABLE IF NOT EXISTS statement (on a
// cluster: of its local table).
func (t *Table) Create(f Features, o Options) string {
	var b strings.Builder
	fmt.Fprintf(&b, "CREATE TABLE IF NOT EXISTS %s%s\n(\n", o.in(t.stored(o)), o.onCluster())
	width := 0
	for _, c := range t.Columns {
		width = max(width, len(quoteIdent(c.Name)))
	}
	for i, c := range t.Columns {
		sep := ","
		if i == len(t.Columns)-1 {
			sep = ""
		}
		fmt.Fprintf(&b, "    %s%s\n", c.def(f, width), sep)
	}
	fmt.Fprintf(&b, ")\nENGINE = %s\nPARTITION BY %s\nORDER BY %s", t.engine(o), t.PartitionBy(), t.OrderBy)
	if ttl := t.ttl(f, o); ttl != "" {
		fmt.Fprintf(&b, "\nTTL %s", ttl)
	}
	return b.String()
}

// statement is one DDL statement and what it does, for error messages.
type statement struct{ what, sql string }

// distributed is the CREATE of t's Distributed table on a cluster.
func (t *Table) distributed(o Options) string {
	return fmt.Sprintf("CREATE TABLE IF NOT EXISTS %s%s AS %s\nENGINE = Distributed(%s, %s, %s, %s)",
		t.qualified(o), o.onCluster(), o.in(t.stored(o)),
		quoteIdent(o.Cluster), quoteIdent(o.database()), quoteIdent(t.stored(o)), ShardingKey)
}

func statements(f Features, o Options) []statement {
	db := quoteIdent(o.database())
	stmts := []statement{{"create database " + db, "CREATE DATABASE IF NOT EXISTS " + db + o.onCluster()}}
	for _, t := range Tables {
		stmts = append(stmts, statement{"create table " + o.in(t.stored(o)), t.Create(f, o)})
		if o.Cluster != "" {
			stmts = append(stmts, statement{"create table " + t.qualified(o), t.distributed(o)})
		}
	}
	return stmts
}

var plainIdent = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_]*$`)

// quoteIdent leaves plain identifiers alone and backquotes the rest.
func quoteIdent(s string) string {
	if plainIdent.MatchString(s) {
		return s
	}
	return "`" + strings.NewReplacer(`\`, `\\`, "`", "\\`").Replace(s) + "`"
}
