package agent

import (
	"context"
	"encoding/json"
	"log/slog"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/netpulse/netpulse/lib/wire"
	"github.com/netpulse/netpulse/services/probe/internal/publish"
	"github.com/netpulse/netpulse/services/probe/internal/socktable"
	"github.com/netpulse/netpulse/services/probe/internal/tracer"
)

// Stats is the JSON document the probe publishes on
// netpulse.events.<host>.stats every stats.interval. Counters are totals
// since the probe started.
type Stats struct {
	Host            string    `json:"host"`
	ProbeID         string    `json:"probe_id"`
	Time            time.Time `json:"time"`
	UptimeSeconds   float64   `json:"uptime_seconds"`
	EventsKernel    uint64    `json:"events_kernel"`    // records the BPF programs submitted
	EventsSeen      uint64    `json:"events_seen"`      // records read from the ring buffer
	EventsPublished uint64    `json:"events_published"` // records in batches JetStream acknowledged
	RingbufDrops    uint64    `json:"ringbuf_drops"`    // records lost: ring buffer full
	DecodeErrors    uint64    `json:"decode_errors"`    // records that did not decode
	PublishErrors   uint64    `json:"publish_errors"`   // failed publish attempts (retried)
	EventsDropped   uint64    `json:"events_dropped"`   // records given up at shutdown
	// Per record type (state_change, retransmit, ..., connection): what the
	// kernel submitted and what it lost to a full ring buffer.
	KernelByType map[string]uint64 `json:"kernel_by_type"`
	DropsByType  map[string]uint64 `json:"drops_by_type,omitempty"`
	// Program runs the kernel skipped, in total and per tracepoint: their
	// events are lost before the ring buffer (see tracer.Misses).
	KernelMisses       uint64            `json:"kernel_misses"`
	MissesByTracepoint map[string]uint64 `json:"misses_by_tracepoint,omitempty"`
	Connections        uint64            `json:"connections"` // finished-connection records read
	// Events with a socket whose owning process nobody knew (neither the
	// kernel side nor the socket table): pid/comm are the interrupted task.
	OwnerUnknown      uint64  `json:"owner_unknown"`
	OwnerUnknownShare float64 `json:"owner_unknown_share"` // of the events with a socket
	OwnerFilled       uint64  `json:"owner_filled"`        // owners the socket table supplied
	// Kernel LRU maps: fill and evictions (an eviction loses that socket's
	// state time, owner and connection record).
	Maps []tracer.MapUsage `json:"maps,omitempty"`
	// The probe's socket table (source of the snapshots).
	Table       socktable.Stats `json:"socket_table"`
	TableErrors uint64          `json:"socket_table_errors"`
	Snapshots   uint64          `json:"snapshots"`
	// SnapshotErrors: parts of a snapshot that could not be read (the TCP
	// counters, the port settings, the TIME_WAIT/FIN_WAIT2 dump); the
	// snapshot went out without them. EndpointsForgotten: closes towards
	// remote endpoints beyond the ones the probe remembers (65536).
	SnapshotErrors     uint64 `json:"snapshot_errors"`
	EndpointsForgotten uint64 `json:"endpoints_forgotten"`
	// Dropped TCP packets the kernel counted (skb:kfree_skb), those of
	// them counted per reason only because the drop map was full, the
	// drop counts published (kind drop) and the drop reads that failed.
	PacketDrops        uint64    `json:"packet_drops"`
	PacketDropsKeyless uint64    `json:"packet_drops_keyless"`
	DropCounts         uint64    `json:"drop_counts"`
	DropErrors         uint64    `json:"drop_errors"`
	Seed               SeedStats `json:"seed"`
	// Reconciliations of the table with the kernel (sockets.resync_interval,
	// and CLOSE_WAIT before each snapshot): entries removed because the
	// kernel no longer had them, sockets added that events missed, states
	// corrected; failed runs; how long the last run and the last full run
	// took; what the last full run could not judge (entries two dumps
	// lacked that no dump ever listed, on loopback or an address the
	// probe's namespace does not use: maybe another namespace's, kept) and
	// deferred (closed during the dump, or a connect in flight: looked at
	// again next time). A change needs two runs in a row to agree.
	ResyncRuns            uint64   `json:"resync_runs"`
	ResyncFullRuns        uint64   `json:"resync_full_runs"`
	ResyncRemoved         uint64   `json:"resync_removed"`
	ResyncAdded           uint64   `json:"resync_added"`
	ResyncFixed           uint64   `json:"resync_fixed"`
	ResyncErrors          uint64   `json:"resync_errors"`
	ResyncLagging         uint64   `json:"resync_lagging"` // runs given up: the ring-buffer reader was over 3 s behind
	ResyncLastSeconds     float64  `json:"resync_last_seconds"`
	ResyncLastFullSeconds float64  `json:"resync_last_full_seconds"`
	ResyncUnverified      int      `json:"resync_unverified"`
	ResyncDeferred        int      `json:"resync_deferred"`
	SkippedTracepoints    []string `json:"skipped_tracepoints,omitempty"`
	BatchesPublished      uint64   `json:"batches_published"` // NATS messages acknowledged
	InFlight              int      `json:"batches_in_flight"` // published, not yet acknowledged
	UnknownKind           uint64   `json:"events_unknown_kind"`
	RSSBytes              uint64   `json:"rss_bytes"`
}

