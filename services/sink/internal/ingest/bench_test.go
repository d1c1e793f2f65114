package ingest

import (
	"bytes"
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"runtime/metrics"
	"runtime/pprof"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/netpulse/netpulse/lib/eventpb"
	"github.com/netpulse/netpulse/lib/natsutil"
	"github.com/netpulse/netpulse/lib/testutil/natstest"
	"github.com/netpulse/netpulse/lib/testutil/procstat"
	"github.com/netpulse/netpulse/lib/wire"
	"github.com/netpulse/netpulse/services/sink/internal/chschema"
	"github.com/netpulse/netpulse/services/sink/internal/chwriter"
)

var (
	benchMessages  = flag.Int("bench.messages", 1000, "BenchmarkSinkThroughput: messages in the pre-filled stream")
	benchPerBatch  = flag.Int("bench.batch_events", 3000, "BenchmarkSinkThroughput: events per message")
	benchMaxRowsOf = flag.String("bench.max_rows", "100000,200000,500000", "BenchmarkSinkThroughput: batch.max_rows values to run, comma-separated")
	benchInProcess = flag.Bool("bench.inprocess", false, "BenchmarkSinkThroughput: run sink.Run in the test process (for -cpuprofile); peak is then the Go heap's")
)

// BenchmarkSinkThroughput measures the sink binary draining a backlog: a
// JetStream stream (embedded server, file storage) pre-filled with
// -bench.messages x -bench.batch_events synthetic events (3M by default),
// into the real ClickHouse of chtest. One sub-benchmark per batch.max_rows;
// each b.Loop iteration is one sink process with a durable consumer and a
// database of its own, run until the consumer has acknowledged the whole
// stream. The sink runs as a separate process so that its peak resident
// memory (VmHWM) is its own.
//
// Reported: events/s from the moment the sink's consumer exists (schema
// ready) to the last ack, the same from process start, the same up to the
// ack before the last (the final, partial batch waits for flush_interval,
// 1 s), peak RSS, and the sink's CPU seconds per million events. To profile the sink, run it in
// this process: -args -bench.inprocess, with -cpuprofile or -memprofile;
// the sink's samples carry the label part=sink (go tool pprof -tagfocus
// part=sink), apart from the ceiling's row building and the NATS server.
func BenchmarkSinkThroughput(b *testing.B) { benchThroughput(b, false) }

// BenchmarkSinkThroughputMixed is BenchmarkSinkThroughput with every data
// kind in the stream, as a probe sends them, in rows (of any table) per
// second: of every ten messages six hold state changes, one retransmits,
// one resets (of -bench.batch_events events each), one a fifth as many
// finished connections, and one a snapshot (200 groups and 100 CLOSE_WAIT
// sockets). Only the first -bench.max_rows value is run.
func BenchmarkSinkThroughputMixed(b *testing.B) { benchThroughput(b, true) }

