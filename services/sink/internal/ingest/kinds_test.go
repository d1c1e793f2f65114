package ingest

import (
	"context"
	"encoding/json"
	"fmt"
	"reflect"
	"slices"
	"sort"
	"strconv"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/netpulse/netpulse/lib/alert"
	"github.com/netpulse/netpulse/lib/eventpb"
	"github.com/netpulse/netpulse/lib/wire"
	"github.com/netpulse/netpulse/services/sink/internal/chschema"
	"github.com/netpulse/netpulse/services/sink/internal/chwriter"
)

// at is when the test's events happen: sub-second digits show what each
// time column keeps.
var at = time.Date(2026, 11, 24, 10, 0, 0, 123456789, time.UTC)

// publishBatch publishes b under kind with a message ID, like the probe.
func (e *env) publishBatch(t *testing.T, kind string, b *eventpb.Batch) {
	t.Helper()
	b.SchemaVersion, b.Host = eventpb.SchemaVersion, e.host
	if b.ProbeId == "" {
		b.ProbeId = "p-" + kind
	}
	data, err := b.MarshalVT()
	if err != nil {
		t.Fatal(err)
	}
	e.publishRaw(t, wire.EventSubject(e.host, kind), data, fmt.Sprintf("%s-%d", b.ProbeId, b.BatchSeq))
}

func (e *env) publishRaw(t *testing.T, subject string, data []byte, msgID string) {
	t.Helper()
	var opts []jetstream.PublishOpt
	if msgID != "" {
		opts = append(opts, jetstream.WithMsgID(msgID))
	}
	if _, err := e.js.Publish(context.Background(), subject, data, opts...); err != nil {
		t.Fatal(err)
	}
}

func (e *env) publishAlert(t *testing.T, a any) {
	t.Helper()
	data, err := json.Marshal(a)
	if err != nil {
		t.Fatal(err)
	}
	subj := wire.AlertSubject("conn_leak", "warning", e.host)
	if al, ok := a.(alert.Alert); ok {
		subj = wire.AlertSubject(al.Detector, al.Severity, al.Host)
	}
	e.publishRaw(t, subj, data, "")
}

