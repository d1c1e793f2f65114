package chwriter

import (
	"fmt"
	"reflect"
	"testing"
	"time"

	"github.com/netpulse/netpulse/lib/alert"
	"github.com/netpulse/netpulse/lib/eventpb"
	"github.com/netpulse/netpulse/lib/wire"
	"github.com/netpulse/netpulse/services/sink/internal/chschema"
)

func TestEnumCodesMatchTheSchema(t *testing.T) {
	// The Enum8 columns number states like the kernel and families as 4/6.
	if wire.States.Code(eventpb.TcpState_TCP_STATE_CLOSE_WAIT) != 8 || wire.States.Code(eventpb.TcpState_TCP_STATE_NEW_SYN_RECV) != 12 || wire.States.Code(eventpb.TcpState(99)) != 0 {
		t.Error("state codes differ from the kernel's numbering")
	}
	if wire.Families.Code(eventpb.Family_FAMILY_IPV6) != 6 || wire.Families.Code(eventpb.Family(5)) != 0 {
		t.Error("family codes differ from the schema's Enum8")
	}
	if wire.OwnerSources.Code(eventpb.OwnerSource_OWNER_SOURCE_SCAN) != 4 || wire.OwnerSources.Code(eventpb.OwnerSource(9)) != 0 || wire.OwnerSources.Code(eventpb.OwnerSource(-1)) != 0 {
		t.Error("owner source codes differ from the schema's Enum8")
	}
	if wire.Sides.Code(eventpb.Side_SIDE_SERVER) != 2 || wire.Sides.Code(eventpb.Side(3)) != 0 {
		t.Error("side codes differ from the schema's Enum8")
	}
	if wire.EventTypes.Name(eventpb.EventType_EVENT_TYPE_CONNECT_FAILED) != "connect_failed" || wire.EventTypes.Name(eventpb.EventType(42)) != "unknown" {
		t.Error("type names differ from the contract")
	}
}

func TestAddrCache(t *testing.T) {
	var c addrCache
	v4 := []byte{10, 1, 2, 3}
	v6 := []byte{0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1}
	for i := 0; i < 2; i++ { // second round from the cache
		if got := c.string(v4); got != "10.1.2.3" {
			t.Errorf("v4: %q", got)
		}
		if got := c.string(v6); got != "2001:db8::1" {
			t.Errorf("v6: %q", got)
		}
	}
	if got := c.string([]byte{1, 2, 3}); got != "" {
		t.Errorf("3-byte address: %q, want empty", got)
	}
	// Many more addresses than slots: every one still formats right.
	for i := range 3 * addrSlots {
		b := []byte{10, byte(i >> 16), byte(i >> 8), byte(i)}
		want := fmt.Sprintf("10.%d.%d.%d", byte(i>>16), byte(i>>8), byte(i))
		if got := c.string(b); got != want {
			t.Fatalf("%v: %q, want %q", b, got, want)
		}
	}
	if got := c.string(v6); got != "2001:db8::1" {
		t.Errorf("v6 after many: %q", got)
	}
	// An IPv4 address and an IPv6 one with the same first bytes differ.
	if got := c.string(v6[:4]); got != "32.1.13.184" {
		t.Errorf("v6 prefix as v4: %q", got)
	}
}

