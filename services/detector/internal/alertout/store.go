// Package alertout gets alerts out of a detector: a KV bucket of the alerts
// that are firing (so a replica taking a host over knows them) and a
// publisher onto the contract's subjects whose retries are stored once.
package alertout

import (
	"context"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"regexp"
	"strings"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/netpulse/netpulse/lib/alert"
)

// Record is one active alert as stored: the last message made for it and
// whether it is known to be published. A record is written before its
// message is published; a resolved one is deleted once published.
type Record struct {
	Alert     alert.Alert `json:"alert"`
	Published bool        `json:"published"`
}

// Stored is a record with its key and revision.
type Stored struct {
	Key      string
	Revision uint64
	Record
}

// EnsureBucket creates or updates the active-alerts bucket.
func EnsureBucket(ctx context.Context, js jetstream.JetStream, bucket string, replicas int) (jetstream.KeyValue, error) {
	return js.CreateOrUpdateKeyValue(ctx, jetstream.KeyValueConfig{
		Bucket:      bucket,
		Description: "netpulse detector alerts that are firing: <detector>.<host>.<fingerprint>",
		History:     1,
		Storage:     jetstream.FileStorage,
		Replicas:    replicas,
	})
}

// Store is one detector's part of the active-alerts bucket.
type Store struct {
	KV       jetstream.KeyValue
	Detector string
}

var plainKey = regexp.MustCompile(`^[-_A-Za-z0-9]+$`)

// HostKey is host as one KV key token: itself when it only holds letters,
// digits, '-' and '_', else '=' and its hex (a KV key cannot hold what a
// subject token can; '=' never starts a plain one, so both never collide).
func HostKey(host string) string {
	if plainKey.MatchString(host) {
		return host
	}
	return "=" + hex.EncodeToString([]byte(host))
}

// hostOfKey reverses HostKey.
func hostOfKey(k string) (string, bool) {
	if !strings.HasPrefix(k, "=") {
		return k, true
	}
	b, err := hex.DecodeString(k[1:])
	return string(b), err == nil
}

// Key is the key of host's alert fp.
func (s *Store) Key(host, fp string) string { return s.Detector + "." + HostKey(host) + "." + fp }

// Put writes r and returns its revision.
func (s *Store) Put(ctx context.Context, r Record) (string, uint64, error) {
	key := s.Key(r.Alert.Host, r.Alert.Fingerprint)
	b, err := json.Marshal(r)
	if err != nil {
		return key, 0, err
	}
	rev, err := s.KV.Put(ctx, key, b)
	return key, rev, err
}

// Load returns host's records.
func (s *Store) Load(ctx context.Context, host string) ([]Stored, error) {
	w, err := s.KV.Watch(ctx, s.Detector+"."+HostKey(host)+".*", jetstream.IgnoreDeletes())
	if err != nil {
		return nil, err
	}
	defer func() { _ = w.Stop() }()
	var out []Stored
	for {
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case e, ok := <-w.Updates():
			if !ok {
				return nil, errors.New("alert store watcher closed")
			}
			if e == nil { // all current values delivered
				return out, nil
			}
			st := Stored{Key: e.Key(), Revision: e.Revision()}
			if err := json.Unmarshal(e.Value(), &st.Record); err != nil {
				return nil, fmt.Errorf("alert record %s: %w", e.Key(), err)
			}
			out = append(out, st)
		}
	}
}

// Hosts lists the hosts that have records.
func (s *Store) Hosts(ctx context.Context) ([]string, error) {
	lister, err := s.KV.ListKeysFiltered(ctx, s.Detector+".*.*")
	if err != nil {
		return nil, err
	}
	seen := map[string]bool{}
	var hosts []string
	for k := range lister.Keys() {
		parts := strings.Split(k, ".")
		if len(parts) != 3 {
			continue
		}
		if h, ok := hostOfKey(parts[1]); ok && !seen[h] {
			seen[h] = true
			hosts = append(hosts, h)
		}
	}
	return hosts, nil
}

// settle records that st was published: a firing record is marked, a
// resolved one deleted; either only if nobody wrote the key since (a newer
// transition of the same alert wins).
func (s *Store) settle(ctx context.Context, st Stored) error {
	if st.Alert.Status == alert.Resolved {
		err := s.KV.Delete(ctx, st.Key, jetstream.LastRevision(st.Revision))
		if errors.Is(err, jetstream.ErrKeyRevisionMismatch) || errors.Is(err, jetstream.ErrKeyNotFound) {
			return nil
		}
		return err
	}
	st.Published = true
	b, err := json.Marshal(st.Record)
	if err != nil {
		return err
	}
	_, err = s.KV.Update(ctx, st.Key, b, st.Revision)
	if errors.Is(err, jetstream.ErrKeyRevisionMismatch) {
		return nil
	}
	return err
}