func benchThroughput(b *testing.B, mixed bool) {
	srv.Require(b)
	var maxRows []int
	for _, f := range strings.Split(*benchMaxRowsOf, ",") {
		n, err := strconv.Atoi(strings.TrimSpace(f))
		if err != nil {
			b.Fatalf("-bench.max_rows: %v", err)
		}
		maxRows = append(maxRows, n)
	}
	bin, peakName := "", "go_heap"
	if !*benchInProcess {
		bin, peakName = buildSink(b), "rss"
	}
	ns := natstest.Start(b)
	_, js := natstest.Connect(b, ns)
	gen := &synth{n: *benchPerBatch, mixed: mixed, base: uint64(time.Now().Add(-10 * time.Minute).UnixNano())}
	bl := prefill(b, js, *benchMessages, gen)
	unit := "events"
	if mixed {
		unit, maxRows = "rows", maxRows[:1]
	}
	perMsg := float64(bl.total) / float64(*benchMessages)
	chPIDs := clickhousePIDs(b)

	for _, rows := range maxRows {
		b.Run(fmt.Sprintf("max_rows=%d", rows), func(b *testing.B) {
			var sum sinkRun
			var fullBatches float64 // events/s up to the last full batch, summed
			var ceil ceilingRun
			for i := 0; b.Loop(); i++ {
				// Sink and ceiling alternate which goes first: each leaves
				// ClickHouse merges behind.
				var c ceilingRun
				if i%2 == 1 {
					c = runCeiling(b, gen, chPIDs, rows, bl)
				}
				ch0 := cpuOf(b, chPIDs)
				var r sinkRun
				pprof.Do(context.Background(), pprof.Labels("part", "sink"), func(context.Context) {
					r = runSink(b, bin, ns.ClientURL(), js, rows, bl)
				})
				chSink := cpuOf(b, chPIDs) - ch0
				full := float64(r.floor) * perMsg / (r.floorAt - r.startup).Seconds()
				if i%2 == 0 {
					c = runCeiling(b, gen, chPIDs, rows, bl)
				}
				b.Logf("sink: %.2f s (%.2f s to the consumer), peak %s %.0f MiB, CPU %.1f s (ClickHouse %.1f s); ceiling: %.2f s of INSERTs (%.0f events/s; ClickHouse %.1f s); sink/ceiling %.0f%%",
					r.total.Seconds(), r.startup.Seconds(), peakName, float64(r.peakKiB)/1024, r.cpu.Seconds(), chSink.Seconds(),
					c.inserting.Seconds(), float64(bl.total)/c.inserting.Seconds(), c.serverCPU.Seconds(), 100*full*c.inserting.Seconds()/float64(bl.total))
				sum.total += r.total
				sum.startup += r.startup
				sum.cpu += r.cpu
				sum.serverCPU += chSink
				sum.peakKiB = max(sum.peakKiB, r.peakKiB)
				fullBatches += full
				ceil.inserting += c.inserting
				ceil.serverCPU += c.serverCPU
				ceil.clientCPU += c.clientCPU
			}
			runs := float64(b.N)
			drain := (sum.total - sum.startup).Seconds()
			total := float64(bl.total)
			mev := total * runs / 1e6
			ceiling := total * runs / ceil.inserting.Seconds()
			b.ReportMetric(total*runs/drain, unit+"/s")
			b.ReportMetric(total*runs/sum.total.Seconds(), unit+"/s_with_startup")
			b.ReportMetric(fullBatches/runs, unit+"/s_full_batches")
			b.ReportMetric(ceiling, unit+"/s_ceiling")
			b.ReportMetric(100*fullBatches/runs/ceiling, "share%_full_batches")
			b.ReportMetric(100*total*runs/drain/ceiling, "share%")
			b.ReportMetric(float64(sum.peakKiB)/1024, "peak_"+peakName+"_MiB")
			if !*benchInProcess {
				b.ReportMetric(sum.cpu.Seconds()/mev, "cpu_s/M"+unit)
			}
			if len(chPIDs) > 0 {
				b.ReportMetric(sum.serverCPU.Seconds()/mev, "ch_cpu_s/M"+unit)
				b.ReportMetric(ceil.serverCPU.Seconds()/mev, "ceiling_ch_cpu_s/M"+unit)
			}
			b.ReportMetric(ceil.clientCPU.Seconds()/mev, "ceiling_client_cpu_s/M"+unit)
			b.ReportMetric(0, "ns/op")
		})
	}
}

// ceilingRun is what runCeiling measured.
type ceilingRun struct {
	inserting time.Duration // wall time of the INSERTs, back to back
	serverCPU time.Duration // ClickHouse's CPU time meanwhile
	clientCPU time.Duration // this process's CPU time meanwhile (the client's encoding; the idle NATS server's)
}