// Every row buffer appends one value to every column per row, in as many
// columns as its table has, and reset empties them all: a column forgotten
// in add, values or reset would misalign or leak rows into the next INSERT.
func TestRowBuffersFillEveryColumn(t *testing.T) {
	var addrs addrCache
	ev := &eventpb.Event{Type: eventpb.EventType_EVENT_TYPE_STATE_CHANGE, TimeUnixNano: 1e18, Saddr: []byte{1, 2, 3, 4}}
	conn := &eventpb.Connection{TimeUnixNano: 1e18}
	snap := &eventpb.Snapshot{
		TimeUnixNano: 1e18,
		Groups:       []*eventpb.SocketGroup{{Count: 3}, {Count: 4}},
		CloseWait:    []*eventpb.SnapshotSocket{{AgeUs: 5}},
		Endpoints:    []*eventpb.EndpointGroup{{TimeWait: 6}},
	}
	drop := &eventpb.DropCount{Count: 2, StartUnixNano: 1e18 - 1e10, EndUnixNano: 1e18}
	al := &AlertMessage{Alert: alert.Alert{SentAt: time.Unix(1e9, 0), Labels: map[string]string{"b": "2", "a": "1"}}}
	for _, tt := range []struct {
		spec *chschema.Table
		buf  rowBuffer
		rows int
	}{
		{&chschema.TCPEvents, &eventRows{}, 2},
		{&chschema.TCPConnections, &connRows{}, 2},
		{&chschema.SocketSnapshots, &snapRows{}, 10},
		{&chschema.TCPDrops, &dropRows{}, 2},
		{&chschema.Alerts, &alertRows{}, 2},
	} {
		t.Run(tt.spec.Name, func(t *testing.T) {
			for range 2 {
				switch r := tt.buf.(type) {
				case *eventRows:
					r.add("h", "p", 7, ev, &addrs)
				case *connRows:
					r.add("h", "p", 7, conn, &addrs)
				case *snapRows:
					r.add("h", "p", 7, snap, &addrs)
				case *dropRows:
					r.add("h", "p", 7, 3, drop, &addrs)
				case *alertRows:
					r.add(7, al)
				}
			}
			check := func(want int) {
				t.Helper()
				vals := tt.buf.values()
				if len(vals) != len(tt.spec.Columns) {
					t.Fatalf("values() has %d columns, %s has %d", len(vals), tt.spec.Name, len(tt.spec.Columns))
				}
				for i, v := range vals {
					if n := reflect.ValueOf(v).Len(); n != want {
						t.Errorf("column %s holds %d values, want %d", tt.spec.Columns[i].Name, n, want)
					}
				}
				if st := tt.buf.state(); st.rows != want {
					t.Errorf("state counts %d rows, want %d", st.rows, want)
				}
			}
			check(tt.rows)
			if st := tt.buf.state(); len(st.msgs) != 1 || st.msgs[0] != 7 {
				t.Errorf("messages %v, want [7]", st.msgs)
			}
			tt.buf.reset()
			check(0)
		})
	}
}

func TestSnapshotRows(t *testing.T) {
	var addrs addrCache
	var r snapRows
	r.add("h", "p", 9, &eventpb.Snapshot{
		TimeUnixNano: 1e18, Seq: 4, SocketsTotal: 10, CloseWaitTotal: 3, CloseWaitCut: 2, Seeded: true,
		Groups:    []*eventpb.SocketGroup{{State: eventpb.TcpState_TCP_STATE_LISTEN, LocalPort: 80, Count: 1, Comm: "nginx"}},
		CloseWait: []*eventpb.SnapshotSocket{{Sport: 8080, Dport: 5555, AgeUs: 1e6, AgeEstimated: true, Daddr: []byte{10, 0, 0, 1}}},
	}, &addrs)
	if r.rows != 3 || r.kind[0] != rowSummary || r.kind[1] != rowGroup || r.kind[2] != rowCloseWait {
		t.Fatalf("rows %d kinds %v, want summary, group, close_wait", r.rows, r.kind)
	}
	if r.socketsTotal[0] != 10 || r.cwTotal[0] != 3 || r.cwCut[0] != 2 || r.seeded[0] != 1 || r.socketsTotal[1] != 0 {
		t.Errorf("summary columns on the wrong rows: sockets_total %v close_wait_total %v", r.socketsTotal, r.cwTotal)
	}
	if r.tcpState[1] != 10 || r.localPort[1] != 80 || r.comm[1] != "nginx" || r.count[1] != 1 {
		t.Errorf("group row: state %d port %d comm %q count %d", r.tcpState[1], r.localPort[1], r.comm[1], r.count[1])
	}
	if r.tcpState[2] != 8 || r.localPort[2] != 8080 || r.dport[2] != 5555 || r.daddr[2] != "10.0.0.1" || r.ageUs[2] != 1e6 || r.ageEstimated[2] != 1 || r.count[2] != 1 {
		t.Errorf("close_wait row: state %d port %d dport %d daddr %q age %d", r.tcpState[2], r.localPort[2], r.dport[2], r.daddr[2], r.ageUs[2])
	}
	for i := range 3 {
		if r.seq[i] != 4 || r.sSeq[i] != 9 || r.timeNs[i] != 1e18 {
			t.Errorf("row %d: seq %d stream_seq %d time_ns %d", i, r.seq[i], r.sSeq[i], r.timeNs[i])
		}
	}
}

