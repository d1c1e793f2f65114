package probe

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"log/slog"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/netpulse/netpulse/lib/eventpb"
	"github.com/netpulse/netpulse/lib/natsutil"
	"github.com/netpulse/netpulse/services/probe/internal/publish"
	"github.com/netpulse/netpulse/services/probe/internal/tracer"
)

// shutdownGrace bounds how long the probe waits for outstanding acks after
// it was told to stop.
const shutdownGrace = 10 * time.Second

// Stats is the JSON document the probe publishes on
// netpulse.events.<host>.stats every stats.interval. Counters are totals
// since the probe started.
type Stats struct {
	Host             string    `json:"host"`
	ProbeID          string    `json:"probe_id"`
	Time             time.Time `json:"time"`
	UptimeSeconds    float64   `json:"uptime_seconds"`
	EventsKernel     uint64    `json:"events_kernel"`     // records the BPF program submitted
	EventsSeen       uint64    `json:"events_seen"`       // records read from the ring buffer
	EventsPublished  uint64    `json:"events_published"`  // events in batches JetStream acknowledged
	RingbufDrops     uint64    `json:"ringbuf_drops"`     // records lost: ring buffer full
	DecodeErrors     uint64    `json:"decode_errors"`     // records that did not decode
	PublishErrors    uint64    `json:"publish_errors"`    // failed publish attempts (retried)
	EventsDropped    uint64    `json:"events_dropped"`    // events given up at shutdown
	BatchesPublished uint64    `json:"batches_published"` // NATS messages acknowledged
	InFlight         int       `json:"batches_in_flight"` // published, not yet acknowledged
}

// Probe is one running probe.
type Probe struct {
	cfg     Config
	log     *slog.Logger
	host    string
	probeID string
	started time.Time

	seen, decodeErrs atomic.Uint64
}

// New checks cfg and resolves the host name; it starts nothing.
func New(cfg Config, log *slog.Logger) (*Probe, error) {
	host := cfg.Host
	if host == "" {
		h, err := os.Hostname()
		if err != nil {
			return nil, fmt.Errorf("host: not set and os.Hostname failed: %w", err)
		}
		host = h
	}
	host = natsutil.SanitizeToken(host, cfg.HostReplacement)
	var id [8]byte
	_, _ = rand.Read(id[:])
	return &Probe{cfg: cfg, log: log.With("component", "probe", "host", host), host: host, probeID: hex.EncodeToString(id[:])}, nil
}

// Host is the host token used in subjects.
func (p *Probe) Host() string { return p.host }