// runCeiling is the ceiling the sink is measured against: the same rows
// (gen makes the backlog's messages again), with the same client and the
// same INSERTs (chwriter's, one per partition of every batch of maxRows
// rows, as the sink makes them), into a database of its own, without NATS,
// protobuf decoding or the building of the rows. Every batch is built
// first; then they are inserted back to back, and only that counts. So the
// share is what the rest of the sink (fetch, decode, row building, acks,
// as far as they do not overlap the INSERTs) costs on top of the INSERTs it
// cannot avoid; ClickHouse's background merges run in both.
func runCeiling(b *testing.B, gen *synth, chPIDs []int, maxRows int, bl backlog) ceilingRun {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	db := srv.NewDatabase(b)
	// As the sink opens its connection (ingest.Sink.Run).
	cfg := DefaultConfig().ClickHouse
	cfg.Addr = srv.Addr()
	opts, err := cfg.Options()
	if err != nil {
		b.Fatal(err)
	}
	conn, err := clickhouse.Open(opts)
	if err != nil {
		b.Fatal(err)
	}
	defer conn.Close()
	f, err := chschema.Probe(ctx, conn)
	if err != nil {
		b.Fatal(err)
	}
	if err := chschema.Migrate(ctx, conn, f, chschema.Options{Database: db, TTLDays: cfg.TTLDays}); err != nil {
		b.Fatal(err)
	}
	w := chwriter.New(conn, db, quiet)
	var batches []*chwriter.Detached
	var batch eventpb.Batch
	for m := range int(bl.lastSeq - bl.firstSeq + 1) {
		kind := gen.batch(m, &batch)
		if err := w.Add(ctx, kind, bl.firstSeq+uint64(m), false, &batch); err != nil {
			b.Fatalf("ceiling: %v", err)
		}
		if w.Buffered() >= maxRows {
			batches = append(batches, w.Detach())
		}
	}
	batches = append(batches, w.Detach())
	runtime.GC() // not the building's garbage while inserting

	var r ceilingRun
	ch0, self0, t0 := cpuOf(b, chPIDs), selfCPU(b), time.Now()
	for _, d := range batches {
		if err := d.Flush(ctx); err != nil {
			b.Fatalf("ceiling: %v", err)
		}
	}
	r.inserting = time.Since(t0)
	r.serverCPU = cpuOf(b, chPIDs) - ch0
	r.clientCPU = selfCPU(b) - self0
	for table, want := range bl.rows {
		var rows uint64
		if err := conn.QueryRow(ctx, "SELECT count() FROM "+db+"."+table).Scan(&rows); err != nil {
			b.Fatal(err)
		}
		if rows != want {
			b.Errorf("ceiling: %s holds %d rows, want %d", table, rows, want)
		}
	}
	if err := conn.Exec(ctx, "DROP DATABASE "+db); err != nil {
		b.Fatal(err)
	}
	return r
}

// clickhousePIDs are the ClickHouse server processes this test process
// started (chtest's), for their CPU time: processes named clickhouse* of
// which this process is an ancestor. Other engineers' servers on the same
// machine are not counted. Nil when none is found.
func clickhousePIDs(b *testing.B) []int {
	dirs, err := os.ReadDir("/proc")
	if err != nil {
		return nil
	}
	parent := map[int]int{}
	var cands []int
	for _, d := range dirs {
		pid, err := strconv.Atoi(d.Name())
		if err != nil {
			continue
		}
		stat, err := os.ReadFile("/proc/" + d.Name() + "/stat")
		if err != nil {
			continue
		}
		open, end := bytes.IndexByte(stat, '('), bytes.LastIndexByte(stat, ')')
		if open < 0 || end < open {
			continue
		}
		f := bytes.Fields(stat[end+1:])
		if len(f) < 2 {
			continue
		}
		ppid, _ := strconv.Atoi(string(f[1]))
		parent[pid] = ppid
		if strings.HasPrefix(string(stat[open+1:end]), "clickhouse") {
			cands = append(cands, pid)
		}
	}
	self := os.Getpid()
	var pids []int
	for _, pid := range cands {
		for p, hops := parent[pid], 0; p > 1 && hops < 20; p, hops = parent[p], hops+1 {
			if p == self {
				pids = append(pids, pid)
				break
			}
		}
	}
	return pids
}

