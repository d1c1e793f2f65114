package wire

import (
	"strings"
	"testing"
	"time"

	"github.com/netpulse/netpulse/lib/alert"
	"github.com/netpulse/netpulse/lib/eventpb"
)

func TestParseEventSubject(t *testing.T) {
	for _, tc := range []struct {
		subject, host, kind string
		ok                  bool
	}{
		{"netpulse.events.web-1.state", "web-1", "state", true},
		{EventSubject("db_2", KindSnapshot), "db_2", "snapshot", true},
		{"netpulse.events.web-1", "", "", false},
		{"netpulse.events.web.1.state", "", "", false}, // a host is one token
		{"netpulse.events..state", "", "", false},
		{"netpulse.events.web-1.", "", "", false},
		{"netpulse.alerts.conn_leak.warning.web-1", "", "", false},
		{"other.events.web-1.state", "", "", false},
	} {
		host, kind, ok := ParseEventSubject(tc.subject)
		if host != tc.host || kind != tc.kind || ok != tc.ok {
			t.Errorf("ParseEventSubject(%q) = %q, %q, %v; want %q, %q, %v", tc.subject, host, kind, ok, tc.host, tc.kind, tc.ok)
		}
	}
}

func TestSanitizeToken(t *testing.T) {
	tests := []struct{ in, repl, want string }{
		{"web-1", "_", "web-1"},
		{"web-1.prod.example.com", "_", "web-1_prod_example_com"},
		{"a*b>c d\te", "-", "a-b-c-d-e"},
		{"", "_", "unknown"},
		{"häßlich.de", "_", "häßlich_de"},
	}
	for _, tt := range tests {
		if got := SanitizeToken(tt.in, tt.repl); got != tt.want {
			t.Errorf("SanitizeToken(%q, %q) = %q, want %q", tt.in, tt.repl, got, tt.want)
		}
	}
}

func TestSubjects(t *testing.T) {
	if got := EventSubject("web-1", KindState); got != "netpulse.events.web-1.state" {
		t.Errorf("EventSubject = %q", got)
	}
	if got := KindSubjects(KindStats); got != "netpulse.events.*.stats" {
		t.Errorf("KindSubjects = %q", got)
	}
	if got := AlertSubject("conn_leak", "warning", "web-1"); got != "netpulse.alerts.conn_leak.warning.web-1" {
		t.Errorf("AlertSubject = %q", got)
	}
	if got := DetectorDeadLetterSubject("conn_leak"); got != "netpulse.deadletter.detector.conn_leak" {
		t.Errorf("DetectorDeadLetterSubject = %q", got)
	}
}

// Every event type the proto knows has a kind and a name; the names follow
// the proto's (lower case, no prefix); states are the kernel's names.
func TestEnumsCoverTheProto(t *testing.T) {
	for n, pname := range eventpb.EventType_name {
		typ := eventpb.EventType(n)
		if typ == eventpb.EventType_EVENT_TYPE_UNSPECIFIED {
			continue
		}
		if KindOf(typ) == "" {
			t.Errorf("%s has no kind", pname)
		}
		if got, want := EventTypes.Name(typ), strings.ToLower(strings.TrimPrefix(pname, "EVENT_TYPE_")); got != want {
			t.Errorf("EventTypes.Name(%s) = %q, want %q", pname, got, want)
		}
	}
	check := func(what string, names map[int32]string, prefix string, name func(int32) string, lower bool) {
		for n, pname := range names {
			if n == 0 {
				continue
			}
			want := strings.TrimPrefix(pname, prefix)
			if lower {
				want = strings.ToLower(want)
			}
			if got := name(n); got != want {
				t.Errorf("%s name of %s = %q, want %q", what, pname, got, want)
			}
		}
	}
	check("state", eventpb.TcpState_name, "TCP_STATE_", func(n int32) string { return States.Name(eventpb.TcpState(n)) }, false)
	check("side", eventpb.Side_name, "SIDE_", func(n int32) string { return Sides.Name(eventpb.Side(n)) }, true)
	check("owner source", eventpb.OwnerSource_name, "OWNER_SOURCE_", func(n int32) string { return OwnerSources.Name(eventpb.OwnerSource(n)) }, true)
	check("family", eventpb.Family_name, "FAMILY_", func(n int32) string { return Families.Name(eventpb.Family(n)) }, true)
	check("drop source", eventpb.DropSource_name, "DROP_SOURCE_", func(n int32) string { return DropSources.Name(eventpb.DropSource(n)) }, true)
}

func TestEnumUnknownValues(t *testing.T) {
	if got := States.Name(99); got != "UNKNOWN" || States.Code(99) != 0 || States.Code(-1) != 0 {
		t.Errorf("state 99: %q, code %d", got, States.Code(99))
	}
	if Families.Code(5) != 0 || Families.Name(5) != "unknown" || Families.Code(eventpb.Family_FAMILY_IPV6) != 6 {
		t.Errorf("family codes: 5 -> %d %q, ipv6 -> %d", Families.Code(5), Families.Name(5), Families.Code(eventpb.Family_FAMILY_IPV6))
	}
	if got := EventTypes.Name(eventpb.EventType(42)); got != "unknown" {
		t.Errorf("EventTypes.Name(42) = %q", got)
	}
	if got, want := Families.Enum8(), "Enum8('unknown' = 0, 'ipv4' = 4, 'ipv6' = 6)"; got != want {
		t.Errorf("Families.Enum8() = %s, want %s", got, want)
	}
}

func TestMsgIDs(t *testing.T) {
	if got := BatchMsgID("p1", KindState, 7); got != "p1-state-7" {
		t.Errorf("BatchMsgID = %q", got)
	}
	a := alert.Alert{Fingerprint: "5fac1c2ce1ee0797", Status: alert.Resolved, SentAt: time.Unix(0, 1772445600123456789)}
	if got := AlertMsgID(a); got != "5fac1c2ce1ee0797-resolved-1772445600123456789" {
		t.Errorf("AlertMsgID = %q", got)
	}
}

func TestDecodeBatch(t *testing.T) {
	good, _ := (&eventpb.Batch{SchemaVersion: eventpb.SchemaVersion, Host: "web-1", ProbeId: "p"}).MarshalVT()
	future, _ := (&eventpb.Batch{SchemaVersion: 9, Host: "web-1"}).MarshalVT()
	for _, tc := range []struct {
		name, host string
		data       []byte
		reason     string
		text       string
	}{
		{"good", "web-1", good, "", ""},
		{"another host's subject", "web-2", good, ReasonHostMismatch, `batch of host "web-1" on the subject of host "web-2"`},
		{"newer schema", "web-1", future, ReasonSchemaVersion, "schema_version 9, this test reads 1"},
		{"garbage", "web-1", []byte{0xff, 0xff, 0xff}, ReasonUndecodable, "undecodable batch: "},
	} {
		for _, decode := range []func(*eventpb.Batch, []byte, string, string) *Rejection{DecodeBatch, DecodeBatchUnsafe} {
			var b eventpb.Batch
			rej := decode(&b, tc.data, tc.host, "test")
			switch {
			case tc.reason == "" && rej != nil:
				t.Errorf("%s: rejected: %v", tc.name, rej)
			case tc.reason == "":
				if b.ProbeId != "p" {
					t.Errorf("%s: decoded %+v", tc.name, &b)
				}
			case rej == nil || rej.Reason != tc.reason || !strings.HasPrefix(rej.Error(), tc.text) || rej.Err == nil:
				t.Errorf("%s: got %#v, want reason %q and text %q", tc.name, rej, tc.reason, tc.text)
			}
		}
	}
}
