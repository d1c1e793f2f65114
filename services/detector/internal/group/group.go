// Package group shares one detector kind's work between its replicas.
//
// It builds on orbit.go's elastic partitioned consumer groups (pcgroups): a
// work-queue stream NETPULSE_EVENTS-<group> sources the kind's subjects from
// NETPULSE_EVENTS and prefixes each with partition(host) of a fixed count;
// the group's member list (in the KV bucket elastic-consumer-groups) splits
// the partitions between members, and each member consumes its own
// partitions through one consumer, so a host is handled by one replica at a
// time and in order.
//
// pcgroups leaves membership to an operator. This package adds liveness:
// every replica keeps a heartbeat key in a KV bucket whose entries expire
// after the member TTL; a replica adds itself to the group, and the
// lowest-named live replica drops members whose heartbeat expired, so their
// partitions move to the others within about a TTL.
package group

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/netpulse/netpulse/lib/wire"
	"github.com/synadia-io/orbit.go/pcgroups"
)

// ConfigBucket is pcgroups' KV bucket of elastic group configs (its keys
// are <stream>.<group>); watched here to learn membership changes at once.
const ConfigBucket = "elastic-consumer-groups"

// Partition is host's partition among n: FNV-1a (32 bit) of the host token
// modulo n, what the server's partition(n,1) subject transform computes.
func Partition(host string, n int) int {
	const offset, prime = 2166136261, 16777619
	h := uint32(offset)
	for i := 0; i < len(host); i++ {
		h ^= uint32(host[i])
		h *= prime
	}
	return int(h % uint32(n))
}

// Spec is one detector kind's group.
type Spec struct {
	// Name of the group; its work-queue stream is NETPULSE_EVENTS-<Name>.
	Name string
	// Kinds are the event kinds it consumes.
	Kinds      []string
	Partitions int
	// MaxBufferedBytes bounds the work-queue stream; when full, sourcing
	// pauses (nothing is lost while NETPULSE_EVENTS still holds the events).
	MaxBufferedBytes int64
}

// StreamName is the work-queue stream of group name.
func StreamName(name string) string { return wire.EventsStream + "-" + name }

func (s Spec) filters() []pcgroups.PartitioningFilter {
	f := make([]pcgroups.PartitioningFilter, len(s.Kinds))
	for i, k := range s.Kinds {
		// Partition on the first wildcard, the host: every kind of one host
		// lands in the same partition.
		f[i] = pcgroups.PartitioningFilter{Filter: wire.KindSubjects(k), PartitioningWildcards: []int{1}}
	}
	return f
}

// ErrMismatch: an existing group differs from the configured one.
var ErrMismatch = errors.New("consumer group exists with another configuration")

// Ensure creates the group when it does not exist. An existing group made
// with other partitions, kinds or buffer size is an error that says how to
// start over: pcgroups cannot change those in place.
func Ensure(ctx context.Context, js jetstream.JetStream, s Spec) error {
	_, err := pcgroups.CreateElastic(ctx, js, wire.EventsStream, s.Name, uint(s.Partitions), s.filters(), 0, s.MaxBufferedBytes)
	if err == nil {
		return nil
	}
	if strings.Contains(err.Error(), "can not be updated") {
		return fmt.Errorf("%w: group %s was made with other group.partitions, kinds or group.max_buffered_bytes than configured; "+
			"stop its replicas, then delete it (nats stream rm %s; nats kv del %s %s.%s) or configure what it was made with",
			ErrMismatch, s.Name, StreamName(s.Name), ConfigBucket, wire.EventsStream, s.Name)
	}
	return fmt.Errorf("consumer group %s: %w", s.Name, err)
}

// Owned parses the partitions member owns under the group config cfg.
func Owned(cfg pcgroups.ElasticConsumerGroupConfig, member string, n int) []bool {
	owned := make([]bool, n)
	for _, f := range pcgroups.ElasticGetPartitionFilters(cfg, member) {
		p, _, _ := strings.Cut(f, ".")
		if i, err := strconv.Atoi(p); err == nil && i >= 0 && i < n {
			owned[i] = true
		}
	}
	return owned
}

// WatchOwnership calls fn with the partitions member owns, at start and at
// every membership change, until ctx ends. Calls come from one goroutine.
func WatchOwnership(ctx context.Context, js jetstream.JetStream, group, member string, n int, log *slog.Logger, fn func(owned []bool)) error {
	kv, err := js.KeyValue(ctx, ConfigBucket)
	if err != nil {
		return fmt.Errorf("group config bucket: %w", err)
	}
	w, err := kv.Watch(ctx, wire.EventsStream+"."+group)
	if err != nil {
		return fmt.Errorf("watch group %s: %w", group, err)
	}
	go func() {
		defer func() { _ = w.Stop() }()
		for {
			select {
			case <-ctx.Done():
				return
			case e, ok := <-w.Updates():
				if !ok {
					return
				}
				if e == nil {
					continue // end of the initial values
				}
				if e.Operation() != jetstream.KeyValuePut {
					fn(make([]bool, n))
					continue
				}
				var cfg pcgroups.ElasticConsumerGroupConfig
				if err := json.Unmarshal(e.Value(), &cfg); err != nil {
					log.Error("unreadable group config", "group", group, "err", err)
					continue
				}
				fn(Owned(cfg, member, n))
			}
		}
	}()
	return nil
}

