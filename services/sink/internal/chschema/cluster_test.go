package chschema

import (
	"context"
	"slices"
	"testing"
	"time"

	"github.com/netpulse/netpulse/lib/testutil/chtest"
)

// On a real 18.16 cluster (ZooKeeper, shard 1 with one replica, shard 2
// with two): tcp_events as an older release made it, holding a row, is
// upgraded ON CLUSTER — the missing columns are added to the local and the
// Distributed table on every server, the row reads defaults in them
// through the Distributed table — the other tables are created, and a
// second Migrate changes nothing anywhere.
func TestMigrateOnCluster(t *testing.T) {
	cl := chtest.StartCluster(t, 1, 2)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	conn := cl.Node(2, 1).Conn(t)
	f, err := Probe(ctx, conn)
	if err != nil {
		t.Fatal(err)
	}
	o := Options{Database: "np", Cluster: cl.Name}
	old := TCPEvents
	old.Columns = slices.DeleteFunc(slices.Clone(old.Columns), func(c Column) bool {
		return c.Name == "comm" || c.Name == "stream_seq"
	})
	for _, stmt := range []string{"CREATE DATABASE IF NOT EXISTS np" + o.onCluster(), old.Create(f, o), old.distributed(o)} {
		if err := conn.Exec(ctx, stmt); err != nil {
			t.Fatalf("%s: %v", stmt, err)
		}
	}
	batch, err := conn.PrepareBatch(ctx, "INSERT INTO np.tcp_events_local (time, time_ns, host, type)")
	if err != nil {
		t.Fatal(err)
	}
	if err := batch.Append(time.Unix(1, 0), uint64(1e9), "h", "retransmit"); err != nil {
		t.Fatal(err)
	}
	if err := batch.Send(); err != nil {
		t.Fatalf("insert into the old table: %v", err)
	}

	if err := Migrate(ctx, conn, f, o); err != nil {
		t.Fatalf("Migrate: %v", err)
	}
	before := map[string]string{}
	for _, nd := range cl.Nodes {
		c := nd.Conn(t)
		for _, table := range Tables {
			for _, name := range []string{table.Name + LocalSuffix, table.Name} {
				if got, want := describe(t, c, "np", name), wantColumns(table, f); !slices.Equal(got, want) {
					t.Errorf("%s: np.%s after Migrate\n got %q\nwant %q", nd.Name, name, got, want)
				}
				before[nd.Name+"/"+name] = showCreate(t, c, "np", name)
			}
		}
	}
	var comm string
	var streamSeq uint64
	if err := conn.QueryRow(ctx, "SELECT comm, stream_seq FROM np.tcp_events WHERE host = 'h'").Scan(&comm, &streamSeq); err != nil {
		t.Fatalf("old row through the Distributed table: %v", err)
	}
	if comm != "" || streamSeq != 0 {
		t.Errorf("old row reads comm %q, stream_seq %d: want the defaults", comm, streamSeq)
	}

	if err := Migrate(ctx, cl.Node(1, 1).Conn(t), f, o); err != nil {
		t.Fatalf("second Migrate: %v", err)
	}
	for _, nd := range cl.Nodes {
		c := nd.Conn(t)
		for _, table := range Tables {
			for _, name := range []string{table.Name + LocalSuffix, table.Name} {
				if after := showCreate(t, c, "np", name); after != before[nd.Name+"/"+name] {
					t.Errorf("%s: second Migrate changed np.%s:\nbefore %s\nafter  %s", nd.Name, name, before[nd.Name+"/"+name], after)
				}
			}
		}
	}
}