func BenchmarkAddrCache(b *testing.B) {
	var c addrCache
	addrs := make([][]byte, 5000)
	for i := range addrs {
		addrs[i] = []byte{10, 0, byte(i >> 8), byte(i)}
	}
	b.Run("same", func(b *testing.B) {
		for i := 0; b.Loop(); i++ {
			c.string(addrs[i/5%len(addrs)])
		}
	})
	b.Run("spread", func(b *testing.B) {
		for i := 0; b.Loop(); i++ {
			c.string(addrs[(i*7919)%len(addrs)])
		}
	})
}

// order lists tcp_events rows in the table's sort order, (host, type,
// time in seconds), by whole runs: every row once, the order within a run
// kept; or nil when the rows are sorted already or runs overlap.
func TestEventRowsOrder(t *testing.T) {
	var addrs addrCache
	state, retrans := eventpb.EventType_EVENT_TYPE_STATE_CHANGE, eventpb.EventType_EVENT_TYPE_RETRANSMIT
	type msg struct {
		host  string
		typ   eventpb.EventType
		start uint64 // seconds of the first event; one event per 0.1 s
		n     int
	}
	for _, tt := range []struct {
		name    string
		msgs    []msg
		reorder bool // order returns spans
	}{
		{"one message", []msg{{"a", state, 100, 40}}, false},
		{"one host in time order", []msg{{"a", state, 100, 40}, {"a", state, 104, 40}}, false},
		{"hosts interleaved", []msg{{"b", state, 100, 40}, {"a", state, 100, 40}, {"b", state, 104, 40}, {"a", state, 104, 40}, {"c", state, 90, 20}}, true},
		{"types interleaved", []msg{{"a", retrans, 100, 40}, {"a", state, 100, 40}, {"a", retrans, 104, 40}}, true},
		{"same second across messages", []msg{{"b", state, 100, 20}, {"a", state, 100, 20}, {"b", state, 101, 20}}, true},
		{"overlapping runs", []msg{{"b", state, 100, 40}, {"a", state, 100, 40}, {"b", state, 102, 40}}, false},
		{"runs too short", []msg{{"b", state, 100, 2}, {"a", state, 100, 2}, {"b", state, 104, 2}, {"a", state, 104, 2}}, false},
	} {
		t.Run(tt.name, func(t *testing.T) {
			var r eventRows
			seq := uint64(0)
			for i, m := range tt.msgs {
				for k := range m.n {
					seq++
					ev := &eventpb.Event{Type: m.typ, TimeUnixNano: m.start*1e9 + uint64(k)*1e8, Seq: seq}
					r.add(m.host, "p", uint64(i+1), ev, &addrs)
				}
			}
			spans := r.order()
			if (spans != nil) != tt.reorder {
				t.Fatalf("order() = %v, want spans: %v", spans, tt.reorder)
			}
			if spans == nil {
				spans = []span{{0, r.rows}}
			}
			var rows []int
			for _, s := range spans {
				for i := s.lo; i < s.hi; i++ {
					rows = append(rows, i)
				}
			}
			if len(rows) != r.rows {
				t.Fatalf("spans %v hold %d rows, want %d", spans, len(rows), r.rows)
			}
			seen := make([]bool, r.rows)
			for k, i := range rows {
				if seen[i] {
					t.Fatalf("row %d twice in %v", i, spans)
				}
				seen[i] = true
				if k == 0 {
					continue
				}
				j := rows[k-1]
				a, b := [2]string{r.host[j], r.typ[j]}, [2]string{r.host[i], r.typ[i]}
				if !tt.reorder && a != b {
					continue // unsorted input left alone: nothing to check
				}
				switch {
				case a[0] > b[0] || a[0] == b[0] && a[1] > b[1]:
					t.Fatalf("row %d (%v) after row %d (%v)", i, b, j, a)
				case a == b && r.timeNs[j]/1e9 > r.timeNs[i]/1e9:
					t.Fatalf("row %d (%v, %d s) after row %d (%d s)", i, b, r.timeNs[i]/1e9, j, r.timeNs[j]/1e9)
				case a == b && r.timeNs[j] == r.timeNs[i] && r.seq[j] > r.seq[i]:
					t.Fatalf("rows %d and %d of one time swapped", j, i)
				}
			}
			r.reset()
			if r.order() != nil || len(r.runs) != 0 {
				t.Errorf("after reset: runs %v", r.runs)
			}
		})
	}
}