// cpuOf is the CPU time processes pids have used so far.
func cpuOf(b *testing.B, pids []int) time.Duration {
	var sum time.Duration
	for _, pid := range pids {
		d, err := procstat.CPU(pid)
		if err != nil {
			b.Fatalf("ClickHouse server CPU: %v", err)
		}
		sum += d
	}
	return sum
}

// selfCPU is this process's CPU time so far.
func selfCPU(b *testing.B) time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		b.Fatal(err)
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// buildSink builds the sink's command into a temp dir.
func buildSink(b *testing.B) string {
	bin := filepath.Join(b.TempDir(), "netpulse-sink")
	out, err := exec.Command("go", "build", "-o", bin, "github.com/netpulse/netpulse/services/sink/cmd/sink").CombinedOutput()
	if err != nil {
		b.Fatalf("go build the sink: %v\n%s", err, out)
	}
	return bin
}

// backlog is what prefill put in the stream.
type backlog struct {
	firstSeq, lastSeq uint64            // the stream's first and last sequence
	rows              map[string]uint64 // rows per table the sink must store
	total             uint64            // rows in all tables
}

// synth makes the backlog's messages: message m of msgs batches of n
// synthetic events each (of every kind when mixed), from ten hosts. The
// same m always gives the same batch, so the ceiling inserts exactly the
// rows the sink stores.
type synth struct {
	n     int
	mixed bool
	base  uint64 // time of event 0
}

const synthHosts = 10

// batch fills b (reused: its slices are kept) with message m, and returns
// its kind.
func (s *synth) batch(m int, b *eventpb.Batch) string {
	h := m % synthHosts
	msgs := m / synthHosts // earlier messages of host h
	host := fmt.Sprintf("web-%02d", h)
	*b = eventpb.Batch{SchemaVersion: eventpb.SchemaVersion, Host: host, ProbeId: fmt.Sprintf("probe%02d", h), BatchSeq: uint64(msgs + 1),
		Events: b.Events[:0], Connections: b.Connections[:0]}
	kind := wire.KindState
	if s.mixed {
		kind = mixedKinds[m%len(mixedKinds)]
	}
	// Per-host event seq, as one probe run each: the rows of host h's
	// earlier messages come first.
	seq := s.hostRows(m, h)
	n := s.n
	switch kind {
	case wire.KindConn:
		for i := range n / 5 {
			seq++
			c := growAt(&b.Connections, i)
			synthConn(c, uint64(m*n+i*5), s.base, seq)
		}
	case wire.KindSnapshot:
		b.Snapshot = synthSnapshot(uint64(m*n), s.base, seq+1)
	default:
		for i := range n {
			seq++
			ev := growAt(&b.Events, i)
			synthEvent(ev, uint64(m*n+i), s.base, seq)
			switch kind {
			case wire.KindRetransmit:
				ev.Type, ev.OldState, ev.Segments = eventpb.EventType_EVENT_TYPE_RETRANSMIT, 0, 1+uint32(i%3)
				ev.SegsOut = 20 + uint32(m*n+i)%5000 // segments sent so far: growing, of varied size
			case wire.KindReset:
				ev.Type, ev.OldState = eventpb.EventType_EVENT_TYPE_RESET_SENT+eventpb.EventType(i%2), 0
			}
		}
	}
	return kind
}

// hostRows is the number of probe seqs (rows) host h used in the messages
// before m.
func (s *synth) hostRows(m, h int) uint64 {
	var seq uint64
	for k := h; k < m; k += synthHosts {
		kind := wire.KindState
		if s.mixed {
			kind = mixedKinds[k%len(mixedKinds)]
		}
		switch kind {
		case wire.KindConn:
			seq += uint64(s.n / 5)
		case wire.KindSnapshot:
			seq++
		default:
			seq += uint64(s.n)
		}
	}
	return seq
}

