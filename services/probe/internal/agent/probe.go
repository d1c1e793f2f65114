// Package agent is what netpulse-probe runs: it wires the eBPF tracer to
// JetStream (decode, attribute, batch per kind, publish), keeps a socket
// table for snapshots, and reports its own health.
package agent

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/netpulse/netpulse/lib/eventpb"
	"github.com/netpulse/netpulse/lib/natsutil"
	"github.com/netpulse/netpulse/lib/obs"
	"github.com/netpulse/netpulse/lib/wire"
	"github.com/netpulse/netpulse/services/probe/internal/caps"
	"github.com/netpulse/netpulse/services/probe/internal/endpoints"
	"github.com/netpulse/netpulse/services/probe/internal/publish"
	"github.com/netpulse/netpulse/services/probe/internal/socktable"
	"github.com/netpulse/netpulse/services/probe/internal/tracer"
)

// shutdownGrace bounds how long the probe waits for outstanding acks after
// it was told to stop.
const shutdownGrace = 10 * time.Second

// Probe is one running probe.
type Probe struct {
	cfg     Config
	log     *slog.Logger
	host    string
	probeID string
	started time.Time

	// mu guards everything below: the ring-buffer reader, the flush and
	// snapshot tickers and the seeding goroutine all use them.
	mu    sync.Mutex
	table *socktable.Table
	// endpoints groups TIME_WAIT and FIN_WAIT2 sockets by remote endpoint
	// for the snapshots.
	endpoints *endpoints.Tracker
	out       *outputs
	seq       uint64 // last Event/Connection seq
	snap      eventpb.Snapshot
	c         counters
	// resyncReady: the start-up seed is over (or off), resyncs may run.
	resyncReady bool
	// kernelSubmitted reads how many records the kernel has written to
	// the ring buffer; false when it cannot.
	kernelSubmitted func() (uint64, bool)

	rs resyncer

	obs        *obs.Obs      // see Observe
	observeAck func(float64) // nil: not observed
	// Under mu: what scrapes read, while Run has them open.
	tr  *tracer.Tracer
	pub *publish.Publisher
}

// counters are the probe's own totals (the kernel's are read from the
// tracer, the publisher's from the publisher).
type counters struct {
	seen, decodeErrs     uint64
	events, conns        uint64
	ownerUnknown         uint64 // events with a socket whose owner nobody knew
	ownerFilled          uint64 // owners the socket table supplied
	snapshots, snapErrs  uint64
	dropCounts, dropErrs uint64
	tableErrs            uint64
	seed                 SeedStats
	resync               resyncCounters
	skippedTracepoints   []string
	decodeErrLogged      bool
	tableErrLogged       bool
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
	host = wire.SanitizeToken(host, cfg.HostReplacement)
	var id [8]byte
	_, _ = rand.Read(id[:])
	return &Probe{cfg: cfg, log: log.With("component", "probe", "host", host), host: host, probeID: hex.EncodeToString(id[:])}, nil
}

