package all

import (
	"math"
	"testing"
	"time"

	"github.com/netpulse/netpulse/lib/eventpb"
	"github.com/netpulse/netpulse/lib/wire"
	"github.com/netpulse/netpulse/services/detector/detect"
)

// Out-of-schema input never crashes a detector: nil and empty batches,
// zero and extreme times, addresses of the wrong length, unknown types and
// states, snapshots whose counts contradict themselves.
func TestBadInputNeverPanics(t *testing.T) {
	now := time.Date(2026, 3, 2, 10, 0, 0, 0, time.UTC)
	bad := []*eventpb.Event{
		{},
		{Type: eventpb.EventType(99), NewState: eventpb.TcpState(77), TimeUnixNano: math.MaxUint64},
		{Type: eventpb.EventType_EVENT_TYPE_STATE_CHANGE, SockId: 1, NewState: eventpb.TcpState_TCP_STATE_CLOSE_WAIT, Saddr: []byte{1, 2, 3}},
		{Type: eventpb.EventType_EVENT_TYPE_STATE_CHANGE, SockId: 1, OldState: eventpb.TcpState_TCP_STATE_CLOSE_WAIT},
		{Type: eventpb.EventType_EVENT_TYPE_STATE_CHANGE, OldState: eventpb.TcpState_TCP_STATE_SYN_SENT,
			NewState: eventpb.TcpState_TCP_STATE_ESTABLISHED, HandshakeUs: math.MaxUint64, Daddr: []byte{1}},
		{Type: eventpb.EventType_EVENT_TYPE_RETRANSMIT, Segments: math.MaxUint32, Daddr: make([]byte, 17), TimeUnixNano: uint64(now.UnixNano())},
		{Type: eventpb.EventType_EVENT_TYPE_SYNACK_RETRANSMIT, TimeUnixNano: 1},
		{Type: eventpb.EventType_EVENT_TYPE_CONNECT_FAILED, Error: -5, Daddr: nil},
		{Type: eventpb.EventType_EVENT_TYPE_RESET_SENT, Side: eventpb.Side(9)},
		{Type: eventpb.EventType_EVENT_TYPE_RESET_RECEIVED, Daddr: []byte{}},
	}
	batches := []*eventpb.Batch{
		nil,
		{},
		{Events: bad},
		{Connections: []*eventpb.Connection{{}, {Daddr: []byte{9}, SegmentsOut: math.MaxUint32, Retransmits: math.MaxUint32}}},
		{Snapshot: &eventpb.Snapshot{}},
		{Snapshot: &eventpb.Snapshot{TimeUnixNano: uint64(now.UnixNano()), CloseWaitCut: 1000, CloseWaitTotal: 1,
			TcpOutSegs: 1, TcpRetransSegs: 5,
			Groups:    []*eventpb.SocketGroup{{State: eventpb.TcpState_TCP_STATE_CLOSE_WAIT, Count: 0}, {State: eventpb.TcpState_TCP_STATE_CLOSE_WAIT, Count: math.MaxUint32}},
			CloseWait: []*eventpb.SnapshotSocket{{AgeUs: math.MaxUint64}, {Saddr: []byte{1}}}}},
		{Snapshot: &eventpb.Snapshot{TimeUnixNano: uint64(now.UnixNano()) + 1, TcpOutSegs: 0, TcpRetransSegs: 1}},
	}
	for _, name := range detect.Default.Names() {
		p, _ := detect.Default.Lookup(name)
		d, err := p.New(p.Config(), "h")
		if err != nil {
			t.Fatal(err)
		}
		func() {
			defer func() {
				if r := recover(); r != nil {
					t.Errorf("%s panicked: %v", name, r)
				}
			}()
			for _, kind := range wire.DataKinds {
				for _, b := range batches {
					d.Observe(detect.Input{Host: "h", Kind: kind, Batch: b})
				}
			}
			for _, at := range []time.Time{now, now.Add(time.Hour), time.Unix(0, 0), now.Add(-time.Hour)} {
				for _, c := range d.Evaluate(at) {
					if len(c.Labels) == 0 || c.SQL == "" || !c.Severity.Valid() {
						t.Errorf("%s: malformed condition %+v", name, c)
					}
				}
			}
		}()
	}
}
