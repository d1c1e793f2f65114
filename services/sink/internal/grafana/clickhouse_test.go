package grafana

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net"
	"reflect"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2/lib/driver"

	"github.com/netpulse/netpulse/lib/alert"
	"github.com/netpulse/netpulse/lib/eventpb"
	"github.com/netpulse/netpulse/lib/wire"
	"github.com/netpulse/netpulse/services/sink/internal/chschema"
	"github.com/netpulse/netpulse/services/sink/internal/chwriter"
)

var quiet = slog.New(slog.NewTextHandler(io.Discard, nil))

// TestClickHousePanelsReturnRows stores a small, realistic data set through
// the sink's own schema and writer, then runs every ClickHouse query of every
// dashboard (the host variable's, every panel's) as the plugin would send it
// for the last hour, for All hosts and for one: each must run and return
// rows; a time series must return its time column first, sorted, with
// string labels and numeric values (what the plugin turns into series).
func TestClickHousePanelsReturnRows(t *testing.T) {
	db := srv.NewDatabase(t)
	conn := srv.Conn(t, db)
	ctx := context.Background()
	f, err := chschema.Probe(ctx, conn)
	if err != nil {
		t.Fatal(err)
	}
	if err := chschema.Migrate(ctx, conn, f, chschema.Options{Database: db}); err != nil {
		t.Fatal(err)
	}
	t.Logf("ClickHouse %s", f.Version)

	to := time.Now().UTC().Truncate(time.Minute)
	from := to.Add(-time.Hour)
	hosts := []string{"db-1", "web-1"}
	store(t, ctx, conn, db, from, hosts)

	ran := 0
	for _, d := range loadDashboards(t) {
		for _, v := range d.Templating.List {
			if v.Datasource == nil || v.Datasource.Type != typeClickHouse {
				continue
			}
			rows := run(t, ctx, conn, db, d.file+" variable "+v.Name, v.Query.RawSQL, request{from: from, to: to, interval: time.Minute, allHosts: hosts})
			var got []string
			for _, r := range rows {
				got = append(got, fmt.Sprint(r[0]))
			}
			if !sameSet(got, hosts) {
				t.Errorf("%s variable %s: values %v, want %v", d.file, v.Name, got, hosts)
			}
			ran++
		}
		for _, p := range d.Panels {
			if p.Datasource == nil || p.Datasource.Type != typeClickHouse {
				continue
			}
			for _, tg := range p.Targets {
				for _, sel := range [][]string{nil, {"web-1"}} {
					what := fmt.Sprintf("%s panel %q (hosts %v)", d.file, p.Title, sel)
					r := request{from: from, to: to, interval: time.Minute, hosts: sel, allHosts: hosts}
					rows := run(t, ctx, conn, db, what, tg.RawSQL, r)
					if f, _ := tg.chFormat(); f == 0 && len(rows) > 0 {
						checkTimeSeries(t, what, rows)
					}
					if p.Title == "Firing alerts" && len(rows) > 0 {
						checkFiring(t, what, rows, sel)
					}
					ran++
				}
			}
		}
	}
	if ran == 0 {
		t.Fatal("no ClickHouse queries in the dashboards")
	}
}

// tables are the sink's tables: the dashboards name them netpulse.<table>.
var tableRef = regexp.MustCompile(`\bnetpulse\.(\w+)`)

