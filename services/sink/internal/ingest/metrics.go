package ingest

import (
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/netpulse/netpulse/lib/obs"
)

// Readiness conditions of the sink (/readyz).
const (
	readyClickHouse = "clickhouse schema"
	readyNATS       = "nats streams"
	readyConsuming  = "consuming"
)

// Observe has the sink report to o: its counters as Prometheus series, the
// INSERT latency, and its readiness. A nil o (tests) records nothing.
func (s *Sink) Observe(o *obs.Obs) *Sink {
	s.obs = o
	if o == nil {
		return s
	}
	o.Await(readyClickHouse, readyNATS, readyConsuming)
	inserts := obs.Histogram("sink_insert_duration_seconds", "Duration of the sink's INSERTs that succeeded, by table.", "table")
	s.observeInsert = func(table string, d time.Duration) { inserts.WithLabelValues(table).Observe(d.Seconds()) }
	consumers := []*consumer{s.events, s.alerts}
	counter := func(name, help string, get func(Counters) uint64) prometheus.Collector {
		return obs.NewLabeled(name, help, prometheus.CounterValue, []string{"consumer"}, func(emit func(float64, ...string)) {
			for _, c := range consumers {
				emit(float64(get(c.snapshot().Counters)), c.name)
			}
		})
	}
	o.Register(inserts,
		counter("sink_messages_total", "NATS messages handled (acked after their rows were stored, or terminated as bad).", func(c Counters) uint64 { return c.Messages }),
		counter("sink_rows_inserted_total", "Rows inserted into ClickHouse.", func(c Counters) uint64 { return c.RowsInserted }),
		counter("sink_rows_duplicate_total", "Rows of redelivered messages found stored already, and skipped.", func(c Counters) uint64 { return c.RowsDuplicate }),
		counter("sink_lookups_total", "Queries for rows already stored (redeliveries, INSERTs of unknown outcome).", func(c Counters) uint64 { return c.Lookups }),
		counter("sink_inserts_total", "INSERT statements that succeeded.", func(c Counters) uint64 { return c.Inserts }),
		counter("sink_insert_errors_total", "INSERTs that failed (their rows are kept and tried again).", func(c Counters) uint64 { return c.InsertErrors }),
		counter("sink_bad_messages_total", "Messages terminated as undecodable or invalid (lost by design, logged once per reason).", func(c Counters) uint64 { return c.BadMessages }),
		counter("sink_redelivered_total", "Deliveries of a message the sink already held.", func(c Counters) uint64 { return c.Redelivered }),
		obs.NewLabeled("sink_buffered_rows", "Rows waiting for an INSERT (buffered or being inserted).", prometheus.GaugeValue, []string{"consumer"}, func(emit func(float64, ...string)) {
			for _, c := range consumers {
				emit(float64(c.snapshot().buffered), c.name)
			}
		}),
		obs.NewLabeled("sink_consumer_pending_messages", "Messages of the stream not yet delivered to the sink's durable consumer, as of the last delivery: the sink's lag.", prometheus.GaugeValue, []string{"consumer"}, func(emit func(float64, ...string)) {
			for _, c := range consumers {
				emit(float64(c.snapshot().pending), c.name)
			}
		}),
	)
	return s
}

// refreshEvery is how often the loop copies its counters for scrapes: a
// copy per message would cost the hot path for nothing a scrape sees.
const refreshEvery = 100 * time.Millisecond

// snap is what a scrape reads of a consumer: a copy the loop refreshes.
type snap struct {
	Counters
	buffered int
	pending  uint64 // NumPending of the last message's metadata
}

func (c *consumer) snapshot() snap {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.snap
}

// refresh copies the loop's counters for scrapes.
func (c *consumer) refresh() {
	s := snap{Counters: c.counters(), buffered: c.w.Buffered(), pending: c.lastPending}
	for _, job := range c.flushing {
		s.buffered += job.rows
	}
	c.mu.Lock()
	c.snap = s
	c.mu.Unlock()
}
