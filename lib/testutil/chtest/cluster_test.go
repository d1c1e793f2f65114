package chtest

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2/lib/driver"
)

// A cluster of two shards, the second with two replicas: ON CLUSTER DDL
// reaches every server, replicas replicate and deduplicate, a Distributed
// table reads every shard, and a replica killed -9 catches up on restart.
func TestCluster(t *testing.T) {
	began := time.Now()
	c := StartCluster(t, 1, 2)
	t.Logf("cluster %s: %d servers and ZooKeeper %s ready in %v", c.Name, len(c.Nodes), c.ZooKeeper, time.Since(began).Round(time.Millisecond))
	if len(c.Nodes) != 3 || c.Node(2, 2) == nil || c.Node(3, 1) != nil || c.Node(1, 2) != nil {
		t.Fatalf("nodes %v, want s1r1 s2r1 s2r2", c.Addrs())
	}
	ctx := context.Background()
	s1, s2r1, s2r2 := c.Node(1, 1).Conn(t), c.Node(2, 1).Conn(t), c.Node(2, 2).Conn(t)

	// Each server's macros are its own (18.16 has system.macros, no getMacro).
	for _, nd := range c.Nodes {
		var shard, replica string
		err := nd.Conn(t).QueryRow(ctx, `SELECT anyIf(substitution, macro = 'shard'), anyIf(substitution, macro = 'replica')
			FROM system.macros`).Scan(&shard, &replica)
		if err != nil {
			t.Fatalf("%s macros: %v", nd.Name, err)
		}
		if shard != fmt.Sprint(nd.Shard) || replica != nd.Name {
			t.Errorf("%s: macros shard %q replica %q", nd.Name, shard, replica)
		}
	}

	began = time.Now()
	for _, q := range []string{
		"CREATE DATABASE ct ON CLUSTER " + c.Name,
		"CREATE TABLE ct.t ON CLUSTER " + c.Name + ` (id UInt64, s String)
			ENGINE = ReplicatedMergeTree('/clickhouse/tables/{shard}/ct/t', '{replica}') ORDER BY id`,
		"CREATE TABLE ct.dist ON CLUSTER " + c.Name + " AS ct.t ENGINE = Distributed(" + c.Name + ", ct, t, id)",
	} {
		if err := s1.Exec(ctx, q); err != nil {
			t.Fatalf("%s: %v%s", q, err, c.Node(1, 1).Log())
		}
	}
	t.Logf("ON CLUSTER DDL (database, replicated table, distributed table) on %d servers: %v", len(c.Nodes), time.Since(began).Round(time.Millisecond))
	for _, nd := range c.Nodes {
		waitCount(t, nd.Conn(t), "SELECT count() FROM system.tables WHERE database = 'ct'", 2, 10*time.Second)
	}

	// Shard 2: written on replica 1, read on replica 2.
	insert(t, s2r1, 1, 100)
	began = time.Now()
	waitCount(t, s2r2, "SELECT count() FROM ct.t", 100, 30*time.Second)
	t.Logf("100 rows replicated s2r1 -> s2r2 in %v", time.Since(began).Round(time.Millisecond))

	// The identical block again (a retried INSERT) is dropped by the
	// replicated block deduplication. The replication log is in order: once
	// replica 2 has the next block, it has seen whatever the retry logged.
	insert(t, s2r1, 1, 100)
	waitCount(t, s2r1, "SELECT count() FROM ct.t", 100, 0)
	insert(t, s2r1, 101, 150)
	waitCount(t, s2r2, "SELECT count() FROM ct.t", 150, 30*time.Second)
	waitCount(t, s2r2, "SELECT uniqExact(id) FROM ct.t", 150, 0)

	// Shard 1, then every shard through the Distributed table, from any server.
	insert(t, s1, 1001, 1010)
	for _, nd := range c.Nodes {
		waitCount(t, nd.Conn(t), "SELECT count() FROM ct.dist", 160, 0)
	}
	waitCount(t, s1, "SELECT sum(id) FROM ct.dist", 150*151/2+(1001+1010)*10/2, 0)

	// A replica crashes; its shard keeps taking writes, the Distributed
	// table reads the other replica, and on restart it catches up.
	killed := c.Node(2, 2)
	killed.Kill()
	insert(t, s2r1, 151, 200)
	waitCount(t, s1, "SELECT count() FROM ct.dist", 210, 0)
	began = time.Now()
	if err := killed.Start(); err != nil {
		t.Fatal(err)
	}
	restarted := time.Since(began)
	waitCount(t, killed.Conn(t), "SELECT count() FROM ct.t", 200, 60*time.Second)
	t.Logf("s2r2 killed -9 and started again: answering after %v, caught up (50 rows written while down) after %v",
		restarted.Round(time.Millisecond), time.Since(began).Round(time.Millisecond))
	// And it takes part in replication again, both ways.
	insert(t, killed.Conn(t), 201, 210)
	waitCount(t, s2r1, "SELECT count() FROM ct.t", 210, 30*time.Second)
}

// insert writes ids from..to (one block) into ct.t.
func insert(t *testing.T, conn driver.Conn, from, to uint64) {
	t.Helper()
	ctx := context.Background()
	b, err := conn.PrepareBatch(ctx, "INSERT INTO ct.t (id, s)")
	if err != nil {
		t.Fatal(err)
	}
	for id := from; id <= to; id++ {
		if err := b.Append(id, fmt.Sprint("row ", id)); err != nil {
			t.Fatal(err)
		}
	}
	if err := b.Send(); err != nil {
		t.Fatalf("insert %d..%d: %v", from, to, err)
	}
}

// waitCount polls query (one UInt64) until it returns want or timeout passes
// (0: it must already).
func waitCount(t *testing.T, conn driver.Conn, query string, want uint64, timeout time.Duration) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		var got uint64
		err := conn.QueryRow(context.Background(), query).Scan(&got)
		if err == nil && got == want {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s = %d (error %v), want %d (waited %v)", query, got, err, want, timeout)
		}
		time.Sleep(100 * time.Millisecond) // polling interval, not synchronisation
	}
}

func TestZooKeeperStartFailures(t *testing.T) {
	tests := []struct {
		name, script string
		check        func(error) bool
		want         string
	}{
		{
			name:   "not installed",
			script: "echo 'start.sh: ZooKeeper cannot run, missing: java' >&2; exit 69",
			check:  func(err error) bool { return errors.Is(err, ErrZooKeeperNotInstalled) },
			want:   "missing: java",
		},
		{
			name:   "port taken",
			script: "echo 'java.net.BindException: Address already in use' >&2; exit 1",
			check:  func(err error) bool { return errors.Is(err, errPortTaken) },
		},
		{
			name:   "crash reports the output",
			script: "echo 'something broke' >&2; exit 3",
			check: func(err error) bool {
				return !errors.Is(err, ErrZooKeeperNotInstalled) && !errors.Is(err, errPortTaken)
			},
			want: "something broke",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			script, dir := fakeScript(t, tt.script)
			z, err := startZooKeeper(script, dir, 1)
			if err == nil {
				z.stop()
				t.Fatal("startZooKeeper succeeded, want an error")
			}
			if !tt.check(err) || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("startZooKeeper error = %v", err)
			}
		})
	}
}
