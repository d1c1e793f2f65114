package chwriter

import (
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/netpulse/netpulse/lib/eventpb"
	"github.com/netpulse/netpulse/lib/wire"
)

func TestTableOfEveryDataKind(t *testing.T) {
	want := map[string]string{
		"state": "tcp_events", "retransmit": "tcp_events", "reset": "tcp_events", "error": "tcp_events",
		"conn": "tcp_connections", "snapshot": "socket_snapshots", "drop": "tcp_drops",
	}
	for _, k := range wire.DataKinds {
		if got := TableOf(k); got != want[k] {
			t.Errorf("TableOf(%q) = %q, want %q", k, got, want[k])
		}
	}
	for _, k := range []string{wire.KindStats, "", "bogus"} {
		if got := TableOf(k); got != "" {
			t.Errorf("TableOf(%q) = %q, want none", k, got)
		}
	}
}

func TestCheck(t *testing.T) {
	now := uint64(time.Date(2026, 11, 24, 12, 0, 0, 0, time.UTC).UnixNano())
	ev := func(typ eventpb.EventType) *eventpb.Event { return &eventpb.Event{Type: typ, TimeUnixNano: now} }
	conn := &eventpb.Connection{TimeUnixNano: now}
	snap := &eventpb.Snapshot{TimeUnixNano: now}
	drop := &eventpb.DropCount{Count: 3, StartUnixNano: now - 10e9, EndUnixNano: now}
	drops := func(d ...*eventpb.DropCount) []*eventpb.DropCount { return d }
	for _, tt := range []struct {
		name, kind string
		b          *eventpb.Batch
		reason     string // "" when valid
	}{
		{"state", "state", &eventpb.Batch{Events: []*eventpb.Event{ev(eventpb.EventType_EVENT_TYPE_STATE_CHANGE)}}, ""},
		{"retransmits", "retransmit", &eventpb.Batch{Events: []*eventpb.Event{ev(eventpb.EventType_EVENT_TYPE_RETRANSMIT), ev(eventpb.EventType_EVENT_TYPE_SYNACK_RETRANSMIT)}}, ""},
		{"resets", "reset", &eventpb.Batch{Events: []*eventpb.Event{ev(eventpb.EventType_EVENT_TYPE_RESET_SENT), ev(eventpb.EventType_EVENT_TYPE_RESET_RECEIVED)}}, ""},
		{"errors", "error", &eventpb.Batch{Events: []*eventpb.Event{ev(eventpb.EventType_EVENT_TYPE_SOCKET_ERROR), ev(eventpb.EventType_EVENT_TYPE_CONNECT_FAILED)}}, ""},
		{"conn", "conn", &eventpb.Batch{Connections: []*eventpb.Connection{conn}}, ""},
		{"snapshot", "snapshot", &eventpb.Batch{Snapshot: snap}, ""},
		{"drops", "drop", &eventpb.Batch{Drops: drops(drop, drop)}, ""},

		{"stats kind", "stats", &eventpb.Batch{Events: []*eventpb.Event{ev(1)}}, "unknown kind"},
		{"unknown kind", "bogus", &eventpb.Batch{}, "unknown kind"},
		{"empty state", "state", &eventpb.Batch{}, "state: payload does not match its kind"},
		{"state with a snapshot", "state", &eventpb.Batch{Events: []*eventpb.Event{ev(1)}, Snapshot: snap}, "state: payload does not match its kind"},
		{"conn with events", "conn", &eventpb.Batch{Events: []*eventpb.Event{ev(1)}}, "conn: payload does not match its kind"},
		{"empty conn", "conn", &eventpb.Batch{}, "conn: payload does not match its kind"},
		{"snapshot without one", "snapshot", &eventpb.Batch{Connections: []*eventpb.Connection{conn}}, "snapshot: payload does not match its kind"},
		{"retransmit on state", "state", &eventpb.Batch{Events: []*eventpb.Event{ev(1), ev(eventpb.EventType_EVENT_TYPE_RETRANSMIT)}}, "state: event type of another kind"},
		{"unspecified type", "error", &eventpb.Batch{Events: []*eventpb.Event{ev(0)}}, "error: unknown event type"},
		{"future type", "reset", &eventpb.Batch{Events: []*eventpb.Event{ev(99)}}, "reset: unknown event type"},
		{"event at 0", "state", &eventpb.Batch{Events: []*eventpb.Event{{Type: 1}}}, "state: time out of range"},
		{"connection after 2106", "conn", &eventpb.Batch{Connections: []*eventpb.Connection{{TimeUnixNano: 1<<63 + 5}}}, "conn: time out of range"},
		{"connection started at 5", "conn", &eventpb.Batch{Connections: []*eventpb.Connection{{TimeUnixNano: now, StartUnixNano: 5}}}, "conn: time out of range"},
		{"snapshot at 0", "snapshot", &eventpb.Batch{Snapshot: &eventpb.Snapshot{}}, "snapshot: time out of range"},
		{"empty drop", "drop", &eventpb.Batch{}, "drop: payload does not match its kind"},
		{"drop with a snapshot", "drop", &eventpb.Batch{Drops: drops(drop), Snapshot: snap}, "drop: payload does not match its kind"},
		{"drops under conn", "conn", &eventpb.Batch{Connections: []*eventpb.Connection{conn}, Drops: drops(drop)}, "conn: payload does not match its kind"},
		{"drops under state", "state", &eventpb.Batch{Events: []*eventpb.Event{ev(1)}, Drops: drops(drop)}, "state: payload does not match its kind"},
		{"drop interval from 0", "drop", &eventpb.Batch{Drops: drops(&eventpb.DropCount{EndUnixNano: now})}, "drop: time out of range"},
		{"drop interval ending first", "drop", &eventpb.Batch{Drops: drops(&eventpb.DropCount{StartUnixNano: now, EndUnixNano: now - 1})}, "drop: time out of range"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			reason, err := Check(tt.kind, tt.b)
			if reason != tt.reason {
				t.Errorf("Check = %q (%v), want %q", reason, err, tt.reason)
			}
			if (err != nil) != (reason != "") {
				t.Errorf("Check returned reason %q with error %v", reason, err)
			}
		})
	}
}

