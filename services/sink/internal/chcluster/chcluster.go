// Package chcluster reads a ClickHouse cluster's shards from the server
// (system.clusters, i.e. its remote_servers) and says which shard holds a
// host's rows: the shard the Distributed tables' sharding key,
// cityHash64(host), picks, so rows the sink writes to a shard directly sit
// where an INSERT through the Distributed table would have put them.
package chcluster

import (
	"context"
	"fmt"
	"net"
	"strconv"

	"github.com/ClickHouse/clickhouse-go/v2/lib/driver"
	"github.com/go-faster/city"
)

// Shard is one shard of the cluster.
type Shard struct {
	Num    uint32
	Weight uint32
	// Replicas are host:port of the native protocol, in replica order.
	Replicas []string
}

// Topology is a cluster's shards in shard order.
type Topology struct {
	Name   string
	Shards []Shard
	// slots maps hash % len(slots) to a shard index: each shard owns
	// Weight consecutive slots, in shard order, as Distributed does.
	slots []int
}

// Discover reads cluster's shards from the server conn talks to.
func Discover(ctx context.Context, conn driver.Conn, cluster string) (Topology, error) {
	rows, err := conn.Query(ctx, `SELECT shard_num, shard_weight, host_name, port FROM system.clusters
		WHERE cluster = ? ORDER BY shard_num, replica_num`, cluster)
	if err != nil {
		return Topology{}, fmt.Errorf("clickhouse cluster %s: %w", cluster, err)
	}
	defer rows.Close()
	t := Topology{Name: cluster}
	for rows.Next() {
		var num, weight uint32
		var host string
		var port uint16
		if err := rows.Scan(&num, &weight, &host, &port); err != nil {
			return Topology{}, fmt.Errorf("clickhouse cluster %s: %w", cluster, err)
		}
		if n := len(t.Shards); n == 0 || t.Shards[n-1].Num != num {
			t.Shards = append(t.Shards, Shard{Num: num, Weight: weight})
		}
		sh := &t.Shards[len(t.Shards)-1]
		sh.Replicas = append(sh.Replicas, net.JoinHostPort(host, strconv.Itoa(int(port))))
	}
	if err := rows.Err(); err != nil {
		return Topology{}, fmt.Errorf("clickhouse cluster %s: %w", cluster, err)
	}
	if len(t.Shards) == 0 {
		return Topology{}, fmt.Errorf("clickhouse.cluster: the server knows no cluster %q (its remote_servers config)", cluster)
	}
	return New(cluster, t.Shards)
}

// New is the topology of shards, which must have a positive weight each.
func New(name string, shards []Shard) (Topology, error) {
	t := Topology{Name: name, Shards: shards}
	for i, sh := range shards {
		if sh.Weight == 0 {
			return Topology{}, fmt.Errorf("clickhouse cluster %s: shard %d has weight 0: the sink writes every host into a shard, give it a weight", name, sh.Num)
		}
		for range sh.Weight {
			t.slots = append(t.slots, i)
		}
	}
	return t, nil
}

// ShardOf is the index in Shards of the shard that holds host's rows.
func (t Topology) ShardOf(host string) int {
	return t.slots[Hash(host)%uint64(len(t.slots))]
}

// Hash is ClickHouse's cityHash64 of a string.
func Hash(s string) uint64 { return city.CH64([]byte(s)) }