// growAt returns (*s)[i], extending *s by one (reusing its capacity) when i
// is its length.
func growAt[T any](s *[]*T, i int) *T {
	if i < len(*s) {
		return (*s)[i]
	}
	if i < cap(*s) {
		*s = (*s)[:i+1]
		if (*s)[i] == nil {
			(*s)[i] = new(T)
		}
		return (*s)[i]
	}
	*s = append(*s, new(T))
	return (*s)[i]
}

// rowsOf is the number of rows batch b of kind holds, and their table.
func rowsOf(kind string, b *eventpb.Batch) (string, uint64) {
	switch kind {
	case wire.KindConn:
		return "tcp_connections", uint64(len(b.Connections))
	case wire.KindSnapshot:
		return "socket_snapshots", uint64(1 + len(b.Snapshot.Groups) + len(b.Snapshot.CloseWait) + len(b.Snapshot.Endpoints))
	case wire.KindDrop:
		return "tcp_drops", uint64(len(b.Drops))
	}
	return "tcp_events", uint64(len(b.Events))
}

// prefill publishes the msgs messages of gen.
func prefill(b *testing.B, js jetstream.JetStream, msgs int, gen *synth) backlog {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	if _, err := natsutil.EnsureEventsStream(ctx, js, DefaultConfig().Stream, quiet); err != nil {
		b.Fatal(err)
	}
	start := time.Now()
	bl := backlog{rows: map[string]uint64{}}
	var bytesOut int
	var batch eventpb.Batch
	for m := range msgs {
		kind := gen.batch(m, &batch)
		table, n := rowsOf(kind, &batch)
		bl.rows[table] += n
		data, err := batch.MarshalVT()
		if err != nil {
			b.Fatal(err)
		}
		bytesOut += len(data)
		if _, err := js.PublishAsync(wire.EventSubject(batch.Host, kind), data,
			jetstream.WithMsgID(fmt.Sprintf("%s-%s-%d", batch.ProbeId, kind, batch.BatchSeq))); err != nil {
			b.Fatal(err)
		}
	}
	select {
	case <-js.PublishAsyncComplete():
	case <-ctx.Done():
		b.Fatal("pre-fill: publishes not acknowledged in time")
	}
	st, err := js.Stream(ctx, wire.EventsStream)
	if err != nil {
		b.Fatal(err)
	}
	info, err := st.Info(ctx)
	if err != nil {
		b.Fatal(err)
	}
	if info.State.Msgs != uint64(msgs) {
		b.Fatalf("pre-fill: the stream holds %d messages, want %d", info.State.Msgs, msgs)
	}
	for _, n := range bl.rows {
		bl.total += n
	}
	bl.lastSeq = info.State.LastSeq
	bl.firstSeq = info.State.FirstSeq
	// Not b.Logf: a benchmark with sub-benchmarks does not print its log.
	fmt.Fprintf(os.Stderr, "%s: pre-filled %d rows %v in %d messages of %d KiB in %.1f s\n",
		b.Name(), bl.total, bl.rows, msgs, bytesOut/msgs>>10, time.Since(start).Seconds())
	return bl
}

// mixedKinds is the order of kinds in a mixed backlog, ten messages.
var mixedKinds = []string{
	wire.KindState, wire.KindState, wire.KindRetransmit, wire.KindState, wire.KindConn,
	wire.KindState, wire.KindReset, wire.KindState, wire.KindSnapshot, wire.KindState,
}