// Run loads the eBPF programs, publishes events until ctx ends, then
// flushes what it holds and returns.
func (p *Probe) Run(ctx context.Context) error {
	p.started = time.Now()
	if err := p.checkCapabilities(); err != nil {
		return err
	}
	tr, err := tracer.Open(p.cfg.Tracer.tracer())
	if err != nil {
		return err
	}
	defer tr.Close()
	p.obs.Ready(readyTracepoints, true)
	for _, s := range tr.Skipped() {
		// Once, at start: the other tracepoints keep working.
		p.log.Warn("tracepoint not available on this kernel; its events are skipped", "tracepoint", s.Tracepoint, "err", s.Err)
		p.c.skippedTracepoints = append(p.c.skippedTracepoints, s.Tracepoint)
	}

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
	p.obs.Ready(readyNATS, true)

	pub := publish.New(p.cfg.Publish, js, p.log)
	p.observed(tr, pub)
	defer p.observed(nil, nil) // before tr.Close
	// pubStop ends retries: only after the grace period that follows ctx.
	pubStop, stopPub := context.WithCancel(context.Background())
	defer stopPub()
	go pub.Run(pubStop)

	p.table = socktable.New(p.cfg.Sockets.MaxEntries)
	p.endpoints = endpoints.New(maxClosers)
	p.kernelSubmitted = func() (uint64, bool) {
		c, err := tr.Counters()
		return c.Submitted, err == nil
	}
	p.out = newOutputs(p.host, p.probeID, p.cfg.Batch, pub, pubStop)

	bg, stopBg := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	every := func(d time.Duration, fn func(now time.Time)) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			t := time.NewTicker(d)
			defer t.Stop()
			for {
				select {
				case <-bg.Done():
					return
				case now := <-t.C:
					fn(now)
				}
			}
		}()
	}
	// A quiet host still sees its events within flush_interval.
	every(max(p.cfg.Batch.FlushInterval/4, time.Millisecond), func(now time.Time) {
		p.mu.Lock()
		p.out.flushOlder(now, p.cfg.Batch.FlushInterval)
		p.mu.Unlock()
	})
	every(p.cfg.Stats.Interval, func(time.Time) { p.report(nc, tr, pub) })
	resync := p.cfg.Sockets.ResyncInterval > 0
	defer p.rs.close()
	every(p.cfg.Snapshot.Interval, func(now time.Time) {
		if resync {
			// Leak alerts read the CLOSE_WAIT sockets: reconcile them first.
			p.resync(socktable.CloseWaitStates, false)
			now = time.Now()
		}
		p.snapshot(now)
	})
	drops := newDropCollector(time.Now())
	defer drops.close()
	if err := drops.prime(); err != nil {
		p.log.Warn("reading the listeners' drop counters at start; the first interval is the baseline", "err", err)
	}
	every(p.cfg.Drops.Interval, func(now time.Time) { p.publishDrops(drops, tr, now) })
	if resync {
		every(p.cfg.Sockets.ResyncInterval, func(time.Time) { p.resync(socktable.SeedStates, true) })
	}
	if p.cfg.Sockets.Seed {
		// After attaching, so that no socket falls between the dump and the
		// events; concurrently with reading, so the ring buffer keeps
		// draining during the dump.
		wg.Add(1)
		go func() {
			defer wg.Done()
			p.seed(bg, tr)
			p.mu.Lock()
			p.resyncReady = true
			p.mu.Unlock()
		}()
	} else {
		p.mu.Lock()
		p.table.AbandonSeed()
		p.resyncReady = true
		p.mu.Unlock()
	}

	p.log.Info("probe running", "probe_id", p.probeID, "subjects", wire.EventSubject(p.host, "*"))
	dec := tracer.NewDecoder()
	var ev eventpb.Event
	var conn eventpb.Connection
	readErr := tr.Read(ctx, func(raw []byte) {
		p.mu.Lock()
		defer p.mu.Unlock()
		p.record(dec, raw, &ev, &conn)
	})

	// Stopping: flush the partial batches and wait, for at most
	// shutdownGrace, for every ack; what is left then is counted as dropped.
	grace := time.AfterFunc(shutdownGrace, func() {
		p.log.Error("outstanding batches not acknowledged in time; counting them as dropped", "grace", shutdownGrace)
		stopPub()
	})
	defer grace.Stop()
	stopBg()
	wg.Wait()
	p.publishDrops(drops, tr, time.Now()) // the last, partial interval
	p.mu.Lock()
	p.out.flushAll()
	p.mu.Unlock()
	pub.Close()
	<-pub.Done()
	p.report(nc, tr, pub)
	_ = nc.FlushTimeout(2 * time.Second) // the stats above; NATS may be gone
	if readErr != nil {
		return fmt.Errorf("ring buffer: %w", readErr)
	}
	return nil
}

// requiredCapabilities is the capability set the probe needs with its
// configuration on this host (package caps).
func (p *Probe) requiredCapabilities() []caps.Requirement {
	return caps.Required(caps.Options{
		ProcScan:     p.cfg.Sockets.Seed || p.cfg.Sockets.ResyncInterval > 0,
		MountTracefs: !tracer.TracefsMounted(),
	})
}

// checkCapabilities stops the probe at start, naming what it lacks, when
// it does not hold every capability it needs; as root it holds them all.
// When the capabilities cannot be read it warns and lets the kernel decide.
func (p *Probe) checkCapabilities() error {
	err := caps.Check(p.requiredCapabilities())
	var missing *caps.Error
	if err != nil && !errors.As(err, &missing) {
		p.log.Warn("cannot read this process's capabilities; not checking them", "err", err)
		return nil
	}
	return err
}

