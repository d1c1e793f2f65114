package batch

import (
	"fmt"
	"testing"
	"time"

	"google.golang.org/protobuf/proto"

	"github.com/netpulse/netpulse/lib/eventpb"
)

func sampleEvent(i int) *eventpb.Event {
	return &eventpb.Event{
		Type:            eventpb.EventType_EVENT_TYPE_STATE_CHANGE,
		TimeUnixNano:    uint64(1_700_000_000_000_000_000 + i),
		Seq:             uint64(i + 1),
		Pid:             4242,
		Tid:             4243,
		Comm:            "curl",
		Family:          eventpb.Family_FAMILY_IPV4,
		Saddr:           []byte{127, 0, 0, 1},
		Daddr:           []byte{127, 0, 0, 1},
		Sport:           uint32(40000 + i),
		Dport:           8080,
		OldState:        eventpb.TcpState_TCP_STATE_SYN_SENT,
		NewState:        eventpb.TcpState_TCP_STATE_ESTABLISHED,
		StateDurationUs: 123,
		SockId:          0xdeadbeef,
	}
}

// The hand-assembled bytes must decode with the generated code (both the
// official protobuf runtime and vtprotobuf) to exactly what went in.
func TestEncoderRoundTrip(t *testing.T) {
	tests := []struct {
		name       string
		maxBytes   int
		maxEvents  int
		add        int
		wantFullAt int // index of the Add that reports full; -1: never
	}{
		{name: "one event", maxBytes: 1 << 16, maxEvents: 100, add: 1, wantFullAt: -1},
		{name: "full by count", maxBytes: 1 << 16, maxEvents: 10, add: 10, wantFullAt: 9},
		{name: "full by size", maxBytes: 200, maxEvents: 1000, add: 5, wantFullAt: 2}, // ~19 B header + ~62 B per event
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := NewEncoder("host-a", "probe-1", "state", tt.maxBytes, tt.maxEvents, nil)
			fullAt := -1
			for i := 0; i < tt.add; i++ {
				if e.Add(sampleEvent(i), time.Unix(0, 0)) && fullAt < 0 {
					fullAt = i
				}
			}
			if fullAt != tt.wantFullAt {
				t.Fatalf("full reported at add %d, want %d", fullAt, tt.wantFullAt)
			}
			b := e.Take()
			if b.Seq != 1 || b.Events != tt.add {
				t.Fatalf("batch seq=%d events=%d, want 1 and %d", b.Seq, b.Events, tt.add)
			}
			if b.Subject != "netpulse.events.host-a.state" || b.MsgID != "probe-1-state-1" {
				t.Fatalf("subject %q, msg id %q", b.Subject, b.MsgID)
			}
			var viaProto eventpb.Batch
			if err := proto.Unmarshal(b.Data, &viaProto); err != nil {
				t.Fatalf("proto.Unmarshal: %v", err)
			}
			var viaVT eventpb.Batch
			if err := viaVT.UnmarshalVT(b.Data); err != nil {
				t.Fatalf("UnmarshalVT: %v", err)
			}
			want := &eventpb.Batch{SchemaVersion: eventpb.SchemaVersion, Host: "host-a", ProbeId: "probe-1", BatchSeq: 1}
			for i := 0; i < tt.add; i++ {
				want.Events = append(want.Events, sampleEvent(i))
			}
			if !proto.Equal(&viaProto, want) {
				t.Errorf("proto decode differs:\n got %v\nwant %v", &viaProto, want)
			}
			if !proto.Equal(&viaVT, want) {
				t.Errorf("vtproto decode differs:\n got %v\nwant %v", &viaVT, want)
			}
		})
	}
}

func TestEncoderSequenceAndAge(t *testing.T) {
	e := NewEncoder("h", "p", "state", 1<<16, 100, nil)
	t0 := time.Unix(100, 0)
	if e.Age(t0) != 0 {
		t.Fatal("empty encoder has an age")
	}
	for want := uint64(1); want <= 3; want++ {
		e.Add(sampleEvent(0), t0)
		if got := e.Age(t0.Add(time.Second)); got != time.Second {
			t.Fatalf("age %v, want 1s", got)
		}
		b := e.Take()
		if b.Seq != want {
			t.Fatalf("batch seq %d, want %d", b.Seq, want)
		}
		b.Release()
		if want > 1 && len(e.bufs.free) != 1 {
			t.Fatalf("released buffer not kept for reuse (%d spare)", len(e.bufs.free))
		}
		if e.Len() != 0 {
			t.Fatal("Take left events behind")
		}
	}
}