// query returns every row of q as column name -> value, formatted by
// text(): what a user reading the table sees.
func (e *env) query(t *testing.T, q string) []map[string]string {
	t.Helper()
	rows, err := e.ch.Query(context.Background(), q)
	if err != nil {
		t.Fatalf("%s: %v", q, err)
	}
	defer rows.Close()
	var out []map[string]string
	types := rows.ColumnTypes()
	for rows.Next() {
		ptrs := make([]any, len(types))
		for i, ct := range types {
			ptrs[i] = reflect.New(ct.ScanType()).Interface()
		}
		if err := rows.Scan(ptrs...); err != nil {
			t.Fatalf("%s: %v", q, err)
		}
		row := map[string]string{}
		for i, ct := range types {
			row[ct.Name()] = text(reflect.ValueOf(ptrs[i]).Elem().Interface())
		}
		out = append(out, row)
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	return out
}

func text(v any) string {
	switch v := v.(type) {
	case time.Time:
		return v.UTC().Format(time.RFC3339Nano)
	case *time.Time:
		if v == nil {
			return "NULL"
		}
		return v.UTC().Format(time.RFC3339Nano)
	case []string:
		return fmt.Sprintf("%q", v)
	}
	return fmt.Sprint(v)
}

// ts is how a time column of the server shows t: digits is the column's
// precision on servers with DateTime64; DateTime keeps seconds.
func (e *env) ts(t time.Time, digits int) string {
	if !e.f.DateTime64 {
		digits = 0
	}
	unit := time.Second
	for range digits {
		unit /= 10
	}
	return t.Truncate(unit).UTC().Format(time.RFC3339Nano)
}

// checkRows compares rows with want, both ordered the same; every column of
// table must be in want[i] (nothing unchecked).
func checkRows(t *testing.T, table *chschema.Table, got, want []map[string]string) {
	t.Helper()
	if len(got) != len(want) {
		t.Fatalf("%s holds %d rows, want %d:\n%v", table.Name, len(got), len(want), got)
	}
	for i := range want {
		for _, c := range table.ColumnNames() {
			w, ok := want[i][c]
			if !ok {
				t.Fatalf("test error: row %d of %s has no expected %s", i, table.Name, c)
			}
			if got[i][c] != w {
				t.Errorf("%s row %d: %s = %q, want %q", table.Name, i, c, got[i][c], w)
			}
		}
	}
}

// streamSeqs returns the stream sequence of every message on subject, in
// order.
func (e *env) streamSeqs(t *testing.T, stream, subject string) []string {
	t.Helper()
	ctx := context.Background()
	cons, err := e.js.OrderedConsumer(ctx, stream, jetstream.OrderedConsumerConfig{FilterSubjects: []string{subject}})
	if err != nil {
		t.Fatal(err)
	}
	st, err := e.js.Stream(ctx, stream)
	if err != nil {
		t.Fatal(err)
	}
	info, err := st.Info(ctx, jetstream.WithSubjectFilter(subject))
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, c := range info.State.Subjects { // per concrete subject
		n += int(c)
	}
	var seqs []string
	for len(seqs) < n {
		m, err := cons.Next(jetstream.FetchMaxWait(5 * time.Second))
		if err != nil {
			t.Fatal(err)
		}
		meta, _ := m.Metadata()
		seqs = append(seqs, strconv.FormatUint(meta.Sequence.Stream, 10))
	}
	return seqs
}

// Every event type, published under its kind as the probe does, lands in
// tcp_events with every column right.
func TestSinkStoresEveryEventType(t *testing.T) {
	e := newEnv(t)
	type evCase struct {
		kind, typ, owner, side, family, saddr, daddr, oldState, newState string
		ev                                                               *eventpb.Event
	}
	v4a, v4b := []byte{10, 0, 0, 1}, []byte{192, 168, 1, 20}
	v6a := []byte{0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x10}
	v6b := []byte{0xfe, 0x80, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1}
	// segs_out: set on retransmits only, as the probe does; near the top of
	// UInt32 to catch a narrower column.
	segsOut := func(i int, typ eventpb.EventType) uint32 {
		if typ != eventpb.EventType_EVENT_TYPE_RETRANSMIT {
			return 0
		}
		return 4000000000 + uint32(i)
	}
	ev := func(i int, typ eventpb.EventType, fam eventpb.Family, sa, da []byte, old, new eventpb.TcpState, owner eventpb.OwnerSource, side eventpb.Side) *eventpb.Event {
		return &eventpb.Event{
			Type: typ, TimeUnixNano: uint64(at.Add(time.Duration(i) * time.Second).UnixNano()), Seq: uint64(100 + i),
			Pid: uint32(4000 + i), Tid: uint32(5000 + i), Comm: fmt.Sprintf("comm-%d", i), Family: fam,
			Saddr: sa, Daddr: da, Sport: uint32(40000 + i), Dport: uint32(443 + i), OldState: old, NewState: new,
			StateDurationUs: uint64(700 + i), SockId: 0xffff888000000000 + uint64(i), OwnerSource: owner,
			CgroupId: uint64(9000 + i), Error: int32(i), HandshakeUs: uint64(1500 + i), HandshakeRetransmits: uint32(i % 3),
			Side: side, Segments: uint32(10 + i), Cookie: uint64(0x1000 + i), SegsOut: segsOut(i, typ),
		}
	}
	const (
		ipv4, ipv6 = eventpb.Family_FAMILY_IPV4, eventpb.Family_FAMILY_IPV6
		estab      = eventpb.TcpState_TCP_STATE_ESTABLISHED
	)
	cases := []evCase{
		{"state", "state_change", "task", "client", "ipv4", "10.0.0.1", "192.168.1.20", "SYN_SENT", "ESTABLISHED",
			ev(0, 1, ipv4, v4a, v4b, eventpb.TcpState_TCP_STATE_SYN_SENT, estab, eventpb.OwnerSource_OWNER_SOURCE_TASK, eventpb.Side_SIDE_CLIENT)},
		{"retransmit", "retransmit", "socket", "server", "ipv6", "2001:db8::10", "fe80::1", "UNKNOWN", "ESTABLISHED",
			ev(1, 2, ipv6, v6a, v6b, 0, estab, eventpb.OwnerSource_OWNER_SOURCE_SOCKET, eventpb.Side_SIDE_SERVER)},
		{"retransmit", "synack_retransmit", "listener", "server", "ipv4", "10.0.0.1", "192.168.1.20", "UNKNOWN", "NEW_SYN_RECV",
			ev(2, 3, ipv4, v4a, v4b, 0, eventpb.TcpState_TCP_STATE_NEW_SYN_RECV, eventpb.OwnerSource_OWNER_SOURCE_LISTENER, eventpb.Side_SIDE_SERVER)},
		{"reset", "reset_sent", "scan", "unspecified", "ipv4", "10.0.0.1", "192.168.1.20", "UNKNOWN", "CLOSE_WAIT",
			ev(3, 4, ipv4, v4a, v4b, 0, eventpb.TcpState_TCP_STATE_CLOSE_WAIT, eventpb.OwnerSource_OWNER_SOURCE_SCAN, eventpb.Side_SIDE_UNSPECIFIED)},
		{"reset", "reset_received", "unknown", "client", "ipv6", "2001:db8::10", "fe80::1", "UNKNOWN", "FIN_WAIT1",
			ev(4, 5, ipv6, v6a, v6b, 0, eventpb.TcpState_TCP_STATE_FIN_WAIT1, eventpb.OwnerSource_OWNER_SOURCE_UNKNOWN, eventpb.Side_SIDE_CLIENT)},
		{"error", "socket_error", "socket", "client", "ipv4", "10.0.0.1", "192.168.1.20", "UNKNOWN", "ESTABLISHED",
			ev(5, 6, ipv4, v4a, v4b, 0, estab, eventpb.OwnerSource_OWNER_SOURCE_SOCKET, eventpb.Side_SIDE_CLIENT)},
		{"error", "connect_failed", "task", "client", "ipv4", "10.0.0.1", "192.168.1.20", "SYN_SENT", "CLOSE",
			ev(6, 7, ipv4, v4a, v4b, eventpb.TcpState_TCP_STATE_SYN_SENT, eventpb.TcpState_TCP_STATE_CLOSE, eventpb.OwnerSource_OWNER_SOURCE_TASK, eventpb.Side_SIDE_CLIENT)},
	}
	batches := map[string]*eventpb.Batch{}
	for _, c := range cases {
		if batches[c.kind] == nil {
			batches[c.kind] = &eventpb.Batch{BatchSeq: 1}
		}
		batches[c.kind].Events = append(batches[c.kind].Events, c.ev)
	}
	for _, kind := range []string{"state", "retransmit", "reset", "error"} {
		e.publishBatch(t, kind, batches[kind])
	}
	stop := e.run(t)
	e.waitAcked(t)
	c := stop()
	if c.BadMessages != 0 || c.RowsInserted != uint64(len(cases)) {
		t.Errorf("counters %+v, want %d rows and no bad messages", c, len(cases))
	}

	var want []map[string]string
	for i, c := range cases {
		ev := c.ev
		want = append(want, map[string]string{
			"time": e.ts(time.Unix(0, int64(ev.TimeUnixNano)), 9), "time_ns": fmt.Sprint(ev.TimeUnixNano), "host": e.host,
			"type": c.typ, "pid": fmt.Sprint(4000 + i), "tid": fmt.Sprint(5000 + i), "comm": ev.Comm, "family": c.family,
			"saddr": c.saddr, "sport": fmt.Sprint(40000 + i), "daddr": c.daddr, "dport": fmt.Sprint(443 + i),
			"old_state": c.oldState, "new_state": c.newState, "state_duration_us": fmt.Sprint(700 + i),
			"sock_id": fmt.Sprint(0xffff888000000000 + uint64(i)), "owner_source": c.owner, "cgroup_id": fmt.Sprint(9000 + i),
			"error": fmt.Sprint(i), "handshake_us": fmt.Sprint(1500 + i), "handshake_retransmits": fmt.Sprint(i % 3),
			"side": c.side, "segments": fmt.Sprint(10 + i), "cookie": fmt.Sprint(0x1000 + i), "segs_out": fmt.Sprint(segsOut(i, ev.Type)), "probe_id": "p-" + c.kind,
			"seq": fmt.Sprint(100 + i), "stream_seq": e.streamSeqs(t, wire.EventsStream, wire.EventSubject(e.host, c.kind))[0],
		})
	}
	checkRows(t, &chschema.TCPEvents, e.query(t, "SELECT * FROM tcp_events ORDER BY seq"), want)
}

// Finished connections land in tcp_connections with every column right.
func TestSinkStoresConnections(t *testing.T) {
	e := newEnv(t)
	closed := at.Add(time.Minute)
	conns := []*eventpb.Connection{
		{
			TimeUnixNano: uint64(closed.UnixNano()), Seq: 31, SockId: 0xabc, Pid: 321, Comm: "postgres", CgroupId: 77,
			OwnerSource: eventpb.OwnerSource_OWNER_SOURCE_SOCKET, Family: eventpb.Family_FAMILY_IPV4,
			Saddr: []byte{10, 1, 1, 1}, Daddr: []byte{10, 2, 2, 2}, Sport: 5432, Dport: 51234, Side: eventpb.Side_SIDE_SERVER,
			StartUnixNano: uint64(at.UnixNano()), DurationUs: 60_000_000, BytesSent: 1 << 40, BytesReceived: 12345,
			SegmentsOut: 900, SegmentsIn: 800, Retransmits: 17, SrttUs: 250, HandshakeUs: 180, HandshakeRetransmits: 1,
			LastState: eventpb.TcpState_TCP_STATE_LAST_ACK, Error: 0, Cookie: 0x5000,
		},
		{
			// Older than the probe: no start, reset by the peer.
			TimeUnixNano: uint64(closed.Add(time.Millisecond).UnixNano()), Seq: 32, SockId: 0xdef, Pid: 999, Comm: "curl",
			OwnerSource: eventpb.OwnerSource_OWNER_SOURCE_SCAN, Family: eventpb.Family_FAMILY_IPV6,
			Saddr: net6(1), Daddr: net6(2), Sport: 40001, Dport: 443, Side: eventpb.Side_SIDE_UNSPECIFIED,
			SegmentsOut: 3, SegmentsIn: 2, SrttUs: 40, LastState: eventpb.TcpState_TCP_STATE_ESTABLISHED, Error: 104, Cookie: 0,
		},
	}
	e.publishBatch(t, wire.KindConn, &eventpb.Batch{BatchSeq: 1, Connections: conns})
	stop := e.run(t)
	e.waitAcked(t)
	if c := stop(); c.BadMessages != 0 || c.RowsInserted != 2 {
		t.Errorf("counters %+v, want 2 rows and no bad messages", c)
	}
	seq := e.streamSeqs(t, wire.EventsStream, wire.EventSubject(e.host, wire.KindConn))[0]
	want := []map[string]string{
		{
			"time": e.ts(closed, 9), "time_ns": fmt.Sprint(closed.UnixNano()), "host": e.host, "pid": "321", "comm": "postgres",
			"cgroup_id": "77", "owner_source": "socket", "side": "server", "family": "ipv4", "saddr": "10.1.1.1", "sport": "5432",
			"daddr": "10.2.2.2", "dport": "51234", "start_time": e.ts(at, 9), "start_ns": fmt.Sprint(at.UnixNano()),
			"duration_us": "60000000", "bytes_sent": "1099511627776", "bytes_received": "12345", "segments_out": "900",
			"segments_in": "800", "retransmits": "17", "srtt_us": "250", "handshake_us": "180", "handshake_retransmits": "1",
			"last_state": "LAST_ACK", "error": "0", "sock_id": fmt.Sprint(0xabc), "cookie": fmt.Sprint(0x5000),
			"probe_id": "p-conn", "seq": "31", "stream_seq": seq,
		},
		{
			"time": e.ts(closed.Add(time.Millisecond), 9), "time_ns": fmt.Sprint(closed.Add(time.Millisecond).UnixNano()), "host": e.host,
			"pid": "999", "comm": "curl", "cgroup_id": "0", "owner_source": "scan", "side": "unspecified", "family": "ipv6",
			"saddr": "2001:db8::1", "sport": "40001", "daddr": "2001:db8::2", "dport": "443",
			"start_time": "1970-01-01T00:00:00Z", "start_ns": "0", "duration_us": "0", "bytes_sent": "0", "bytes_received": "0",
			"segments_out": "3", "segments_in": "2", "retransmits": "0", "srtt_us": "40", "handshake_us": "0",
			"handshake_retransmits": "0", "last_state": "ESTABLISHED", "error": "104", "sock_id": fmt.Sprint(0xdef), "cookie": "0",
			"probe_id": "p-conn", "seq": "32", "stream_seq": seq,
		},
	}
	checkRows(t, &chschema.TCPConnections, e.query(t, "SELECT * FROM tcp_connections ORDER BY seq"), want)
}

func net6(last byte) []byte {
	return []byte{0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, last}
}

// A snapshot becomes a summary row, a row per group and one per CLOSE_WAIT
// socket, every column right; the SRE's two questions are one query each.
func TestSinkStoresSnapshots(t *testing.T) {
	e := newEnv(t)
	snap := &eventpb.Snapshot{
		TimeUnixNano: uint64(at.UnixNano()), Seq: 12,
		Groups: []*eventpb.SocketGroup{
			{State: eventpb.TcpState_TCP_STATE_CLOSE_WAIT, Pid: 50, Comm: "java", CgroupId: 600, LocalPort: 8080, Count: 40, Side: eventpb.Side_SIDE_SERVER},
			{State: eventpb.TcpState_TCP_STATE_ESTABLISHED, Pid: 51, Comm: "curl", CgroupId: 601, LocalPort: 0, Count: 3, Side: eventpb.Side_SIDE_CLIENT},
		},
		GroupsCut: 2,
		CloseWait: []*eventpb.SnapshotSocket{
			{SockId: 0x77, Cookie: 0x99, Pid: 50, Comm: "java", CgroupId: 600, OwnerSource: eventpb.OwnerSource_OWNER_SOURCE_SOCKET,
				Family: eventpb.Family_FAMILY_IPV4, Saddr: []byte{10, 0, 0, 5}, Daddr: []byte{10, 0, 0, 6}, Sport: 8080, Dport: 39000,
				Side: eventpb.Side_SIDE_SERVER, AgeUs: 900_000_000, AgeEstimated: true, RecvQueue: 517},
			{SockId: 0x78, Pid: 50, Comm: "java", CgroupId: 600, OwnerSource: eventpb.OwnerSource_OWNER_SOURCE_TASK,
				Family: eventpb.Family_FAMILY_IPV6, Saddr: net6(5), Daddr: net6(6), Sport: 8080, Dport: 39001,
				Side: eventpb.Side_SIDE_SERVER, AgeUs: 5_000_000},
		},
		CloseWaitTotal: 40, CloseWaitCut: 38, SocketsTotal: 1234, Seeded: true,
		TcpOutSegs: 1_000_000, TcpRetransSegs: 2_500, IntervalMs: 10_000,
		Endpoints: []*eventpb.EndpointGroup{
			{Family: eventpb.Family_FAMILY_IPV4, Saddr: []byte{10, 0, 0, 5}, Daddr: []byte{10, 0, 0, 7}, Dport: 5432,
				Pid: 52, Comm: "worker", CgroupId: 602, TimeWait: 27000, Live: 12, TimeWaitEntered: 450},
			{Family: eventpb.Family_FAMILY_IPV4, Saddr: []byte{10, 0, 0, 5}, Daddr: []byte{10, 0, 0, 8}, Dport: 80,
				Pid: 53, Comm: "nginx", FinWait2: 30, FinWait2OldestUs: 42_000_000},
		},
		EndpointsCut: 4, EndpointsRead: true, TimeWaitTotal: 27100, FinWait2Total: 31, TimeWaitEntered: 460,
		PortRangeLow: 32768, PortRangeHigh: 60999, FinTimeoutS: 60, MaxTwBuckets: 262144, TwReuse: 2, EventsSeq: 98765,
	}
	e.publishBatch(t, wire.KindSnapshot, &eventpb.Batch{BatchSeq: 1, Snapshot: snap})
	stop := e.run(t)
	e.waitAcked(t)
	if c := stop(); c.BadMessages != 0 || c.RowsInserted != 7 {
		t.Errorf("counters %+v, want 7 rows and no bad messages", c)
	}
	seq := e.streamSeqs(t, wire.EventsStream, wire.EventSubject(e.host, wire.KindSnapshot))[0]
	row := func(kind string, set map[string]string) map[string]string {
		r := map[string]string{
			"time": e.ts(at, 9), "time_ns": fmt.Sprint(at.UnixNano()), "host": e.host, "row_kind": kind, "state": "UNKNOWN",
			"pid": "0", "comm": "", "cgroup_id": "0", "owner_source": "unknown", "side": "unspecified", "local_port": "0",
			"count": "0", "family": "unknown", "saddr": "", "daddr": "", "dport": "0", "sock_id": "0", "cookie": "0",
			"age_us": "0", "age_estimated": "0", "recv_queue": "0", "groups_cut": "0", "close_wait_total": "0",
			"close_wait_cut": "0", "sockets_total": "0", "seeded": "0", "tcp_out_segs": "0", "tcp_retrans_segs": "0",
			"interval_ms": "0", "time_wait": "0", "fin_wait2": "0", "live": "0", "time_wait_entered": "0",
			"endpoints_cut": "0", "endpoints_read": "0", "port_range_low": "0", "port_range_high": "0", "fin_timeout_s": "0",
			"max_tw_buckets": "0", "tw_reuse": "0", "events_seq": "0", "probe_id": "p-snapshot", "seq": "12", "stream_seq": seq,
		}
		for k, v := range set {
			r[k] = v
		}
		return r
	}
	want := []map[string]string{
		row("summary", map[string]string{"groups_cut": "2", "close_wait_total": "40", "close_wait_cut": "38", "sockets_total": "1234",
			"seeded": "1", "tcp_out_segs": "1000000", "tcp_retrans_segs": "2500", "interval_ms": "10000",
			"time_wait": "27100", "fin_wait2": "31", "time_wait_entered": "460", "endpoints_cut": "4", "endpoints_read": "1",
			"port_range_low": "32768", "port_range_high": "60999", "fin_timeout_s": "60", "max_tw_buckets": "262144", "tw_reuse": "2",
			"events_seq": "98765"}),
		row("group", map[string]string{"state": "CLOSE_WAIT", "pid": "50", "comm": "java", "cgroup_id": "600", "local_port": "8080",
			"count": "40", "side": "server"}),
		row("group", map[string]string{"state": "ESTABLISHED", "pid": "51", "comm": "curl", "cgroup_id": "601", "count": "3", "side": "client"}),
		row("close_wait", map[string]string{"state": "CLOSE_WAIT", "pid": "50", "comm": "java", "cgroup_id": "600",
			"owner_source": "socket", "side": "server", "local_port": "8080", "count": "1", "family": "ipv4", "saddr": "10.0.0.5",
			"daddr": "10.0.0.6", "dport": "39000", "sock_id": fmt.Sprint(0x77), "cookie": fmt.Sprint(0x99), "age_us": "900000000",
			"age_estimated": "1", "recv_queue": "517"}),
		row("close_wait", map[string]string{"state": "CLOSE_WAIT", "pid": "50", "comm": "java", "cgroup_id": "600",
			"owner_source": "task", "side": "server", "local_port": "8080", "count": "1", "family": "ipv6", "saddr": "2001:db8::5",
			"daddr": "2001:db8::6", "dport": "39001", "sock_id": fmt.Sprint(0x78), "age_us": "5000000"}),
		row("endpoint", map[string]string{"pid": "53", "comm": "nginx", "family": "ipv4", "saddr": "10.0.0.5", "daddr": "10.0.0.8",
			"dport": "80", "fin_wait2": "30", "count": "30", "age_us": "42000000"}),
		row("endpoint", map[string]string{"pid": "52", "comm": "worker", "cgroup_id": "602", "family": "ipv4", "saddr": "10.0.0.5",
			"daddr": "10.0.0.7", "dport": "5432", "time_wait": "27000", "live": "12", "count": "27012", "time_wait_entered": "450"}),
	}
	checkRows(t, &chschema.SocketSnapshots, e.query(t, "SELECT * FROM socket_snapshots ORDER BY row_kind, state DESC, dport"), want)

	// The questions the table is laid out for.
	top := e.query(t, `SELECT pid, comm, max(count) AS peak FROM socket_snapshots
		WHERE row_kind = 'group' AND state = 'CLOSE_WAIT' GROUP BY pid, comm ORDER BY peak DESC LIMIT 1`)
	if len(top) != 1 || top[0]["comm"] != "java" || top[0]["peak"] != "40" {
		t.Errorf("most CLOSE_WAIT sockets per process: %v, want java with 40", top)
	}
	old := e.query(t, `SELECT local_port, dport, age_us FROM socket_snapshots
		WHERE row_kind = 'close_wait' AND age_us > 600000000
		AND (host, time_ns) IN (SELECT host, max(time_ns) FROM socket_snapshots WHERE row_kind = 'summary' GROUP BY host)`)
	if len(old) != 1 || old[0]["dport"] != "39000" {
		t.Errorf("CLOSE_WAIT sockets older than 10 minutes in the latest snapshot: %v, want the one to port 39000", old)
	}
	ports := e.query(t, `SELECT e.daddr AS daddr, e.count AS ports,
		round(100 * e.count / (s.port_range_high - s.port_range_low + 1), 1) AS pct
		FROM socket_snapshots AS e
		INNER JOIN (SELECT host, time_ns, port_range_low, port_range_high FROM socket_snapshots WHERE row_kind = 'summary') AS s
		ON e.host = s.host AND e.time_ns = s.time_ns
		WHERE e.row_kind = 'endpoint' ORDER BY ports DESC LIMIT 1`)
	if len(ports) != 1 || ports[0]["daddr"] != "10.0.0.7" || ports[0]["pct"] != "95.7" {
		t.Errorf("local ports in use towards a remote as a share of the range: %v, want 10.0.0.7 at 95.7%%", ports)
	}
}

// Drop counts land in tcp_drops with every column right; the README's two
// questions (drops per reason, overflowing listeners) are one query each.
func TestSinkStoresDrops(t *testing.T) {
	e := newEnv(t)
	start, end := at, at.Add(10*time.Second)
	span := func(d *eventpb.DropCount) *eventpb.DropCount {
		d.StartUnixNano, d.EndUnixNano = uint64(start.UnixNano()), uint64(end.UnixNano())
		return d
	}
	drops := []*eventpb.DropCount{
		span(&eventpb.DropCount{Source: eventpb.DropSource_DROP_SOURCE_KFREE_SKB, Reason: "NETFILTER_DROP",
			Family: eventpb.Family_FAMILY_IPV4, Saddr: []byte{10, 0, 0, 5}, Sport: 8080, Daddr: []byte{10, 0, 0, 9}, Dport: 40000,
			Ingress: true, Count: 900}),
		span(&eventpb.DropCount{Source: eventpb.DropSource_DROP_SOURCE_KFREE_SKB, Reason: "NETFILTER_DROP",
			Family: eventpb.Family_FAMILY_IPV4, Saddr: []byte{10, 0, 0, 5}, Sport: 9090, Daddr: []byte{10, 0, 0, 9}, Dport: 40001,
			Ingress: true, Count: 100}),
		span(&eventpb.DropCount{Source: eventpb.DropSource_DROP_SOURCE_KFREE_SKB, Reason: "NO_SOCKET",
			Family: eventpb.Family_FAMILY_IPV6, Saddr: net6(5), Sport: 443, Daddr: net6(6), Dport: 50000,
			Pid: 41, Comm: "curl", CgroupId: 700, Count: 3}),
		span(&eventpb.DropCount{Source: eventpb.DropSource_DROP_SOURCE_LISTENER, Reason: "LISTEN_OVERFLOW",
			Family: eventpb.Family_FAMILY_IPV4, Saddr: []byte{0, 0, 0, 0}, Sport: 8080, Ingress: true,
			Pid: 42, Comm: "java", CgroupId: 701, Count: 57, AcceptQueue: 129, Backlog: 128}),
	}
	e.publishBatch(t, wire.KindDrop, &eventpb.Batch{BatchSeq: 5, Drops: drops})
	stop := e.run(t)
	e.waitAcked(t)
	if c := stop(); c.BadMessages != 0 || c.RowsInserted != 4 {
		t.Errorf("counters %+v, want 4 rows and no bad messages", c)
	}
	seq := e.streamSeqs(t, wire.EventsStream, wire.EventSubject(e.host, wire.KindDrop))[0]
	row := func(set map[string]string) map[string]string {
		r := map[string]string{
			"time": e.ts(end, 9), "time_ns": fmt.Sprint(end.UnixNano()), "start_time": e.ts(start, 9),
			"start_ns": fmt.Sprint(start.UnixNano()), "host": e.host, "source": "kfree_skb", "family": "ipv4",
			"daddr": "10.0.0.9", "ingress": "1", "pid": "0", "comm": "", "cgroup_id": "0", "accept_queue": "0", "backlog": "0",
			"probe_id": "p-drop", "seq": "5", "stream_seq": seq,
		}
		for k, v := range set {
			r[k] = v
		}
		return r
	}
	want := []map[string]string{
		row(map[string]string{"source": "listener", "reason": "LISTEN_OVERFLOW", "saddr": "0.0.0.0", "sport": "8080", "daddr": "",
			"dport": "0", "pid": "42", "comm": "java", "cgroup_id": "701", "count": "57", "accept_queue": "129", "backlog": "128"}),
		row(map[string]string{"reason": "NETFILTER_DROP", "saddr": "10.0.0.5", "sport": "8080", "dport": "40000", "count": "900"}),
		row(map[string]string{"reason": "NETFILTER_DROP", "saddr": "10.0.0.5", "sport": "9090", "dport": "40001", "count": "100"}),
		row(map[string]string{"reason": "NO_SOCKET", "family": "ipv6", "saddr": "2001:db8::5", "sport": "443", "daddr": "2001:db8::6",
			"dport": "50000", "ingress": "0", "pid": "41", "comm": "curl", "cgroup_id": "700", "count": "3"}),
	}
	checkRows(t, &chschema.TCPDrops, e.query(t, "SELECT * FROM tcp_drops ORDER BY source DESC, reason, sport"), want)

	perReason := e.query(t, `SELECT reason, ingress, sum(count) AS packets, argMax(sport, count) AS top_local_port
		FROM tcp_drops WHERE source = 'kfree_skb' GROUP BY reason, ingress ORDER BY packets DESC`)
	if len(perReason) != 2 || perReason[0]["reason"] != "NETFILTER_DROP" || perReason[0]["packets"] != "1000" ||
		perReason[0]["top_local_port"] != "8080" || perReason[1]["packets"] != "3" {
		t.Errorf("drops per reason: %v, want NETFILTER_DROP 1000 (most on 8080), then NO_SOCKET 3", perReason)
	}
	listeners := e.query(t, `SELECT sport AS port, pid, comm, sum(count) AS drops, max(accept_queue) AS queue, max(backlog) AS backlog
		FROM tcp_drops WHERE source = 'listener' GROUP BY port, pid, comm ORDER BY drops DESC`)
	if len(listeners) != 1 || listeners[0]["port"] != "8080" || listeners[0]["comm"] != "java" || listeners[0]["drops"] != "57" {
		t.Errorf("overflowing listeners: %v, want java on 8080 with 57 drops", listeners)
	}
}

// Alerts published as JSON land in alerts with every column right; the
// evidence is kept as published.
func TestSinkStoresAlerts(t *testing.T) {
	e := newEnv(t)
	start := at
	end := at.Add(5 * time.Minute)
	firing := alert.Alert{
		Fingerprint: "0123456789abcdef", Detector: "conn_leak", Status: alert.Firing, Severity: "warning", Host: e.host,
		StartsAt: start, SentAt: start.Add(time.Second + 456*time.Millisecond),
		Labels: alert.Labels("conn_leak", "warning", e.host, map[string]string{"pid": "50", "comm": "java", "local_port": "8080"}),
		Annotations: map[string]string{"summary": "java leaks sockets", "description": "40 sockets in CLOSE_WAIT on port 8080",
			"count": "40", "oldest_age_seconds": "900"},
		GeneratorURL: "http://grafana:3000/d/netpulse-tcp/netpulse-tcp?var-host=" + e.host,
		Value:        40, Threshold: 20.5,
		Evidence: map[string]any{"sockets": []any{map[string]any{"dport": 39000, "age_s": 900}}},
		SQL:      "SELECT 1",
	}
	resolved := firing
	resolved.Status, resolved.EndsAt, resolved.SentAt = alert.Resolved, &end, end
	resolved.Evidence, resolved.SQL, resolved.Value = nil, "", 0
	e.publishAlert(t, firing)
	e.publishAlert(t, resolved)
	stop := e.run(t)
	e.waitAcked(t)
	if c := stop(); c.BadMessages != 0 || c.RowsInserted != 2 || c.Messages != 2 {
		t.Errorf("counters %+v, want 2 alerts stored", c)
	}
	seqs := e.streamSeqs(t, wire.AlertsStream, wire.AlertsPrefix+".>")
	labels := `["alertname" "comm" "host" "local_port" "pid" "severity"]`
	values := `["conn_leak" "java" "` + e.host + `" "8080" "50" "warning"]`
	annotations := `["count" "description" "oldest_age_seconds" "summary"]`
	annValues := `["40" "40 sockets in CLOSE_WAIT on port 8080" "900" "java leaks sockets"]`
	want := []map[string]string{
		{
			"sent_at": e.ts(firing.SentAt, 3), "fingerprint": "0123456789abcdef", "detector": "conn_leak", "status": "firing",
			"severity": "warning", "host": e.host, "starts_at": e.ts(start, 3), "ends_at": "NULL",
			"label_names": labels, "label_values": values, "summary": "java leaks sockets",
			"description": "40 sockets in CLOSE_WAIT on port 8080", "value": "40", "threshold": "20.5",
			"evidence": `{"sockets":[{"age_s":900,"dport":39000}]}`, "sql": "SELECT 1", "stream_seq": seqs[0],
			"annotation_names": annotations, "annotation_values": annValues, "generator_url": firing.GeneratorURL,
		},
		{
			"sent_at": e.ts(end, 3), "fingerprint": "0123456789abcdef", "detector": "conn_leak", "status": "resolved",
			"severity": "warning", "host": e.host, "starts_at": e.ts(start, 3), "ends_at": e.ts(end, 3),
			"label_names": labels, "label_values": values, "summary": "java leaks sockets",
			"description": "40 sockets in CLOSE_WAIT on port 8080", "value": "0", "threshold": "20.5",
			"evidence": "", "sql": "", "stream_seq": seqs[1],
			"annotation_names": annotations, "annotation_values": annValues, "generator_url": firing.GeneratorURL,
		},
	}
	checkRows(t, &chschema.Alerts, e.query(t, "SELECT * FROM alerts ORDER BY sent_at"), want)
	got := e.query(t, "SELECT label_values[indexOf(label_names, 'comm')] AS comm FROM alerts WHERE status = 'firing'")
	if len(got) != 1 || got[0]["comm"] != "java" {
		t.Errorf("label look-up: %v, want java", got)
	}
	got = e.query(t, "SELECT annotation_values[indexOf(annotation_names, 'count')] AS count FROM alerts WHERE status = 'resolved'")
	if len(got) != 1 || got[0]["count"] != "40" {
		t.Errorf("annotation look-up: %v, want 40", got)
	}
}

// Bad messages of every kind are terminated and counted, each reason
// logged once; the good ones around them are stored; nothing blocks.
func TestSinkTerminatesBadMessagesOfEveryKind(t *testing.T) {
	e := newEnv(t)
	good := func(kind string, seq uint64) *eventpb.Batch {
		b := &eventpb.Batch{BatchSeq: seq}
		ns := uint64(at.UnixNano())
		switch kind {
		case "conn":
			b.Connections = []*eventpb.Connection{{TimeUnixNano: ns}}
		case "snapshot":
			b.Snapshot = &eventpb.Snapshot{TimeUnixNano: ns}
		case "drop":
			b.Drops = []*eventpb.DropCount{{Count: 1, StartUnixNano: ns - 1e9, EndUnixNano: ns}}
		default:
			typ := map[string]eventpb.EventType{"state": 1, "retransmit": 2, "reset": 4, "error": 7}[kind]
			b.Events = []*eventpb.Event{{Type: typ, TimeUnixNano: ns}}
		}
		return b
	}
	// A valid payload of another kind under each kind.
	wrong := map[string]string{"state": "conn", "retransmit": "state", "reset": "snapshot", "error": "retransmit", "conn": "drop", "snapshot": "conn", "drop": "snapshot"}
	bad := 0
	for _, kind := range wire.DataKinds {
		e.publishBatch(t, kind, good(kind, 1))
		e.publishRaw(t, wire.EventSubject(e.host, kind), []byte("\xff\xff not protobuf"), "")
		e.publishBatch(t, kind, good(wrong[kind], 2))
		e.publishBatch(t, kind, &eventpb.Batch{BatchSeq: 3}) // empty
		e.publishBatch(t, kind, good(kind, 4))
		bad += 3
	}
	// An event of a type published under another kind.
	e.publishBatch(t, "state", &eventpb.Batch{BatchSeq: 5, Events: []*eventpb.Event{{Type: 1, TimeUnixNano: uint64(at.UnixNano())}, {Type: 2, TimeUnixNano: uint64(at.UnixNano())}}})
	bad++
	e.publishAlert(t, map[string]any{"fingerprint": "x"}) // no detector, status, times
	e.publishRaw(t, wire.AlertSubject("conn_leak", "warning", e.host), []byte("{not json"), "")
	bad += 2
	e.publishAlert(t, alert.Alert{Fingerprint: "f", Detector: "conn_leak", Status: alert.Firing, Severity: "info", Host: e.host, StartsAt: at, SentAt: at})

	stop := e.run(t)
	e.waitAcked(t)
	c := stop()
	if c.BadMessages != uint64(bad) {
		t.Errorf("bad_messages = %d, want %d", c.BadMessages, bad)
	}
	for table, want := range map[string]uint64{"tcp_events": 8, "tcp_connections": 2, "socket_snapshots": 2, "tcp_drops": 2, "alerts": 1} {
		if got := e.countOf(t, table); got != want {
			t.Errorf("%s holds %d rows, want %d (the good messages)", table, got, want)
		}
	}
}

func (e *env) countOf(t *testing.T, table string) uint64 {
	t.Helper()
	var n uint64
	if err := e.ch.QueryRow(context.Background(), "SELECT count() FROM "+table).Scan(&n); err != nil {
		t.Fatal(err)
	}
	return n
}

// A durable consumer made by the previous sink (state only) is updated in
// place: it keeps its name and position and now takes every data kind.
func TestSinkWidensTheOldConsumer(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	old, err := e.js.CreateOrUpdateConsumer(ctx, wire.EventsStream, jetstream.ConsumerConfig{
		Durable: e.cfg.Consumer.Durable, AckPolicy: jetstream.AckExplicitPolicy, AckWait: e.cfg.Consumer.AckWait,
		FilterSubjects: []string{wire.KindSubjects(wire.KindState)},
	})
	if err != nil {
		t.Fatal(err)
	}
	e.publish(t, 0, 2, 10) // state, consumed by the old sink
	fetched, err := old.Fetch(2, jetstream.FetchMaxWait(5*time.Second))
	if err != nil {
		t.Fatal(err)
	}
	for m := range fetched.Messages() {
		if err := m.DoubleAck(ctx); err != nil {
			t.Fatal(err)
		}
	}
	e.publish(t, 2, 3, 10)
	e.publishBatch(t, wire.KindConn, &eventpb.Batch{BatchSeq: 1, Connections: []*eventpb.Connection{{TimeUnixNano: uint64(at.UnixNano())}}})
	stop := e.run(t)
	e.waitAcked(t)
	stop()
	if got := e.countOf(t, "tcp_events"); got != 10 {
		t.Errorf("tcp_events holds %d rows, want the 10 the old sink had not consumed", got)
	}
	if got := e.countOf(t, "tcp_connections"); got != 1 {
		t.Errorf("tcp_connections holds %d rows, want 1", got)
	}
	info, err := old.Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	var want []string
	for _, k := range wire.DataKinds {
		want = append(want, wire.KindSubjects(k))
	}
	got := slices.Clone(info.Config.FilterSubjects)
	sort.Strings(got)
	sort.Strings(want)
	if !slices.Equal(got, want) {
		t.Errorf("consumer filter %v, want %v", info.Config.FilterSubjects, want)
	}
}

// A sink that crashed after storing connections, snapshots, drop counts and alerts and
// before acking them gets the same messages again: nothing is stored
// twice, nothing is missing, in any table.
func TestSinkRedeliveryAfterCrashIsSkippedInEveryTable(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	const msgs = 10
	for b := range msgs {
		day := time.Date(2026, 11, 23+b%2, 23, 59, 0, 0, time.UTC)
		var conns []*eventpb.Connection
		for i := range 20 {
			ns := day.Add(time.Duration(i) * 10 * time.Second) // crosses midnight: two partitions
			conns = append(conns, &eventpb.Connection{TimeUnixNano: uint64(ns.UnixNano()), Seq: uint64(b*100 + i), Comm: "curl", Retransmits: uint32(i)})
		}
		e.publishBatch(t, wire.KindConn, &eventpb.Batch{BatchSeq: uint64(b + 1), Connections: conns})
		e.publishBatch(t, wire.KindSnapshot, &eventpb.Batch{BatchSeq: uint64(b + 1), Snapshot: &eventpb.Snapshot{
			TimeUnixNano: uint64(day.UnixNano()), Seq: uint64(b + 1),
			Groups:    []*eventpb.SocketGroup{{Count: 1}, {Count: 2}, {Count: 3}},
			CloseWait: []*eventpb.SnapshotSocket{{SockId: 1}, {SockId: 2}},
		}})
		// One interval's counts, ending on either side of midnight: two
		// partitions.
		e.publishBatch(t, wire.KindDrop, &eventpb.Batch{BatchSeq: uint64(b + 1), Drops: []*eventpb.DropCount{
			{Source: eventpb.DropSource_DROP_SOURCE_KFREE_SKB, Reason: "NETFILTER_DROP", Count: 5,
				StartUnixNano: uint64(day.UnixNano()), EndUnixNano: uint64(day.Add(59 * time.Second).UnixNano())},
			{Source: eventpb.DropSource_DROP_SOURCE_LISTENER, Reason: "LISTEN_OVERFLOW", Count: 7,
				StartUnixNano: uint64(day.UnixNano()), EndUnixNano: uint64(day.Add(61 * time.Second).UnixNano())},
		}})
		e.publishAlert(t, alert.Alert{Fingerprint: fmt.Sprint(b), Detector: "conn_leak", Status: alert.Firing, Severity: "warning",
			Host: e.host, StartsAt: day, SentAt: day.AddDate(0, b%2, 0)}) // two partitions (months)
	}
	f, err := chschema.Probe(ctx, e.ch)
	if err != nil {
		t.Fatal(err)
	}
	if err := chschema.Migrate(ctx, e.ch, f, chschema.Options{Database: e.db}); err != nil {
		t.Fatal(err)
	}

	// The "crashed" sink: takes messages through the durable consumers,
	// stores them, and dies before acking.
	e.cfg.Consumer.AckWait = time.Second // so the server redelivers soon
	w := chwriter.New(e.ch, e.db, quiet)
	crash := func(stream, durable string, filter []string, n int, add func(jetstream.Msg, uint64, bool) error) {
		cons, err := e.js.CreateOrUpdateConsumer(ctx, stream, jetstream.ConsumerConfig{
			Durable: durable, AckPolicy: jetstream.AckExplicitPolicy, AckWait: e.cfg.Consumer.AckWait, FilterSubjects: filter,
		})
		if err != nil {
			t.Fatal(err)
		}
		fetched, err := cons.Fetch(n, jetstream.FetchMaxWait(5*time.Second))
		if err != nil {
			t.Fatal(err)
		}
		got := 0
		for m := range fetched.Messages() {
			meta, _ := m.Metadata()
			if err := add(m, meta.Sequence.Stream, meta.NumDelivered > 1); err != nil {
				t.Fatal(err)
			}
			got++
		}
		if got != n {
			t.Fatalf("crashed sink fetched %d messages, want %d", got, n)
		}
	}
	var kinds []string
	for _, k := range wire.DataKinds {
		kinds = append(kinds, wire.KindSubjects(k))
	}
	crash(wire.EventsStream, e.cfg.Consumer.Durable, kinds, 12, func(m jetstream.Msg, seq uint64, re bool) error {
		var b eventpb.Batch
		if err := b.UnmarshalVT(m.Data()); err != nil {
			return err
		}
		_, kind, _ := wire.ParseEventSubject(m.Subject())
		return w.Add(ctx, kind, seq, re, &b)
	})
	crash(wire.AlertsStream, e.cfg.Consumer.AlertsDurable, nil, 5, func(m jetstream.Msg, seq uint64, re bool) error {
		a, err := chwriter.DecodeAlert(m.Data())
		if err != nil {
			return err
		}
		return w.AddAlert(ctx, seq, re, a)
	})
	if err := w.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	// Messages take turns: conn, snapshot, drop (the alerts are in their
	// own stream): 4 of each, 5 alerts.
	crashed := map[string]uint64{"tcp_connections": 4 * 20, "socket_snapshots": 4 * 6, "tcp_drops": 4 * 2, "alerts": 5}
	for table, want := range crashed {
		if got := e.countOf(t, table); got != want {
			t.Fatalf("crashed sink stored %d rows in %s, want %d", got, table, want)
		}
	}

	stop := e.run(t)
	e.waitAcked(t)
	c := stop()
	want := map[string]uint64{"tcp_connections": msgs * 20, "socket_snapshots": msgs * 6, "tcp_drops": msgs * 2, "alerts": msgs}
	for table, n := range want {
		if got := e.countOf(t, table); got != n {
			t.Errorf("%s holds %d rows after the restart, want %d (no duplicates, none missing)", table, got, n)
		}
	}
	dupRows := crashed["tcp_connections"] + crashed["socket_snapshots"] + crashed["tcp_drops"] + crashed["alerts"]
	if c.RowsDuplicate != dupRows || c.RowsInserted != msgs*29-dupRows {
		t.Errorf("counters %+v, want %d duplicate rows skipped and %d inserted", c, dupRows, msgs*29-dupRows)
	}
	for table, perMsg := range map[string]uint64{"tcp_connections": 20, "socket_snapshots": 6, "tcp_drops": 2, "alerts": 1} {
		rows := e.query(t, fmt.Sprintf("SELECT stream_seq, count() AS n FROM %s GROUP BY stream_seq HAVING n != %d", table, perMsg))
		if len(rows) != 0 {
			t.Errorf("%s: messages stored other than once: %v", table, rows)
		}
	}
}