// record decodes one ring-buffer record, attributes it and batches it.
// p.mu is held.
func (p *Probe) record(dec tracer.Decoder, raw []byte, ev *eventpb.Event, conn *eventpb.Connection) {
	p.c.seen++
	now := time.Now()
	isConn, err := dec.DecodeRecord(raw, ev, conn)
	if err != nil {
		p.c.decodeErrs++
		if !p.c.decodeErrLogged {
			p.c.decodeErrLogged = true
			p.log.Error("undecodable ring-buffer record (counted in decode_errors; logged once)", "err", err, "len", len(raw))
		}
		return
	}
	p.seq++
	if isConn {
		conn.Seq = p.seq
		p.c.conns++
		p.out.conn(conn, now)
		return
	}
	ev.Seq = p.seq
	p.c.events++
	if ev.SockId != 0 { // a reset sent for no socket has none
		// The kernel side knows the owners of the sockets it saw opened;
		// the table adds those of sockets older than the probe.
		if p.table.FillOwner(ev) {
			p.c.ownerFilled++
		}
		if ev.OwnerSource == eventpb.OwnerSource_OWNER_SOURCE_UNKNOWN {
			p.c.ownerUnknown++
		}
		if err := p.table.Apply(ev); err != nil {
			p.c.tableErrs++
			if !p.c.tableErrLogged {
				p.c.tableErrLogged = true
				p.log.Error("socket table refused an event (counted in table_errors; logged once)", "err", err)
			}
		}
	}
	if ev.Type == eventpb.EventType_EVENT_TYPE_STATE_CHANGE {
		p.endpoints.Observe(ev)
	}
	p.out.event(ev, now)
}

// snapshot publishes the socket table's snapshot.
func (p *Probe) snapshot(now time.Time) {
	tcp, err := readTCPCounters("/proc/net/snmp")
	settings, serr := readPortSettings()
	p.mu.Lock()
	p.endpoints.Listening(p.table)
	p.mu.Unlock()
	eerr := p.readEndpoints(settings.finTimeout)

	p.mu.Lock()
	defer p.mu.Unlock()
	for _, e := range [...]struct {
		what string
		err  error
	}{{"reading /proc/net/snmp", err}, {"reading /proc/sys/net/ipv4", serr}, {"dumping TIME_WAIT and FIN_WAIT2 sockets (sock_diag)", eerr}} {
		if e.err != nil {
			p.c.snapErrs++
			p.log.Warn(e.what+" for the snapshot (counted in snapshot_errors)", "err", e.err)
		}
	}
	s := p.table.Snapshot(&p.snap, now, p.cfg.Snapshot.MaxGroups, p.cfg.Snapshot.MaxCloseWait)
	p.endpoints.Fill(s, p.table, p.cfg.Snapshot.MaxEndpoints)
	settings.fill(s)
	p.c.snapshots++
	s.TimeUnixNano = uint64(now.UnixNano())
	s.Seq = p.c.snapshots
	// The table holds every record up to p.seq, and none after: a
	// consumer orders events against the snapshot by seq, as the times
	// of events still in the ring buffer are older than now.
	s.EventsSeq = p.seq
	s.TcpOutSegs, s.TcpRetransSegs = tcp.OutSegs, tcp.RetransSegs
	s.IntervalMs = uint32(p.cfg.Snapshot.Interval.Milliseconds())
	p.out.snapshot(s, now)
}

// publishDrops publishes the drop counts of the interval that ends now.
// A source that could not be read is counted and logged; the other's
// counts still go out.
func (p *Probe) publishDrops(c *dropCollector, tr *tracer.Tracer, now time.Time) {
	drops, kerr, lerr := c.collect(now, tr)
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, e := range [...]struct {
		what string
		err  error
	}{{"reading the kernel's drop counts", kerr}, {"reading the listeners' drop counters (sock_diag)", lerr}} {
		if e.err != nil {
			p.c.dropErrs++
			p.log.Warn(e.what+" (counted in drop_errors)", "err", e.err)
		}
	}
	for _, d := range drops {
		p.out.drop(d, now)
	}
	p.out.flushKind(wire.KindDrop)
	p.c.dropCounts += uint64(len(drops))
}
