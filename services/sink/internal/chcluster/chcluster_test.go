package chcluster

import (
	"context"
	"fmt"
	"testing"

	"github.com/netpulse/netpulse/lib/testutil/chtest"
)

var srv *chtest.Server

func TestMain(m *testing.M) { chtest.Main(m, &srv) }

func hosts(n int) []string {
	out := make([]string, n)
	for i := range out {
		out[i] = fmt.Sprintf("node-%d.rack%d.example.net", i, i%7)
	}
	out[0] = "" // an empty host hashes too
	return out
}

// Hash must be the server's cityHash64: the Distributed tables shard by it.
func TestHashIsTheServers(t *testing.T) {
	conn := srv.Conn(t, srv.NewDatabase(t))
	hs := hosts(2000)
	var want []uint64
	if err := conn.QueryRow(context.Background(), "SELECT arrayMap(h -> cityHash64(h), ?)", hs).Scan(&want); err != nil {
		t.Fatal(err)
	}
	for i, h := range hs {
		if got := Hash(h); got != want[i] {
			t.Fatalf("Hash(%q) = %d, the server's cityHash64 = %d", h, got, want[i])
		}
	}
}

// Shards own slots of the hash in shard order, Weight slots each, as the
// server's Distributed engine assigns them.
func TestShardOfFollowsWeights(t *testing.T) {
	topo, err := New("c", []Shard{{Num: 1, Weight: 1}, {Num: 2, Weight: 2}, {Num: 3, Weight: 1}})
	if err != nil {
		t.Fatal(err)
	}
	slotShard := []int{0, 1, 1, 2}
	count := make([]int, 3)
	for _, h := range hosts(10000) {
		got := topo.ShardOf(h)
		if want := slotShard[Hash(h)%4]; got != want {
			t.Fatalf("ShardOf(%q) = %d, want %d", h, got, want)
		}
		count[got]++
	}
	// A quarter, a half, a quarter, within a few percent.
	for i, want := range []int{2500, 5000, 2500} {
		if d := count[i] - want; d < -300 || d > 300 {
			t.Errorf("shard %d holds %d of 10000 hosts, want about %d", i+1, count[i], want)
		}
	}
	if _, err := New("c", []Shard{{Num: 1, Weight: 0}}); err == nil {
		t.Error("a shard of weight 0 was accepted")
	}
}
