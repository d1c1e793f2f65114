package supervisor

import (
	"maps"
	"slices"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/netpulse/netpulse/lib/obs"
	"github.com/netpulse/netpulse/services/detector/internal/runner"
)

// Readiness conditions of a detector process (/readyz): the streams and
// buckets, and each selected detector's group joined.
const readyStreams = "nats streams and buckets"

// readyAlertmanager: the forwarder's consumer made and the firing alerts read.
const readyAlertmanager = "alertmanager forwarder started"

func readyGroup(detector string) string { return "group " + detector + " joined" }

// Observe has the supervisor report to o: every detector's counters as
// Prometheus series labelled by detector (and its plugin's own counters,
// as of the last stats line), and readiness. A nil o records nothing.
func (d *Supervisor) Observe(o *obs.Obs) *Supervisor {
	d.obs = o
	if o == nil {
		return d
	}
	conds := []string{readyStreams}
	for _, s := range d.cfg.Selected() {
		conds = append(conds, readyGroup(s.Name))
	}
	if d.forwarder != nil {
		conds = append(conds, readyAlertmanager)
		o.Register(d.forwarder.Collectors()...)
	}
	o.Await(conds...)
	names := slices.Sorted(maps.Keys(d.counters))
	lag := obs.Histogram("detector_event_lag_seconds", "Age of a live batch's newest record when the detector observes it: kernel event to detector.", "detector")
	for _, n := range names {
		d.counters[n].ObserveLag = lag.WithLabelValues(n).Observe
	}
	each := func(name, help string, kind prometheus.ValueType, get func(*runner.Counters) float64) prometheus.Collector {
		return obs.NewLabeled(name, help, kind, []string{"detector"}, func(emit func(float64, ...string)) {
			for _, n := range names {
				emit(get(d.counters[n]), n)
			}
		})
	}
	c, g := prometheus.CounterValue, prometheus.GaugeValue
	o.Register(lag,
		each("detector_messages_total", "Event batches handled (not stale, not duplicate).", c, func(r *runner.Counters) float64 { return float64(r.Messages.Load()) }),
		each("detector_events_total", "Events, connections and snapshots observed live.", c, func(r *runner.Counters) float64 { return float64(r.Events.Load()) }),
		each("detector_replayed_total", "Batches replayed from the stream during takeovers.", c, func(r *runner.Counters) float64 { return float64(r.Replayed.Load()) }),
		each("detector_evaluations_total", "Evaluations (one per host per tick).", c, func(r *runner.Counters) float64 { return float64(r.Evaluations.Load()) }),
		each("detector_stale_total", "Backlogged batches older than warmup, skipped.", c, func(r *runner.Counters) float64 { return float64(r.Stale.Load()) }),
		each("detector_duplicates_total", "Batches already observed (redelivery, replay overlap).", c, func(r *runner.Counters) float64 { return float64(r.Duplicates.Load()) }),
		each("detector_dead_lettered_total", "Batches the detector could not use, sent to NETPULSE_DEADLETTER.", c, func(r *runner.Counters) float64 { return float64(r.DeadLettered.Load()) }),
		each("detector_dead_letter_errors_total", "Dead letters that could not be published.", c, func(r *runner.Counters) float64 { return float64(r.DeadLetterErrors.Load()) }),
		each("detector_panics_total", "Plugin panics recovered (the host's batch was dead-lettered).", c, func(r *runner.Counters) float64 { return float64(r.Panics.Load()) }),
		each("detector_takeovers_total", "Partitions this replica took over.", c, func(r *runner.Counters) float64 { return float64(r.Takeovers.Load()) }),
		each("detector_alerts_published_total", "Alert messages published.", c, func(r *runner.Counters) float64 { return float64(r.Published()) }),
		each("detector_alert_publish_errors_total", "Failed alert publish attempts, retried.", c, func(r *runner.Counters) float64 { return float64(r.PublishErrors()) }),
		each("detector_hosts", "Hosts this replica holds state for.", g, func(r *runner.Counters) float64 { return float64(r.Hosts.Load()) }),
		each("detector_partitions", "Partitions of the detector's group this replica owns.", g, func(r *runner.Counters) float64 { return float64(r.Partitions.Load()) }),
		each("detector_consumer_pending_messages", "Batches of this replica's partitions not yet delivered to it, as of the last delivery: the detector's lag.", g, func(r *runner.Counters) float64 { return float64(r.Pending.Load()) }),
		obs.NewLabeled("detector_alerts_total", "Alert transitions raised, by detector and status.", c, []string{"detector", "status"}, func(emit func(float64, ...string)) {
			for _, n := range names {
				r := d.counters[n]
				emit(float64(r.Fired.Load()), n, "firing")
				emit(float64(r.Resolved.Load()), n, "resolved")
				emit(float64(r.Reminders.Load()), n, "reminder")
			}
		}),
		obs.NewLabeled("detector_plugin_counter", "A detector plugin's own counters (detect.Counting), by name, as of the last stats line.", c, []string{"detector", "counter"}, func(emit func(float64, ...string)) {
			for _, n := range names {
				for k, v := range d.counters[n].Plugin() {
					emit(float64(v), n, k)
				}
			}
		}),
	)
	return d
}
