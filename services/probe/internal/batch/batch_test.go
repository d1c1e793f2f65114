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
			e := NewEncoder("host-a", "probe-1", tt.maxBytes, tt.maxEvents)
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
	e := NewEncoder("h", "p", 1<<16, 100)
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
		e.Recycle(b.Data)
		if e.Len() != 0 {
			t.Fatal("Take left events behind")
		}
	}
}

func BenchmarkEncoderAdd(b *testing.B) {
	e := NewEncoder("host-a", "probe-1", 256<<10, 1<<20)
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
	e := NewEncoder("web-1", "3f2a", 256<<10, 4096)
	e.Add(sampleEvent(0), time.Now())
	b := e.Take()
	var got eventpb.Batch
	_ = got.UnmarshalVT(b.Data)
	fmt.Println(got.Host, got.BatchSeq, len(got.Events), got.Events[0].NewState)
	// Output: web-1 1 1 TCP_STATE_ESTABLISHED
}