// synthConn fills c as a connection whose events would be the i-th to
// i+4-th overall (see synthEvent).
func synthConn(c *eventpb.Connection, i, base, seq uint64) {
	conn := i / uint64(len(transitions))
	*c = eventpb.Connection{
		TimeUnixNano: base + i*10_000, Seq: seq, SockId: conn*0x9e3779b97f4a7c15 | 1,
		Pid: uint32(1000 + conn%97), Comm: comms[conn%uint64(len(comms))], CgroupId: 4000 + conn%uint64(len(comms)),
		OwnerSource: eventpb.OwnerSource_OWNER_SOURCE_TASK, Family: eventpb.Family_FAMILY_IPV4,
		Saddr: []byte{10, 0, byte(conn >> 8), byte(conn)}, Daddr: []byte{10, 1, byte(conn % 13), byte(conn % 251)},
		Sport: uint32(32768 + conn%28000), Dport: dport[conn%uint64(len(dport))], Side: eventpb.Side_SIDE_CLIENT,
		StartUnixNano: base + i*10_000 - 40_000, DurationUs: 40 + conn%10_000, BytesSent: conn % 100_000, BytesReceived: conn % 1_000_000,
		SegmentsOut: uint32(3 + conn%100), SegmentsIn: uint32(3 + conn%120), Retransmits: uint32(conn % 7 / 6), SrttUs: uint32(30 + conn%500),
		HandshakeUs: 80 + conn%400, LastState: eventpb.TcpState_TCP_STATE_FIN_WAIT2, Cookie: 1<<20 + conn,
	}
}

// synthSnapshot is a snapshot at the i-th event's time: 200 groups and 100
// CLOSE_WAIT sockets.
func synthSnapshot(i, base, seq uint64) *eventpb.Snapshot {
	s := &eventpb.Snapshot{
		TimeUnixNano: base + i*10_000, Seq: seq, GroupsCut: 3, CloseWaitTotal: 120, CloseWaitCut: 20, SocketsTotal: 5000,
		Seeded: true, TcpOutSegs: 1e9 + i, TcpRetransSegs: 1e6 + i/100, IntervalMs: 10_000,
	}
	for g := range uint64(200) {
		s.Groups = append(s.Groups, &eventpb.SocketGroup{
			State: eventpb.TcpState(1 + g%11), Pid: uint32(1000 + g%97), Comm: comms[g%uint64(len(comms))],
			CgroupId: 4000 + g%8, LocalPort: uint32(g % 50 * 100), Count: uint32(1 + g%40), Side: eventpb.Side(g % 3),
		})
	}
	for c := range uint64(100) {
		s.CloseWait = append(s.CloseWait, &eventpb.SnapshotSocket{
			SockId: c*0x9e3779b97f4a7c15 | 1, Cookie: 1<<20 + c, Pid: uint32(1000 + c%97), Comm: comms[c%uint64(len(comms))],
			CgroupId: 4000 + c%8, OwnerSource: eventpb.OwnerSource_OWNER_SOURCE_SOCKET, Family: eventpb.Family_FAMILY_IPV4,
			Saddr: []byte{10, 0, 0, 1}, Daddr: []byte{10, 1, 0, byte(c)}, Sport: 8080, Dport: uint32(40000 + c),
			Side: eventpb.Side_SIDE_SERVER, AgeUs: (100 - c) * 1_000_000, RecvQueue: uint32(c),
		})
	}
	return s
}

var (
	comms = []string{"nginx", "envoy", "postgres", "java", "curl", "redis-server", "python3", "node"}
	dport = []uint32{443, 80, 5432, 6379, 8080, 9092, 3306, 53}
	// A connection's life, as the kernel reports it on the client side.
	transitions = [][2]eventpb.TcpState{
		{eventpb.TcpState_TCP_STATE_CLOSE, eventpb.TcpState_TCP_STATE_SYN_SENT},
		{eventpb.TcpState_TCP_STATE_SYN_SENT, eventpb.TcpState_TCP_STATE_ESTABLISHED},
		{eventpb.TcpState_TCP_STATE_ESTABLISHED, eventpb.TcpState_TCP_STATE_FIN_WAIT1},
		{eventpb.TcpState_TCP_STATE_FIN_WAIT1, eventpb.TcpState_TCP_STATE_FIN_WAIT2},
		{eventpb.TcpState_TCP_STATE_FIN_WAIT2, eventpb.TcpState_TCP_STATE_CLOSE},
	}
)