// Run loads the eBPF program, publishes events until ctx ends, then flushes
// what it holds and returns.
func (p *Probe) Run(ctx context.Context) error {
	p.started = time.Now()
	tr, err := tracer.Open(tracer.Config{RingBufferBytes: p.cfg.Tracer.RingBufferBytes, SocketMapEntries: p.cfg.Tracer.SocketMapEntries})
	if err != nil {
		return err
	}
	defer tr.Close()

	nc, err := natsutil.Connect(p.cfg.NATS, "netpulse-probe "+p.host, p.log)
	if err != nil {
		return err
	}
	defer nc.Close()
	js, err := jetstream.New(nc, jetstream.WithPublishAsyncMaxPending(p.cfg.Publish.MaxInFlight+1))
	if err != nil {
		return fmt.Errorf("jetstream: %w", err)
	}
	if _, err := natsutil.EnsureEventsStream(ctx, js, p.cfg.Stream, p.log); err != nil {
		return err
	}

	pub := publish.New(p.cfg.Publish, js, p.log)
	// pubStop ends retries: only after the grace period that follows ctx.
	pubStop, stopPub := context.WithCancel(context.Background())
	defer stopPub()
	go pub.Run(pubStop)

	var mu sync.Mutex // guards out and the event below
	out := newOutputs(p.host, p.probeID, p.cfg.Batch, pub, pubStop)
	var ev eventpb.Event
	var seq uint64

	bg, stopBg := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Add(2)
	go func() { // time-based flush: a quiet host still sees its events within flush_interval
		defer wg.Done()
		t := time.NewTicker(max(p.cfg.Batch.FlushInterval/4, time.Millisecond))
		defer t.Stop()
		for {
			select {
			case <-bg.Done():
				return
			case now := <-t.C:
				mu.Lock()
				out.flushOlder(now, p.cfg.Batch.FlushInterval)
				mu.Unlock()
			}
		}
	}()
	go func() {
		defer wg.Done()
		t := time.NewTicker(p.cfg.Stats.Interval)
		defer t.Stop()
		for {
			select {
			case <-bg.Done():
				return
			case <-t.C:
				p.report(nc, tr, pub)
			}
		}
	}()

	p.log.Info("probe running", "probe_id", p.probeID, "subject", natsutil.EventSubject(p.host, natsutil.KindState))
	dec := tracer.NewDecoder()
	readErr := tr.Read(ctx, func(raw []byte) {
		p.seen.Add(1)
		mu.Lock()
		defer mu.Unlock()
		if err := dec.Decode(raw, &ev); err != nil {
			if p.decodeErrs.Add(1) == 1 {
				p.log.Error("undecodable ring-buffer record (counted in decode_errors; logged once)", "err", err, "len", len(raw))
			}
			return
		}
		seq++
		ev.Seq = seq
		out.event(&ev, time.Now())
	})

	// Stopping: flush the partial batch and wait, for at most shutdownGrace,
	// for every ack; what is left then is counted as dropped.
	grace := time.AfterFunc(shutdownGrace, func() {
		p.log.Error("outstanding batches not acknowledged in time; counting them as dropped", "grace", shutdownGrace)
		stopPub()
	})
	defer grace.Stop()
	stopBg()
	wg.Wait()
	mu.Lock()
	out.flushAll()
	mu.Unlock()
	pub.Close()
	<-pub.Done()
	p.report(nc, tr, pub)
	_ = nc.FlushTimeout(2 * time.Second) // the stats above; NATS may be gone
	if readErr != nil {
		return fmt.Errorf("ring buffer: %w", readErr)
	}
	return nil
}

// stats returns the current counters.
func (p *Probe) stats(tr *tracer.Tracer, pub *publish.Publisher) Stats {
	s := Stats{
		Host: p.host, ProbeID: p.probeID, Time: time.Now().UTC(),
		UptimeSeconds: time.Since(p.started).Seconds(),
		EventsSeen:    p.seen.Load(), DecodeErrors: p.decodeErrs.Load(),
	}
	if c, err := tr.Counters(); err == nil {
		s.EventsKernel, s.RingbufDrops = c.Submitted, c.Dropped
	} else {
		p.log.Warn("reading kernel counters", "err", err)
	}
	pc := pub.Counters()
	s.EventsPublished, s.BatchesPublished, s.PublishErrors, s.EventsDropped, s.InFlight =
		pc.EventsPublished, pc.BatchesPublished, pc.PublishErrors, pc.EventsDropped, pc.InFlight
	return s
}

// report logs the counters (as a warning once anything was lost) and
// publishes them on the stats subject.
func (p *Probe) report(nc *nats.Conn, tr *tracer.Tracer, pub *publish.Publisher) {
	s := p.stats(tr, pub)
	level := slog.LevelInfo
	if s.RingbufDrops > 0 || s.DecodeErrors > 0 || s.EventsDropped > 0 {
		level = slog.LevelWarn
	}
	p.log.Log(context.Background(), level, "probe stats",
		"events_kernel", s.EventsKernel, "events_seen", s.EventsSeen, "events_published", s.EventsPublished,
		"ringbuf_drops", s.RingbufDrops, "decode_errors", s.DecodeErrors, "publish_errors", s.PublishErrors,
		"events_dropped", s.EventsDropped, "batches_in_flight", s.InFlight)
	data, _ := json.Marshal(s)
	// Stats go to the same stream (it captures netpulse.events.>); core
	// publish is enough for a periodic health report.
	if err := nc.Publish(natsutil.EventSubject(p.host, natsutil.KindStats), data); err != nil {
		p.log.Warn("publishing stats", "err", err)
	}
}