// run expands sql for r, points it at database db, runs it and returns its
// rows; it fails t on an error or no rows.
func run(t *testing.T, ctx context.Context, conn driver.Conn, db, what, raw string, r request) [][]any {
	t.Helper()
	sql, err := interpolate(raw, r)
	if err != nil {
		t.Errorf("%s: %v", what, err)
		return nil
	}
	names := map[string]bool{}
	for _, tab := range chschema.Tables {
		names[tab.Name] = true
	}
	var bad []string
	sql = tableRef.ReplaceAllStringFunc(sql, func(m string) string {
		tab := strings.TrimPrefix(m, "netpulse.")
		if !names[tab] {
			bad = append(bad, m)
		}
		return db + "." + tab
	})
	if len(bad) > 0 {
		t.Errorf("%s: %v: no table of the sink", what, bad)
	}
	if strings.Contains(sql, "$") {
		t.Errorf("%s: left unexpanded: %s", what, sql)
	}
	for _, from := range regexp.MustCompile(`(?i)\b(?:FROM|JOIN)\s+([\w.]+)`).FindAllStringSubmatch(sql, -1) {
		if !strings.HasPrefix(from[1], db+".") {
			t.Errorf("%s: FROM %s: name tables as netpulse.<table>", what, from[1])
		}
	}
	rows, err := conn.Query(ctx, sql)
	if err != nil {
		t.Errorf("%s: %v\n%s", what, err, sql)
		return nil
	}
	defer rows.Close()
	types := rows.ColumnTypes()
	var out [][]any
	for rows.Next() {
		ptrs := make([]any, len(types))
		for i, ct := range types {
			ptrs[i] = reflect.New(ct.ScanType()).Interface()
		}
		if err := rows.Scan(ptrs...); err != nil {
			t.Errorf("%s: scan: %v", what, err)
			return nil
		}
		row := make([]any, len(ptrs))
		for i, p := range ptrs {
			row[i] = reflect.ValueOf(p).Elem().Interface()
		}
		out = append(out, row)
	}
	if err := rows.Err(); err != nil {
		t.Errorf("%s: %v", what, err)
		return nil
	}
	if len(out) == 0 {
		t.Errorf("%s: no rows\n%s", what, sql)
	}
	t.Logf("%s: %d rows", what, len(out))
	return out
}

// checkTimeSeries: the plugin makes series of a long frame: a time column,
// string columns as labels, numbers as values, rows sorted by time.
func checkTimeSeries(t *testing.T, what string, rows [][]any) {
	t.Helper()
	var last time.Time
	for i, row := range rows {
		ts, ok := row[0].(time.Time)
		if !ok {
			t.Errorf("%s: first column %T, want a time", what, row[0])
			return
		}
		if ts.Before(last) {
			t.Errorf("%s: row %d at %s after %s: not sorted by time", what, i, ts, last)
		}
		last = ts
		numbers := 0
		for _, v := range row[1:] {
			switch v.(type) {
			case string:
			case float64, float32, uint64, uint32, uint16, uint8, int64, int32, int16, int8:
				numbers++
			default:
				t.Errorf("%s: column of %T: neither a label nor a value", what, v)
			}
		}
		if numbers == 0 {
			t.Errorf("%s: no value column", what)
			return
		}
	}
}

// checkFiring: of the fingerprints stored, only those whose last message
// fires are listed.
func checkFiring(t *testing.T, what string, rows [][]any, sel []string) {
	t.Helper()
	var got []string
	for _, r := range rows {
		got = append(got, fmt.Sprint(r[0]))
	}
	want := []string{"fp-leak-web-1", "fp-slow-db-1"}
	if sel != nil {
		want = []string{"fp-leak-web-1"}
	}
	if !sameSet(got, want) {
		t.Errorf("%s: firing %v, want %v", what, got, want)
	}
}

func sameSet(a, b []string) bool {
	if len(a) != len(b) {
		return false
	}
	m := map[string]int{}
	for _, s := range a {
		m[s]++
	}
	for _, s := range b {
		m[s]--
	}
	for _, n := range m {
		if n != 0 {
			return false
		}
	}
	return true
}