// synthEvent fills ev as the i-th event overall (10 µs apart) and the
// seq-th of its host. Every connection has its own port, socket id and
// cookie; its owner and cgroup follow the process, and the change to
// ESTABLISHED carries the handshake, as the probe sends them.
func synthEvent(ev *eventpb.Event, i, base, seq uint64) {
	conn := i / uint64(len(transitions))
	tr := transitions[i%uint64(len(transitions))]
	var hsUs uint64
	var hsRetrans uint32
	if tr[1] == eventpb.TcpState_TCP_STATE_ESTABLISHED {
		hsUs, hsRetrans = 80+conn%400, uint32(conn%50/49)
	}
	*ev = eventpb.Event{
		OwnerSource: eventpb.OwnerSource_OWNER_SOURCE_TASK, CgroupId: 4000 + conn%uint64(len(comms)),
		Side: eventpb.Side_SIDE_CLIENT, Cookie: 1<<20 + conn, HandshakeUs: hsUs, HandshakeRetransmits: hsRetrans,
		Type:         eventpb.EventType_EVENT_TYPE_STATE_CHANGE,
		TimeUnixNano: base + i*10_000,
		Seq:          seq,
		Pid:          uint32(1000 + conn%97), Tid: uint32(1000 + conn%97 + conn%3),
		Comm:   comms[conn%uint64(len(comms))],
		Family: eventpb.Family_FAMILY_IPV4,
		Saddr:  []byte{10, 0, byte(conn >> 8), byte(conn)}, Daddr: []byte{10, 1, byte(conn % 13), byte(conn % 251)},
		Sport: uint32(32768 + conn%28000), Dport: dport[conn%uint64(len(dport))],
		OldState: tr[0], NewState: tr[1],
		StateDurationUs: 50 + conn%5000,
		SockId:          conn*0x9e3779b97f4a7c15 | 1,
	}
}

type sinkRun struct {
	total, startup, cpu time.Duration
	serverCPU           time.Duration // ClickHouse's, over the whole run
	peakKiB             int
	// The ack floor (a stream sequence) before the last flush, and when
	// it was reached: the last flush of a drain waits for flush_interval.
	floor   uint64
	floorAt time.Duration
}

// runSink runs a sink with its own database and durable consumer until the
// consumer has acknowledged bl.lastSeq, stops it and checks that ClickHouse
// holds every event once.
func runSink(b *testing.B, bin, natsURL string, js jetstream.JetStream, maxRows int, bl backlog) sinkRun {
	db := srv.NewDatabase(b)
	durable := "bench-" + db
	start := time.Now()
	var sk *startedSink
	if *benchInProcess {
		cfg := DefaultConfig()
		cfg.NATS = cfg.NATS.WithURL(natsURL)
		cfg.ClickHouse.Addr, cfg.ClickHouse.Database = srv.Addr(), db
		cfg.Consumer.Durable, cfg.Batch.MaxRows = durable, maxRows
		sk = startInProcess(cfg)
	} else {
		sk = startProcess(b, bin,
			"--nats.url="+natsURL, "--clickhouse.addr="+srv.Addr(), "--clickhouse.database="+db,
			"--consumer.durable="+durable, "--batch.max_rows="+strconv.Itoa(maxRows), "--log.level=warn")
	}

	var r sinkRun
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	for ; ; time.Sleep(10 * time.Millisecond) {
		if sk.sample != nil {
			sk.sample()
		}
		select {
		case err := <-sk.exited:
			b.Fatalf("the sink ended: %v\n%s", err, sk.stderr)
		case <-ctx.Done():
			b.Fatalf("the sink did not drain the stream in time\n%s", sk.stderr)
		default:
		}
		c, err := js.Consumer(ctx, wire.EventsStream, durable)
		if errors.Is(err, jetstream.ErrConsumerNotFound) {
			continue
		}
		if err != nil {
			b.Fatalf("consumer %s: %v", durable, err)
		}
		if r.startup == 0 {
			r.startup = time.Since(start)
		}
		info, err := c.Info(ctx)
		if err != nil {
			b.Fatalf("consumer %s: %v", durable, err)
		}
		if info.AckFloor.Stream >= bl.lastSeq {
			r.total = time.Since(start)
			break
		}
		if info.AckFloor.Stream != r.floor {
			r.floor, r.floorAt = info.AckFloor.Stream, time.Since(start)
		}
	}
	r.peakKiB = sk.peakKiB()
	sk.stop()
	if err := <-sk.exited; err != nil {
		b.Fatalf("the sink ended with %v when stopped\n%s", err, sk.stderr)
	}
	if sk.cpu != nil {
		r.cpu = sk.cpu()
	}

	conn := srv.Conn(b, db)
	for table, want := range bl.rows {
		var rows uint64
		if err := conn.QueryRow(ctx, "SELECT count() FROM "+table).Scan(&rows); err != nil {
			b.Fatal(err)
		}
		if rows != want {
			b.Errorf("%s holds %d rows, want %d", table, rows, want)
		}
	}
	// Drop it now, not when the benchmark ends: merges of old data would
	// slow down the next run.
	if err := conn.Exec(ctx, "DROP DATABASE "+db); err != nil {
		b.Fatal(err)
	}
	if err := js.DeleteConsumer(ctx, wire.EventsStream, durable); err != nil {
		b.Fatal(err)
	}
	return r
}

