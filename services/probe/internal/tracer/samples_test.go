package tracer

import (
	"bufio"
	"bytes"
	"encoding/hex"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"unsafe"

	"github.com/netpulse/netpulse/lib/eventpb"
)

// Sample files hold one raw record per line in hex ("-" for an empty
// record); lines starting with # describe the record that follows.

type sample struct {
	comment string
	raw     []byte
}

func readSamples(t testing.TB, path string) []sample {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var out []sample
	var comment string
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		switch {
		case line == "":
		case strings.HasPrefix(line, "#"):
			comment = strings.TrimSpace(line[1:])
		case line == "-":
			out = append(out, sample{comment: comment, raw: []byte{}})
			comment = ""
		default:
			raw, err := hex.DecodeString(line)
			if err != nil {
				t.Fatalf("%s: %v", path, err)
			}
			out = append(out, sample{comment: comment, raw: raw})
			comment = ""
		}
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	return out
}

func writeSampleFile(t *testing.T, path string, samples []sample) {
	t.Helper()
	var b bytes.Buffer
	for _, s := range samples {
		line := hex.EncodeToString(s.raw)
		if line == "" {
			line = "-"
		}
		fmt.Fprintf(&b, "# %s\n%s\n", s.comment, line)
	}
	if err := os.WriteFile(path, b.Bytes(), 0o644); err != nil {
		t.Fatal(err)
	}
}

// writeSamples stores real records from TestTracerLoopback (-record), and
// malformed variants of real ones, as testdata for the decoder tests.
func writeSamples(t *testing.T, recs []rec) {
	t.Helper()
	byFamily := map[eventpb.Family][]sample{}
	var conn []byte
	for _, r := range recs {
		family := familyOf(r)
		byFamily[family] = append(byFamily[family], sample{comment: describe(r), raw: r.raw})
		if r.conn != nil && conn == nil {
			conn = r.raw
		}
	}
	v4, v6 := byFamily[eventpb.Family_FAMILY_IPV4], byFamily[eventpb.Family_FAMILY_IPV6]
	if len(v4) == 0 || len(v6) == 0 || conn == nil {
		t.Fatalf("record: %d IPv4 and %d IPv6 records, connection record %v; want some of each", len(v4), len(v6), conn != nil)
	}
	writeSampleFile(t, filepath.Join("testdata", "ipv4.hex"), v4)
	writeSampleFile(t, filepath.Join("testdata", "ipv6.hex"), v6)
	writeSampleFile(t, filepath.Join("testdata", "malformed.hex"), malformed(v4[0].raw, conn))
}

// recordSamples stores one test's real records as testdata/<name>.hex.
func recordSamples(t *testing.T, name string, recs []rec) {
	t.Helper()
	var out []sample
	for _, r := range recs {
		out = append(out, sample{comment: describe(r), raw: r.raw})
	}
	if len(out) == 0 {
		t.Fatalf("record %s: no records", name)
	}
	writeSampleFile(t, filepath.Join("testdata", name+".hex"), out)
}

func familyOf(r rec) eventpb.Family {
	if r.conn != nil {
		return r.conn.Family
	}
	return r.ev.Family
}

func describe(r rec) string {
	if c := r.conn; c != nil {
		return fmt.Sprintf("conn sport %d dport %d last %s", c.Sport, c.Dport, short(c.LastState))
	}
	ev := r.ev
	typ := strings.TrimPrefix(ev.Type.String(), "EVENT_TYPE_")
	if ev.Type == eventpb.EventType_EVENT_TYPE_STATE_CHANGE {
		return fmt.Sprintf("sport %d dport %d %s->%s", ev.Sport, ev.Dport, short(ev.OldState), short(ev.NewState))
	}
	return fmt.Sprintf("%s sport %d dport %d state %d", typ, ev.Sport, ev.Dport, ev.NewState)
}

// malformed derives broken records from real ones; offsets come from the
// generated structs, not from hand-counted bytes.
func malformed(event, conn []byte) []sample {
	var ev tcpstateEvent
	var cn tcpstateConn
	patch := func(good []byte, off uintptr, b byte) []byte {
		raw := bytes.Clone(good)
		raw[off] = b
		return raw
	}
	return []sample{
		{"empty record", []byte{}},
		{"3 bytes: no room for the type", event[:3]},
		{"truncated to 40 bytes", event[:40]},
		{"8 bytes too long", append(bytes.Clone(event), make([]byte, 8)...)},
		{"record type 0", patch(event, unsafe.Offsetof(ev.Type), 0)},
		{"record type 9", patch(event, unsafe.Offsetof(ev.Type), 9)},
		{"family AF_UNIX (1)", patch(event, unsafe.Offsetof(ev.Family), 1)},
		{"oldstate 0", patch(event, unsafe.Offsetof(ev.Oldstate), 0)},
		{"newstate 13", patch(event, unsafe.Offsetof(ev.Newstate), 13)},
		{"side 3", patch(event, unsafe.Offsetof(ev.Side), 3)},
		{"owner source 4", patch(event, unsafe.Offsetof(ev.OwnerSource), 4)},
		{"event record typed as a connection", patch(event, unsafe.Offsetof(ev.Type), byte(RecordConn))},
		{"connection record typed as an event", patch(conn, unsafe.Offsetof(cn.Type), byte(RecordStateChange))},
		{"connection truncated by 8 bytes", conn[:len(conn)-8]},
		{"connection family 0", patch(conn, unsafe.Offsetof(cn.Family), 0)},
		{"connection last state 0", patch(conn, unsafe.Offsetof(cn.LastState), 0)},
		{"connection starts after it ends", patch(conn, unsafe.Offsetof(cn.BornNs)+7, 0xff)},
	}
}