func TestDecodeAlert(t *testing.T) {
	const good = `{"fingerprint":"f1","detector":"conn_leak","status":"firing","severity":"warning","host":"h",
		"startsAt":"2026-11-24T10:00:00Z","sentAt":"2026-11-24T10:00:05.5Z","labels":{"pid":"1"},
		"annotations":{"summary":"s","description":"d"},"value":3,"threshold":2,"evidence":{"z":1,"a":[1.50,2]}}`
	a, err := DecodeAlert([]byte(good))
	if err != nil {
		t.Fatal(err)
	}
	if string(a.Evidence) != `{"z":1,"a":[1.50,2]}` {
		t.Errorf("evidence %s, want the JSON as published", a.Evidence)
	}
	if a.Labels["pid"] != "1" || a.Summary() != "s" || a.SentAt.Nanosecond() != 5e8 {
		t.Errorf("decoded %+v", a)
	}
	for _, tt := range []struct{ name, json, want string }{
		{"not JSON", `{"fingerprint":`, "unexpected end"},
		{"no fingerprint", strings.Replace(good, `"f1"`, `""`, 1), "no fingerprint"},
		{"no detector", strings.Replace(good, `"detector":"conn_leak",`, ``, 1), "no detector"},
		{"odd status", strings.Replace(good, `"firing"`, `"pending"`, 1), "status"},
		{"no sentAt", strings.Replace(good, `"sentAt":"2026-11-24T10:00:05.5Z",`, ``, 1), "no sentAt"},
		{"no startsAt", strings.Replace(good, `"startsAt":"2026-11-24T10:00:00Z",`, ``, 1), "startsAt"},
		{"endsAt in 1900", strings.Replace(good, `"sentAt"`, `"endsAt":"1900-01-01T00:00:00Z","sentAt"`, 1), "endsAt"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			_, err := DecodeAlert([]byte(tt.json))
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("DecodeAlert = %v, want an error containing %q", err, tt.want)
			}
			if tt.name != "not JSON" && !errors.Is(err, ErrInvalidAlert) {
				t.Errorf("%v does not wrap ErrInvalidAlert", err)
			}
		})
	}
}