// startedSink is a running sink: the binary, or Run in this process.
type startedSink struct {
	exited  chan error
	stop    func()
	peakKiB func() int
	sample  func()               // called every 10 ms while it runs
	cpu     func() time.Duration // CPU time once exited; nil in process
	stderr  *bytes.Buffer        // of the process
}

// startProcess runs the sink binary with args (the usual case: its peak
// RSS and CPU time are its own).
func startProcess(b *testing.B, bin string, args ...string) *startedSink {
	cmd := exec.Command(bin, args...)
	cmd.Dir = b.TempDir() // no config/sink.yaml here: flags and defaults only
	sk := &startedSink{exited: make(chan error, 1), stderr: new(bytes.Buffer)}
	cmd.Stderr = sk.stderr
	if err := cmd.Start(); err != nil {
		b.Fatal(err)
	}
	go func() { sk.exited <- cmd.Wait() }()
	b.Cleanup(func() { _ = cmd.Process.Kill() }) // after a Fatal; harmless once exited
	sk.stop = func() { _ = cmd.Process.Signal(syscall.SIGTERM) }
	sk.peakKiB = func() int { return vmHWM(b, cmd.Process.Pid) }
	sk.cpu = func() time.Duration { return cmd.ProcessState.UserTime() + cmd.ProcessState.SystemTime() }
	return sk
}

// startInProcess runs sink.Run in this process, for -cpuprofile and
// -memprofile. Its peak is the Go heap's, sampled, and includes the
// embedded NATS server.
func startInProcess(cfg Config) *startedSink {
	ctx, cancel := context.WithCancel(context.Background())
	sk := &startedSink{exited: make(chan error, 1), stop: cancel, stderr: new(bytes.Buffer)}
	go func() { sk.exited <- New(cfg, quiet).Run(ctx) }()
	sample := []metrics.Sample{{Name: "/memory/classes/heap/objects:bytes"}}
	var peak uint64
	sk.sample = func() {
		metrics.Read(sample)
		peak = max(peak, sample[0].Value.Uint64())
	}
	sk.peakKiB = func() int { sk.sample(); return int(peak >> 10) }
	return sk
}

// vmHWM is the peak resident set size of process pid in KiB.
func vmHWM(b *testing.B, pid int) int {
	status, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		b.Fatal(err)
	}
	for line := range strings.Lines(string(status)) {
		if v, ok := strings.CutPrefix(line, "VmHWM:"); ok {
			kib, err := strconv.Atoi(strings.TrimSuffix(strings.TrimSpace(v), " kB"))
			if err != nil {
				b.Fatalf("VmHWM %q: %v", v, err)
			}
			return kib
		}
	}
	b.Fatalf("no VmHWM in /proc/%d/status", pid)
	return 0
}
