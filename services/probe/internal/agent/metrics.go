package agent

import (
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/netpulse/netpulse/lib/obs"
	"github.com/netpulse/netpulse/services/probe/internal/publish"
	"github.com/netpulse/netpulse/services/probe/internal/tracer"
)

// Readiness conditions of the probe (/readyz).
const (
	readyTracepoints = "tracepoints attached"
	readyNATS        = "nats stream"
)

// Observe has the probe report to o: the counters of its stats document as
// Prometheus series (read at each scrape, so the two agree), the publish
// ack latency, and its readiness. A nil o (tests) records nothing.
func (p *Probe) Observe(o *obs.Obs) *Probe {
	p.obs = o
	if o == nil {
		return p
	}
	o.Await(readyTracepoints, readyNATS)
	acks := obs.Histogram("probe_publish_ack_duration_seconds", "From a batch's first publish to JetStream's ack, retries included.")
	p.observeAck = acks.WithLabelValues().Observe
	o.Register(acks, &probeCollector{p: p})
	return p
}

// probeCollector reads the probe's stats at each scrape.
type probeCollector struct{ p *Probe }

type series struct {
	desc *prometheus.Desc
	kind prometheus.ValueType
}

var (
	probeSeriesOnce sync.Once
	probeSeries     map[string]series
)

func desc(name, help string, kind prometheus.ValueType, labels ...string) series {
	return series{prometheus.NewDesc(obs.Namespace+"_probe_"+name, help, labels, nil), kind}
}

func probeDescs() map[string]series {
	probeSeriesOnce.Do(func() {
		c, g := prometheus.CounterValue, prometheus.GaugeValue
		probeSeries = map[string]series{
			"kernel":      desc("events_kernel_total", "Records the BPF programs submitted to the ring buffer, by record type.", c, "type"),
			"drops":       desc("ringbuf_drops_total", "Records lost because the ring buffer was full, by record type.", c, "type"),
			"misses":      desc("kernel_misses_total", "Program runs the kernel skipped (a BPF program already ran on that CPU): their events are lost, by tracepoint.", c, "tracepoint"),
			"seen":        desc("events_seen_total", "Records read from the ring buffer.", c),
			"published":   desc("events_published_total", "Records in batches JetStream acknowledged.", c),
			"batches":     desc("batches_published_total", "Batches (NATS messages) JetStream acknowledged.", c),
			"pubErrors":   desc("publish_errors_total", "Failed publish attempts (each retried with the same message ID).", c),
			"dropped":     desc("events_dropped_total", "Records given up at shutdown after the flush grace.", c),
			"decode":      desc("decode_errors_total", "Ring-buffer records that did not decode.", c),
			"conns":       desc("connections_total", "Finished-connection records read.", c),
			"unknown":     desc("owner_unknown_total", "Events of a socket whose owning process nobody knew.", c),
			"snapshots":   desc("snapshots_total", "Socket-table snapshots published.", c),
			"snapErrors":  desc("snapshot_errors_total", "Parts of a snapshot that could not be read (TCP counters, port settings, TIME_WAIT/FIN_WAIT2 dump).", c),
			"pktDrops":    desc("packet_drops_total", "TCP packets the kernel dropped (skb:kfree_skb), counted in the kernel.", c),
			"pktKeyless":  desc("packet_drops_keyless_total", "Of those, the ones counted per reason only: the drop map was full.", c),
			"dropErrors":  desc("drop_errors_total", "Drop-count reads that failed (kernel maps or listener counters).", c),
			"inFlight":    desc("batches_in_flight", "Batches published and not yet acknowledged.", g),
			"mapLive":     desc("map_entries", "Entries of a kernel LRU map now.", g, "map"),
			"mapCap":      desc("map_capacity", "Capacity of a kernel LRU map.", g, "map"),
			"mapEvict":    desc("map_evictions_total", "Entries a kernel LRU map pushed out to make room.", c, "map"),
			"sockets":     desc("socket_table_sockets", "Sockets in the probe's own table.", g),
			"tableEvict":  desc("socket_table_evictions_total", "Sockets the probe's table dropped to stay within sockets.max_entries.", c),
			"resyncRuns":  desc("resync_runs_total", "Reconciliations of the socket table with the kernel's.", c),
			"resyncError": desc("resync_errors_total", "Reconciliations that failed.", c),
		}
	})
	return probeSeries
}

// Describe implements prometheus.Collector.
func (pc *probeCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, s := range probeDescs() {
		ch <- s.desc
	}
}

// Collect implements prometheus.Collector; nothing until Run has opened
// the tracer and the publisher.
func (pc *probeCollector) Collect(ch chan<- prometheus.Metric) {
	pc.p.mu.Lock()
	tr, pub := pc.p.tr, pc.p.pub
	pc.p.mu.Unlock()
	if tr == nil || pub == nil {
		return
	}
	s := pc.p.stats(tr, pub)
	ds := probeDescs()
	emit := func(key string, v float64, labels ...string) {
		d := ds[key]
		ch <- prometheus.MustNewConstMetric(d.desc, d.kind, v, labels...)
	}
	for r := 1; r < tracer.NumRecordTypes; r++ {
		name := tracer.RecordType(r).String()
		emit("kernel", float64(s.KernelByType[name]), name)
		emit("drops", float64(s.DropsByType[name]), name)
	}
	for tp, n := range s.MissesByTracepoint {
		emit("misses", float64(n), tp)
	}
	emit("seen", float64(s.EventsSeen))
	emit("published", float64(s.EventsPublished))
	emit("batches", float64(s.BatchesPublished))
	emit("pubErrors", float64(s.PublishErrors))
	emit("dropped", float64(s.EventsDropped))
	emit("decode", float64(s.DecodeErrors))
	emit("conns", float64(s.Connections))
	emit("unknown", float64(s.OwnerUnknown))
	emit("snapshots", float64(s.Snapshots))
	emit("snapErrors", float64(s.SnapshotErrors))
	emit("pktDrops", float64(s.PacketDrops))
	emit("pktKeyless", float64(s.PacketDropsKeyless))
	emit("dropErrors", float64(s.DropErrors))
	emit("inFlight", float64(s.InFlight))
	for _, m := range s.Maps {
		emit("mapLive", float64(m.Live), m.Name)
		emit("mapCap", float64(m.Capacity), m.Name)
		emit("mapEvict", float64(m.Evictions), m.Name)
	}
	emit("sockets", float64(s.Table.Sockets))
	emit("tableEvict", float64(s.Table.Evictions))
	emit("resyncRuns", float64(s.ResyncRuns))
	emit("resyncError", float64(s.ResyncErrors))
}

// observed hands the running tracer and publisher to scrapes.
func (p *Probe) observed(tr *tracer.Tracer, pub *publish.Publisher) {
	if p.observeAck != nil && pub != nil {
		pub.ObserveAck = func(d time.Duration) { p.observeAck(d.Seconds()) }
	}
	p.mu.Lock()
	p.tr, p.pub = tr, pub
	p.mu.Unlock()
}