// EnsureReplicasBucket creates or updates the heartbeat bucket: entries
// expire after ttl.
func EnsureReplicasBucket(ctx context.Context, js jetstream.JetStream, bucket string, ttl time.Duration, replicas int) (jetstream.KeyValue, error) {
	return js.CreateOrUpdateKeyValue(ctx, jetstream.KeyValueConfig{
		Bucket:      bucket,
		Description: "netpulse detector replicas: <detector>.<replica> heartbeats",
		TTL:         ttl,
		History:     1,
		Storage:     jetstream.MemoryStorage, // liveness: nothing to keep across a server restart
		Replicas:    replicas,
	})
}

// Membership keeps one replica in one kind's group.
type Membership struct {
	JS       jetstream.JetStream
	Replicas jetstream.KeyValue // the heartbeat bucket
	Group    string
	Detector string
	Member   string
	TTL      time.Duration
	Log      *slog.Logger
}

// Run beats and reconciles every TTL/3 until ctx ends.
func (m *Membership) Run(ctx context.Context) {
	t := time.NewTicker(m.TTL / 3)
	defer t.Stop()
	for {
		// A beat that hangs must not outlive the TTL: the others would
		// drop this replica.
		rctx, cancel := context.WithTimeout(ctx, m.TTL/2)
		start := time.Now()
		err := m.Reconcile(rctx)
		cancel()
		if err != nil && ctx.Err() == nil {
			m.Log.Warn("group membership", "group", m.Group, "err", err, "took", time.Since(start))
		} else if time.Since(start) > m.TTL/4 {
			m.Log.Warn("slow group membership update", "group", m.Group, "took", time.Since(start))
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

func (m *Membership) key(member string) string { return m.Detector + "." + member }

// Reconcile beats once, adds this replica to the group and, on the
// lowest-named live replica, drops the members that stopped beating.
func (m *Membership) Reconcile(ctx context.Context) error {
	if _, err := m.Replicas.Put(ctx, m.key(m.Member), []byte(time.Now().UTC().Format(time.RFC3339Nano))); err != nil {
		return fmt.Errorf("heartbeat: %w", err)
	}
	cfg, err := pcgroups.GetElasticConsumerGroupConfig(ctx, m.JS, wire.EventsStream, m.Group)
	if err != nil {
		return err
	}
	// Who beats: one get per member (a key listing can miss a key that is
	// being rewritten, and would drop a live replica).
	live := []string{m.Member}
	for _, member := range cfg.Members {
		if member == m.Member {
			continue
		}
		_, err := m.Replicas.Get(ctx, m.key(member))
		switch {
		case err == nil:
			live = append(live, member)
		case !errors.Is(err, jetstream.ErrKeyNotFound):
			return fmt.Errorf("heartbeat of %s: %w", member, err)
		}
	}
	if !slices.Contains(cfg.Members, m.Member) {
		if _, err := pcgroups.AddMembers(ctx, m.JS, wire.EventsStream, m.Group, []string{m.Member}); err != nil {
			return fmt.Errorf("join: %w", err)
		}
		m.Log.Info("joined group", "group", m.Group, "member", m.Member)
	}
	if slices.Min(live) != m.Member {
		return nil
	}
	var dead []string
	for _, member := range cfg.Members {
		if !slices.Contains(live, member) {
			dead = append(dead, member)
		}
	}
	if len(dead) == 0 {
		return nil
	}
	// Delete their consumers first: the survivors' new consumers take over
	// the same partitions, which a work-queue stream allows only once the
	// old filters are gone (else they wait for the inactivity timeout).
	for _, d := range dead {
		if err := m.JS.DeleteConsumer(ctx, StreamName(m.Group), d); err != nil && !errors.Is(err, jetstream.ErrConsumerNotFound) {
			return fmt.Errorf("delete consumer of dead member %s: %w", d, err)
		}
	}
	if _, err := pcgroups.DeleteMembers(ctx, m.JS, wire.EventsStream, m.Group, dead); err != nil {
		return fmt.Errorf("drop dead members %v: %w", dead, err)
	}
	m.Log.Warn("dropped replicas that stopped beating; their partitions move", "group", m.Group, "members", dead)
	return nil
}

// Leave drops this replica from the group, its consumer and its heartbeat,
// so its partitions move at once rather than after the TTL. Call it once
// this replica stopped consuming.
func (m *Membership) Leave(ctx context.Context) {
	var err error
	for try := 0; try < 5; try++ { // the config is updated by revision: retry a race
		if _, err = pcgroups.DeleteMembers(ctx, m.JS, wire.EventsStream, m.Group, []string{m.Member}); err == nil {
			break
		}
	}
	if err != nil {
		m.Log.Warn("leave group", "group", m.Group, "err", err)
	}
	if err := m.JS.DeleteConsumer(ctx, StreamName(m.Group), m.Member); err != nil && !errors.Is(err, jetstream.ErrConsumerNotFound) {
		m.Log.Warn("delete own consumer", "group", m.Group, "err", err)
	}
	if err := m.Replicas.Delete(ctx, m.key(m.Member)); err != nil {
		m.Log.Warn("delete heartbeat", "group", m.Group, "err", err)
	}
}