// Connections and snapshots go into their own Batch fields and decode back
// to what went in.
func TestEncoderConnectionsAndSnapshot(t *testing.T) {
	conn := &eventpb.Connection{
		TimeUnixNano: 1_700_000_000_000_000_000, Seq: 7, SockId: 9, Pid: 42, Comm: "nginx",
		Family: eventpb.Family_FAMILY_IPV6, Saddr: make([]byte, 16), Daddr: make([]byte, 16),
		Sport: 443, Dport: 50000, Side: eventpb.Side_SIDE_SERVER, BytesSent: 1 << 20, BytesReceived: 300,
		SrttUs: 80, LastState: eventpb.TcpState_TCP_STATE_LAST_ACK,
	}
	e := NewEncoder("h", "p", "conn", 1<<16, 100, nil)
	e.AddConn(conn, time.Unix(0, 0))
	e.AddConn(conn, time.Unix(0, 0))
	b := e.Take()
	var got eventpb.Batch
	if err := got.UnmarshalVT(b.Data); err != nil {
		t.Fatal(err)
	}
	if len(got.Connections) != 2 || !proto.Equal(got.Connections[1], conn) || len(got.Events) != 0 || b.MsgID != "p-conn-1" {
		t.Fatalf("decoded %v (msg id %s)", &got, b.MsgID)
	}

	snap := &eventpb.Snapshot{Seq: 3, SocketsTotal: 2, Seeded: true, Groups: []*eventpb.SocketGroup{
		{State: eventpb.TcpState_TCP_STATE_CLOSE_WAIT, Pid: 1, Comm: "leaky", LocalPort: 8080, Count: 2},
	}}
	s := NewEncoder("h", "p", "snapshot", 1<<16, 100, nil)
	s.AddSnapshot(snap, time.Unix(0, 0))
	sb := s.Take()
	got.ResetVT()
	if err := got.UnmarshalVT(sb.Data); err != nil {
		t.Fatal(err)
	}
	if !proto.Equal(got.Snapshot, snap) || sb.Subject != "netpulse.events.h.snapshot" {
		t.Fatalf("decoded %v on %s", &got, sb.Subject)
	}
}

func BenchmarkEncoderAdd(b *testing.B) {
	e := NewEncoder("host-a", "probe-1", "state", 256<<10, 1<<20, nil)
	ev := sampleEvent(1)
	now := time.Now()
	b.ReportAllocs()
	for i := 0; b.Loop(); i++ {
		if e.Add(ev, now) {
			e.Recycle(e.Take().Data)
		}
	}
	b.ReportMetric(float64(ev.SizeVT()), "bytes/event")
}

func ExampleEncoder() {
	e := NewEncoder("web-1", "3f2a", "state", 256<<10, 4096, nil)
	e.Add(sampleEvent(0), time.Now())
	b := e.Take()
	var got eventpb.Batch
	_ = got.UnmarshalVT(b.Data)
	fmt.Println(got.Host, got.BatchSeq, len(got.Events), got.Events[0].NewState)
	// Output: web-1 1 1 TCP_STATE_ESTABLISHED
}

// TestEncoderKeepsFewSpares checks that after a burst of batches released
// at once, the Encoder keeps only DefaultSpares of them.
func TestEncoderKeepsFewSpares(t *testing.T) {
	e := NewEncoder("h", "p", "state", 4096, 1, nil)
	var taken []Batch
	for i := range 3 * DefaultSpares {
		e.Add(sampleEvent(i), time.Unix(1, 0))
		taken = append(taken, e.Take())
	}
	for _, b := range taken {
		b.Release()
	}
	if len(e.bufs.free) != DefaultSpares {
		t.Fatalf("%d spare buffers kept after releasing %d, want %d", len(e.bufs.free), len(taken), DefaultSpares)
	}
}

// TestEncodersShareBuffers checks that a buffer one Encoder released is
// reused by another of the same pool, and that the pool stays bounded.
func TestEncodersShareBuffers(t *testing.T) {
	bufs := NewBuffers(2)
	a := NewEncoder("h", "p", "state", 4096, 1, bufs)
	c := NewEncoder("h", "p", "conn", 4096, 1, bufs)
	a.Add(sampleEvent(1), time.Unix(1, 0))
	ba := a.Take()
	ba.Release()
	c.AddConn(&eventpb.Connection{SockId: 7}, time.Unix(1, 0))
	bc := c.Take()
	if &bc.Data[:1][0] != &ba.Data[:1][0] {
		t.Fatal("the conn encoder did not reuse the buffer the state encoder released")
	}
	var taken []Batch
	for i := range 5 {
		a.Add(sampleEvent(i), time.Unix(1, 0))
		taken = append(taken, a.Take())
	}
	for _, b := range append(taken, bc) {
		b.Release()
	}
	if len(bufs.free) != 2 {
		t.Fatalf("%d spare buffers in a pool of 2", len(bufs.free))
	}
}