// stats returns the current counters.
func (p *Probe) stats(tr *tracer.Tracer, pub *publish.Publisher) Stats {
	s := Stats{Host: p.host, ProbeID: p.probeID, Time: time.Now().UTC(), UptimeSeconds: time.Since(p.started).Seconds()}
	if c, err := tr.Counters(); err == nil {
		s.EventsKernel, s.RingbufDrops = c.Submitted, c.Dropped
		s.PacketDrops, s.PacketDropsKeyless = c.DroppedPackets, c.DropsKeyless
		s.KernelByType = map[string]uint64{}
		for r := 1; r < tracer.NumRecordTypes; r++ {
			name := tracer.RecordType(r).String()
			s.KernelByType[name] = c.SubmittedByType[r]
			if c.DroppedByType[r] > 0 {
				if s.DropsByType == nil {
					s.DropsByType = map[string]uint64{}
				}
				s.DropsByType[name] = c.DroppedByType[r]
			}
		}
	} else {
		p.log.Warn("reading kernel counters", "err", err)
	}
	if m, err := tr.Misses(); err == nil {
		s.MissesByTracepoint = m
		for _, n := range m {
			s.KernelMisses += n
		}
	} else {
		p.log.Warn("reading program statistics", "err", err)
	}
	if m, err := tr.MapUsage(); err == nil {
		s.Maps = m
	} else {
		p.log.Warn("reading kernel map usage", "err", err)
	}
	pc := pub.Counters()
	s.EventsPublished, s.BatchesPublished, s.PublishErrors, s.EventsDropped, s.InFlight =
		pc.EventsPublished, pc.BatchesPublished, pc.PublishErrors, pc.EventsDropped, pc.InFlight
	s.RSSBytes = rssBytes()

	p.mu.Lock()
	defer p.mu.Unlock()
	c := p.c
	s.EventsSeen, s.DecodeErrors, s.Connections = c.seen, c.decodeErrs, c.conns
	s.OwnerUnknown, s.OwnerFilled = c.ownerUnknown, c.ownerFilled
	if c.events > 0 {
		s.OwnerUnknownShare = float64(c.ownerUnknown) / float64(c.events)
	}
	if p.table != nil {
		s.Table = p.table.Stats()
	}
	s.TableErrors, s.Snapshots, s.Seed, s.SkippedTracepoints = c.tableErrs, c.snapshots, c.seed, c.skippedTracepoints
	s.SnapshotErrors = c.snapErrs
	s.DropCounts, s.DropErrors = c.dropCounts, c.dropErrs
	if p.endpoints != nil {
		s.EndpointsForgotten = p.endpoints.Forgotten
	}
	s.ResyncRuns, s.ResyncFullRuns, s.ResyncErrors, s.ResyncLagging = c.resync.runs, c.resync.fullRuns, c.resync.errs, c.resync.lagging
	s.ResyncRemoved, s.ResyncAdded, s.ResyncFixed = s.Table.ResyncRemoved, s.Table.ResyncAdded, s.Table.ResyncFixed
	s.ResyncLastSeconds, s.ResyncLastFullSeconds = c.resync.lastSeconds, c.resync.lastFullSeconds
	s.ResyncUnverified, s.ResyncDeferred = c.resync.unverified, c.resync.deferred
	if p.out != nil {
		s.UnknownKind = p.out.unknownKind
	}
	return s
}

// report logs the counters (as a warning once anything was lost) and
// publishes them on the stats subject.
func (p *Probe) report(nc *nats.Conn, tr *tracer.Tracer, pub *publish.Publisher) {
	s := p.stats(tr, pub)
	level := slog.LevelInfo
	var evictions uint64
	for _, m := range s.Maps {
		evictions += m.Evictions
	}
	if s.RingbufDrops > 0 || s.KernelMisses > 0 || s.DecodeErrors > 0 || s.EventsDropped > 0 || evictions > 0 || s.Table.Evictions > 0 || s.ResyncErrors > 0 {
		level = slog.LevelWarn
	}
	p.log.Log(context.Background(), level, "probe stats",
		"events_kernel", s.EventsKernel, "events_seen", s.EventsSeen, "events_published", s.EventsPublished,
		"ringbuf_drops", s.RingbufDrops, "kernel_misses", s.KernelMisses, "decode_errors", s.DecodeErrors, "publish_errors", s.PublishErrors,
		"events_dropped", s.EventsDropped, "batches_in_flight", s.InFlight, "connections", s.Connections,
		"owner_unknown", s.OwnerUnknown, "kernel_map_evictions", evictions, "sockets", s.Table.Sockets,
		"socket_table_evictions", s.Table.Evictions, "snapshots", s.Snapshots,
		"resync_removed", s.ResyncRemoved, "resync_added", s.ResyncAdded, "resync_fixed", s.ResyncFixed,
		"resync_errors", s.ResyncErrors, "resync_last_ms", int64(s.ResyncLastSeconds*1000), "rss_mib", s.RSSBytes>>20)
	data, _ := json.Marshal(s)
	// Stats go to the same stream (it captures netpulse.events.>); core
	// publish is enough for a periodic health report.
	if err := nc.Publish(wire.EventSubject(p.host, wire.KindStats), data); err != nil {
		p.log.Warn("publishing stats", "err", err)
	}
}
