package chschema

import (
	"context"
	"fmt"
	"strings"

	"github.com/ClickHouse/clickhouse-go/v2/lib/driver"
)

// Features are what the server supports, as far as this schema cares.
type Features struct {
	DateTime64     bool // DateTime64 type (20.1+)
	LowCardinality bool // LowCardinality type without an experimental switch (19.x+)
	Codecs         bool // column CODEC(...) with Delta, T64 and ZSTD
	TTL            bool // table TTL
	Version        string
}

// supports reports whether the server has every type family typ names that
// not all servers have.
func (f Features) supports(typ string) bool {
	if strings.Contains(typ, "DateTime64(") && !f.DateTime64 {
		return false
	}
	if strings.Contains(typ, "LowCardinality(") && !f.LowCardinality {
		return false
	}
	return true
}

// Probe asks the server what it supports. It looks at what the server lists
// (system.data_type_families, system.settings, system.merge_tree_settings),
// not at version numbers, which forks and backports make unreliable.
func Probe(ctx context.Context, conn driver.Conn) (Features, error) {
	var f Features
	if err := conn.QueryRow(ctx, "SELECT version()").Scan(&f.Version); err != nil {
		return f, fmt.Errorf("probe clickhouse version: %w", err)
	}

	families, err := names(ctx, conn,
		"SELECT name FROM system.data_type_families WHERE name IN ('DateTime64', 'LowCardinality')")
	if err != nil {
		return f, fmt.Errorf("probe clickhouse type families: %w", err)
	}
	f.DateTime64 = families["DateTime64"]

	// 18.x lists LowCardinality but creates it only under
	// allow_experimental_low_cardinality_type, off by default. Later releases
	// made that setting obsolete with default 1, then dropped it. Count the
	// type only where it needs no switch: setting absent, or at its default
	// of 1 (a profile that turns it on in 18.x still means experimental).
	if families["LowCardinality"] {
		rows, err := conn.Query(ctx,
			"SELECT value, changed FROM system.settings WHERE name = 'allow_experimental_low_cardinality_type'")
		if err != nil {
			return f, fmt.Errorf("probe clickhouse low cardinality setting: %w", err)
		}
		f.LowCardinality = true
		for rows.Next() {
			var value string
			var changed uint8
			if err := rows.Scan(&value, &changed); err != nil {
				rows.Close()
				return f, fmt.Errorf("probe clickhouse low cardinality setting: %w", err)
			}
			f.LowCardinality = value == "1" && changed == 0
		}
		rows.Close()
		if err := rows.Err(); err != nil {
			return f, fmt.Errorf("probe clickhouse low cardinality setting: %w", err)
		}
	}

	// Table TTL came in 19.6 together with this MergeTree setting, which
	// exists for nothing else.
	ttl, err := names(ctx, conn,
		"SELECT name FROM system.merge_tree_settings WHERE name = 'merge_with_ttl_timeout'")
	if err != nil {
		return f, fmt.Errorf("probe clickhouse TTL support: %w", err)
	}
	f.TTL = ttl["merge_with_ttl_timeout"]

	// Codecs leave no mark in the type families or settings of the releases
	// that matter. They came in 19.1 and T64, the last one used here, in
	// 19.10: every server with DateTime64 (20.1) has them all. A 19.x server
	// merely keeps the default compression.
	f.Codecs = f.DateTime64
	return f, nil
}

// names runs a query returning one String column and collects the values.
func names(ctx context.Context, conn driver.Conn, query string) (map[string]bool, error) {
	rows, err := conn.Query(ctx, query)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	out := map[string]bool{}
	for rows.Next() {
		var name string
		if err := rows.Scan(&name); err != nil {
			return nil, err
		}
		out[name] = true
	}
	return out, rows.Err()
}