// store writes, for every host, an hour from start of what a probe and the
// detectors publish, through chwriter as the sink does: handshakes (client
// and server, IPv4 and IPv6), closes into CLOSE_WAIT, retransmits, failed
// connects, finished connections with retransmits, socket-table snapshots
// with CLOSE_WAIT groups and listed sockets, and alerts that still fire,
// that resolved, and one that resolved within the second it fired.
func store(t *testing.T, ctx context.Context, conn driver.Conn, db string, start time.Time, hosts []string) {
	t.Helper()
	w := chwriter.New(conn, db, quiet)
	streamSeq := uint64(0)
	add := func(kind string, b *eventpb.Batch) {
		t.Helper()
		if reason, err := chwriter.Check(kind, b); reason != "" {
			t.Fatalf("%s batch: %s: %v", kind, reason, err)
		}
		streamSeq++
		if err := w.Add(ctx, kind, streamSeq, false, b); err != nil {
			t.Fatal(err)
		}
	}
	ip := func(s string) []byte {
		a := net.ParseIP(s)
		if v4 := a.To4(); v4 != nil {
			return v4
		}
		return a
	}
	ns := func(t time.Time) uint64 { return uint64(t.UnixNano()) }
	const (
		v4 = eventpb.Family_FAMILY_IPV4
		v6 = eventpb.Family_FAMILY_IPV6
	)
	for hi, host := range hosts {
		var seq, sock uint64
		var state, errs, retrans []*eventpb.Event
		var conns []*eventpb.Connection
		ev := func(at time.Time, typ eventpb.EventType, comm string, fam eventpb.Family, saddr, daddr string, sport, dport uint32) *eventpb.Event {
			seq++
			return &eventpb.Event{
				Type: typ, TimeUnixNano: ns(at), Seq: seq, Pid: 4000 + uint32(hi), Tid: 4000 + uint32(hi), Comm: comm,
				Family: fam, Saddr: ip(saddr), Daddr: ip(daddr), Sport: sport, Dport: dport, SockId: sock,
				OwnerSource: eventpb.OwnerSource_OWNER_SOURCE_TASK,
			}
		}
		local := fmt.Sprintf("10.0.%d.10", hi)
		for m := 1; m < 60; m += 2 {
			at := start.Add(time.Duration(m)*time.Minute + time.Duration(hi)*time.Second)
			// A client connection to the database and one to an IPv6 API.
			for _, dst := range []struct {
				fam  eventpb.Family
				src  string
				addr string
				port uint32
				hs   uint64
			}{{v4, local, "10.0.9.5", 5432, 800 + uint64(m)*30}, {v6, "2001:db8::10", "2001:db8::7", 443, 15000 + uint64(m)*200}} {
				sock++
				sport := 40000 + uint32(sock)
				e := ev(at, eventpb.EventType_EVENT_TYPE_STATE_CHANGE, "app", dst.fam, dst.src, dst.addr, sport, dst.port)
				e.OldState, e.NewState = eventpb.TcpState_TCP_STATE_CLOSE, eventpb.TcpState_TCP_STATE_SYN_SENT
				state = append(state, e)
				e = ev(at.Add(time.Duration(dst.hs)*time.Microsecond), eventpb.EventType_EVENT_TYPE_STATE_CHANGE, "app", dst.fam, dst.src, dst.addr, sport, dst.port)
				e.OldState, e.NewState = eventpb.TcpState_TCP_STATE_SYN_SENT, eventpb.TcpState_TCP_STATE_ESTABLISHED
				e.StateDurationUs, e.HandshakeUs, e.Side = dst.hs, dst.hs, eventpb.Side_SIDE_CLIENT
				if m%10 == 1 {
					e.HandshakeRetransmits = 1
				}
				state = append(state, e)
				// The peer closes; the app is slow to.
				e = ev(at.Add(20*time.Second), eventpb.EventType_EVENT_TYPE_STATE_CHANGE, "app", dst.fam, dst.src, dst.addr, sport, dst.port)
				e.OldState, e.NewState = eventpb.TcpState_TCP_STATE_ESTABLISHED, eventpb.TcpState_TCP_STATE_CLOSE_WAIT
				e.StateDurationUs, e.OwnerSource = 20e6, eventpb.OwnerSource_OWNER_SOURCE_SOCKET
				state = append(state, e)
				// A retransmit on the way, and the finished connection.
				e = ev(at.Add(5*time.Second), eventpb.EventType_EVENT_TYPE_RETRANSMIT, "app", dst.fam, dst.src, dst.addr, sport, dst.port)
				e.OldState, e.NewState = eventpb.TcpState_TCP_STATE_ESTABLISHED, eventpb.TcpState_TCP_STATE_ESTABLISHED
				e.Segments, e.SegsOut = 1, 40
				retrans = append(retrans, e)
				seq++
				conns = append(conns, &eventpb.Connection{
					TimeUnixNano: ns(at.Add(50 * time.Second)), Seq: seq, SockId: sock, Pid: 4000 + uint32(hi), Comm: "app",
					OwnerSource: eventpb.OwnerSource_OWNER_SOURCE_SOCKET, Family: dst.fam, Saddr: ip(dst.src), Daddr: ip(dst.addr),
					Sport: sport, Dport: dst.port, Side: eventpb.Side_SIDE_CLIENT, StartUnixNano: ns(at), DurationUs: 50e6,
					BytesSent: 12000, BytesReceived: 64000, SegmentsOut: 100, SegmentsIn: 120, Retransmits: uint32(m % 4),
					SrttUs: 300, HandshakeUs: dst.hs, LastState: eventpb.TcpState_TCP_STATE_LAST_ACK,
				})
			}
			// A server-side handshake from a client of this host.
			sock++
			e := ev(at.Add(3*time.Second), eventpb.EventType_EVENT_TYPE_STATE_CHANGE, "nginx", v4, local, "192.0.2.44", 443, 51000+uint32(m))
			e.OldState, e.NewState = eventpb.TcpState_TCP_STATE_SYN_RECV, eventpb.TcpState_TCP_STATE_ESTABLISHED
			e.HandshakeUs, e.Side, e.OwnerSource = 250, eventpb.Side_SIDE_SERVER, eventpb.OwnerSource_OWNER_SOURCE_LISTENER
			state = append(state, e)
			// Failed connects: refused by a cache, timed out to a dead peer.
			for _, f := range []struct {
				addr  string
				port  uint32
				errno int32
			}{{"10.0.9.6", 6379, 111}, {"10.0.9.99", 8080, 110}} {
				sock++
				e := ev(at.Add(7*time.Second), eventpb.EventType_EVENT_TYPE_CONNECT_FAILED, "app", v4, local, f.addr, 42000+uint32(sock), f.port)
				e.OldState, e.NewState, e.Error = eventpb.TcpState_TCP_STATE_SYN_SENT, eventpb.TcpState_TCP_STATE_CLOSE, f.errno
				errs = append(errs, e)
			}
		}
		b := func(events []*eventpb.Event, c []*eventpb.Connection, s *eventpb.Snapshot) *eventpb.Batch {
			return &eventpb.Batch{SchemaVersion: 1, Host: host, ProbeId: "probe-" + host, BatchSeq: streamSeq + 1, Events: events, Connections: c, Snapshot: s}
		}
		add(wire.KindState, b(state, nil, nil))
		add(wire.KindRetransmit, b(retrans, nil, nil))
		add(wire.KindError, b(errs, nil, nil))
		add(wire.KindConn, b(nil, conns, nil))

		// Snapshots every 5 minutes: a CLOSE_WAIT leak growing in app.
		for m := 0; m < 60; m += 5 {
			at := start.Add(time.Duration(m)*time.Minute + 30*time.Second)
			leaked := uint32(1 + m/5)
			s := &eventpb.Snapshot{
				TimeUnixNano: ns(at), Seq: uint64(m/5 + 1), SocketsTotal: 40 + leaked, CloseWaitTotal: leaked,
				TcpOutSegs: 100000 + uint64(m)*1000, TcpRetransSegs: 100 + uint64(m), IntervalMs: 300000,
				Groups: []*eventpb.SocketGroup{
					{State: eventpb.TcpState_TCP_STATE_ESTABLISHED, Pid: 4000 + uint32(hi), Comm: "app", Count: 30, Side: eventpb.Side_SIDE_CLIENT},
					{State: eventpb.TcpState_TCP_STATE_LISTEN, Pid: 900, Comm: "nginx", LocalPort: 443, Count: 1, Side: eventpb.Side_SIDE_SERVER},
					{State: eventpb.TcpState_TCP_STATE_CLOSE_WAIT, Pid: 4000 + uint32(hi), Comm: "app", Count: leaked, Side: eventpb.Side_SIDE_CLIENT},
					{State: eventpb.TcpState_TCP_STATE_CLOSE_WAIT, Pid: 900, Comm: "nginx", LocalPort: 443, Count: 1, Side: eventpb.Side_SIDE_SERVER},
				},
			}
			for i := uint32(0); i < leaked && i < 5; i++ {
				s.CloseWait = append(s.CloseWait, &eventpb.SnapshotSocket{
					SockId: uint64(1000 + i), Cookie: uint64(7000 + i), Pid: 4000 + uint32(hi), Comm: "app",
					OwnerSource: eventpb.OwnerSource_OWNER_SOURCE_SOCKET, Family: v4, Saddr: ip(local), Daddr: ip("10.0.9.5"),
					Sport: 40000 + i, Dport: 5432, Side: eventpb.Side_SIDE_CLIENT, AgeUs: uint64(leaked-i) * 300e6, RecvQueue: 1,
				})
			}
			s.CloseWaitCut = leaked - uint32(len(s.CloseWait))
			add(wire.KindSnapshot, b(nil, nil, s))
		}
	}

	// Alerts as the detectors publish them (JSON, decoded by the sink's
	// DecodeAlert): still firing (with a reminder), resolved later, and
	// resolved within the second it fired (18.16 stores sent_at in seconds:
	// stream_seq orders the two).
	alertAt := func(m int) time.Time { return start.Add(time.Duration(m) * time.Minute) }
	msgs := []alert.Alert{
		{Fingerprint: "fp-leak-web-1", Detector: "conn_leak", Status: alert.Firing, Severity: "warning", Host: "web-1",
			StartsAt: alertAt(10), SentAt: alertAt(10), Labels: map[string]string{"comm": "app", "pid": "4001"}, Value: 5, Threshold: 4,
			Annotations: map[string]string{"summary": "app (pid 4001) leaks CLOSE_WAIT sockets"}},
		{Fingerprint: "fp-leak-web-1", Detector: "conn_leak", Status: alert.Firing, Severity: "critical", Host: "web-1",
			StartsAt: alertAt(10), SentAt: alertAt(40), Labels: map[string]string{"comm": "app", "pid": "4001"}, Value: 9, Threshold: 4,
			Annotations: map[string]string{"summary": "app (pid 4001) leaks CLOSE_WAIT sockets"}},
		{Fingerprint: "fp-slow-db-1", Detector: "slow_handshake", Status: alert.Firing, Severity: "warning", Host: "db-1",
			StartsAt: alertAt(20), SentAt: alertAt(20), Labels: map[string]string{"daddr": "2001:db8::7", "dport": "443"}, Value: 27, Threshold: 20,
			Annotations: map[string]string{"summary": "handshakes to [2001:db8::7]:443 are slow"}},
		{Fingerprint: "fp-refused-web-1", Detector: "conn_failure", Status: alert.Firing, Severity: "warning", Host: "web-1",
			StartsAt: alertAt(5), SentAt: alertAt(5), Value: 30, Threshold: 10},
		{Fingerprint: "fp-refused-web-1", Detector: "conn_failure", Status: alert.Resolved, Severity: "warning", Host: "web-1",
			StartsAt: alertAt(5), EndsAt: ptr(alertAt(25)), SentAt: alertAt(25), Value: 2, Threshold: 10},
		{Fingerprint: "fp-blip-web-1", Detector: "retransmit_spike", Status: alert.Firing, Severity: "warning", Host: "web-1",
			StartsAt: alertAt(30), SentAt: alertAt(30).Add(100 * time.Millisecond), Value: 0.2, Threshold: 0.1},
		{Fingerprint: "fp-blip-web-1", Detector: "retransmit_spike", Status: alert.Resolved, Severity: "warning", Host: "web-1",
			StartsAt: alertAt(30), EndsAt: ptr(alertAt(30).Add(900 * time.Millisecond)), SentAt: alertAt(30).Add(900 * time.Millisecond), Value: 0.01, Threshold: 0.1},
	}
	for _, a := range msgs {
		data, err := json.Marshal(a)
		if err != nil {
			t.Fatal(err)
		}
		m, err := chwriter.DecodeAlert(data)
		if err != nil {
			t.Fatal(err)
		}
		streamSeq++
		if err := w.AddAlert(ctx, streamSeq, false, m); err != nil {
			t.Fatal(err)
		}
	}
	if err := w.Flush(ctx); err != nil {
		t.Fatal(err)
	}
}

func ptr[T any](v T) *T { return &v }
