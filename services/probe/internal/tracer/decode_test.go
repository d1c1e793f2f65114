package tracer

import (
	"bytes"
	"encoding/json"
	"flag"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"unsafe"

	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"

	"github.com/netpulse/netpulse/lib/eventpb"
)

var update = flag.Bool("update", false, "rewrite testdata/*.golden.json from the decoder's output")

// goldenDecoder is fixed so that goldens do not depend on the clock or on
// a random key.
var goldenDecoder = Decoder{OffsetNs: 1_767_225_600_000_000_000, SockKey: 0x6e65747075697365}

// goldenEntry is the expected outcome of decoding one sample.
type goldenEntry struct {
	Comment string          `json:"comment"`
	Event   json.RawMessage `json:"event,omitempty"` // protojson of the event
	Conn    json.RawMessage `json:"conn,omitempty"`  // protojson of the connection
	Error   string          `json:"error,omitempty"`
}

func TestDecodeGolden(t *testing.T) {
	files, err := filepath.Glob(filepath.Join("testdata", "*.hex"))
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range files {
		name := strings.TrimSuffix(filepath.Base(f), ".hex")
		t.Run(name, func(t *testing.T) {
			samples := readSamples(t, filepath.Join("testdata", name+".hex"))
			goldenPath := filepath.Join("testdata", name+".golden.json")
			got := make([]goldenEntry, len(samples))
			for i, s := range samples {
				got[i] = decodeEntry(t, s)
			}
			if *update {
				writeGolden(t, goldenPath, got)
				return
			}
			want := readGolden(t, goldenPath)
			if len(want) != len(got) {
				t.Fatalf("%d samples, %d golden entries (run with -update?)", len(got), len(want))
			}
			for i := range got {
				compareEntry(t, got[i], want[i])
			}
		})
	}
}

func decodeEntry(t *testing.T, s sample) goldenEntry {
	t.Helper()
	e := goldenEntry{Comment: s.comment}
	var ev eventpb.Event
	var cn eventpb.Connection
	isConn, err := goldenDecoder.DecodeRecord(s.raw, &ev, &cn)
	if err != nil {
		e.Error = err.Error()
		return e
	}
	var m proto.Message = &ev
	if isConn {
		m = &cn
	}
	b, err := protojson.Marshal(m)
	if err != nil {
		t.Fatal(err)
	}
	if isConn {
		e.Conn = b
	} else {
		e.Event = b
	}
	return e
}

// compareEntry compares events as messages: protojson's spacing is
// deliberately unstable, so bytes cannot be compared.
func compareEntry(t *testing.T, got, want goldenEntry) {
	t.Helper()
	if got.Error != want.Error {
		t.Errorf("%s: error %q, want %q", got.Comment, got.Error, want.Error)
	}
	compareJSON(t, got.Comment, got.Event, want.Event, &eventpb.Event{}, &eventpb.Event{})
	compareJSON(t, got.Comment, got.Conn, want.Conn, &eventpb.Connection{}, &eventpb.Connection{})
}

func compareJSON(t *testing.T, comment string, got, want json.RawMessage, g, w proto.Message) {
	t.Helper()
	if (got == nil) != (want == nil) {
		t.Errorf("%s: got %s, want %s", comment, got, want)
		return
	}
	if got == nil {
		return
	}
	if err := protojson.Unmarshal(got, g); err != nil {
		t.Fatal(err)
	}
	if err := protojson.Unmarshal(want, w); err != nil {
		t.Fatalf("%s: bad golden: %v", comment, err)
	}
	if !proto.Equal(g, w) {
		t.Errorf("%s:\n got %s\nwant %s", comment, got, want)
	}
}

func readGolden(t *testing.T, path string) []goldenEntry {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("%v (run with -update to create it)", err)
	}
	var out []goldenEntry
	if err := json.Unmarshal(b, &out); err != nil {
		t.Fatalf("%s: %v", path, err)
	}
	return out
}

func writeGolden(t *testing.T, path string, entries []goldenEntry) {
	t.Helper()
	var b bytes.Buffer
	enc := json.NewEncoder(&b)
	enc.SetEscapeHTML(false) // keep "->" in comments readable
	enc.SetIndent("", "  ")
	if err := enc.Encode(entries); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, b.Bytes(), 0o644); err != nil {
		t.Fatal(err)
	}
}

// TestDecodeReusesOut checks that a decode overwrites every field of a
// reused event except Seq, and shrinks the address slices for IPv4.
func TestDecodeReusesOut(t *testing.T) {
	v6 := readSamples(t, filepath.Join("testdata", "ipv6.hex"))[0].raw
	v4 := readSamples(t, filepath.Join("testdata", "ipv4.hex"))[0].raw
	var fresh, reused eventpb.Event
	if _, err := goldenDecoder.DecodeRecord(v4, &fresh, nil); err != nil {
		t.Fatal(err)
	}
	if _, err := goldenDecoder.DecodeRecord(v6, &reused, nil); err != nil {
		t.Fatal(err)
	}
	reused.Seq = 42
	if _, err := goldenDecoder.DecodeRecord(v4, &reused, nil); err != nil {
		t.Fatal(err)
	}
	if reused.Seq != 42 {
		t.Errorf("Seq = %d, want 42 (untouched)", reused.Seq)
	}
	reused.Seq = 0
	if !proto.Equal(&fresh, &reused) {
		t.Errorf("reused event differs from a fresh one:\n got %v\nwant %v", &reused, &fresh)
	}
}

// TestDecodeErrorKeepsOut: a failed decode must not half-fill either output.
func TestDecodeErrorKeepsOut(t *testing.T) {
	for _, s := range readSamples(t, filepath.Join("testdata", "malformed.hex")) {
		t.Run(strings.ReplaceAll(s.comment, " ", "_"), func(t *testing.T) {
			ev := eventpb.Event{Comm: "before"}
			cn := eventpb.Connection{Comm: "before"}
			if _, err := goldenDecoder.DecodeRecord(s.raw, &ev, &cn); err == nil {
				t.Fatal("DecodeRecord returned nil, want an error")
			}
			if !proto.Equal(&ev, &eventpb.Event{Comm: "before"}) || !proto.Equal(&cn, &eventpb.Connection{Comm: "before"}) {
				t.Errorf("outputs changed on error: %v / %v", &ev, &cn)
			}
		})
	}
}

// TestDecodeConnReusesOut: a reused Connection decodes like a fresh one.
func TestDecodeConnReusesOut(t *testing.T) {
	var v4, v6 []byte
	for _, f := range []string{"ipv4", "ipv6"} {
		for _, s := range readSamples(t, filepath.Join("testdata", f+".hex")) {
			if strings.HasPrefix(s.comment, "conn ") {
				if f == "ipv4" {
					v4 = s.raw
				} else {
					v6 = s.raw
				}
				break
			}
		}
	}
	var fresh, reused eventpb.Connection
	var ev eventpb.Event
	for _, raw := range [][]byte{v4, v6, v4} {
		isConn, err := goldenDecoder.DecodeRecord(raw, &ev, &reused)
		if err != nil || !isConn {
			t.Fatalf("DecodeRecord = %v, %v; want a connection", isConn, err)
		}
	}
	if _, err := goldenDecoder.DecodeRecord(v4, &ev, &fresh); err != nil {
		t.Fatal(err)
	}
	if !proto.Equal(&fresh, &reused) {
		t.Errorf("reused connection differs from a fresh one:\n got %v\nwant %v", &reused, &fresh)
	}
	if !proto.Equal(&ev, &eventpb.Event{}) {
		t.Errorf("decoding connections touched the event: %v", &ev)
	}
}

func TestSockIDHidesAddress(t *testing.T) {
	raw := readSamples(t, filepath.Join("testdata", "ipv4.hex"))[0].raw
	var a, b eventpb.Event
	if _, err := (Decoder{SockKey: 1}).DecodeRecord(raw, &a, nil); err != nil {
		t.Fatal(err)
	}
	if _, err := (Decoder{SockKey: 2}).DecodeRecord(raw, &b, nil); err != nil {
		t.Fatal(err)
	}
	if a.SockId == b.SockId {
		t.Errorf("sock_id %x does not depend on SockKey", a.SockId)
	}
	var ev tcpstateEvent
	copyRecord(unsafe.Pointer(&ev), raw)
	if a.SockId == ev.Skaddr || a.SockId == ev.Skaddr^1 {
		t.Errorf("sock_id %x reveals skaddr %x", a.SockId, ev.Skaddr)
	}
}

func TestNewDecoderOffset(t *testing.T) {
	d1, d2 := NewDecoder(), NewDecoder()
	if d1.SockKey == d2.SockKey {
		t.Errorf("two decoders share SockKey %x", d1.SockKey)
	}
	// Both read the same pair of clocks; only an NTP step in between could
	// move the offset by more than a millisecond.
	if diff := d1.OffsetNs - d2.OffsetNs; diff > 1e6 || diff < -1e6 {
		t.Errorf("offsets %d and %d differ by %d ns", d1.OffsetNs, d2.OffsetNs, diff)
	}
}

func BenchmarkDecodeConn(b *testing.B) {
	var raw []byte
	for _, s := range readSamples(b, filepath.Join("testdata", "ipv6.hex")) {
		if strings.HasPrefix(s.comment, "conn ") {
			raw = s.raw
		}
	}
	d := NewDecoder()
	var ev eventpb.Event
	var out eventpb.Connection
	b.ReportAllocs()
	b.SetBytes(int64(len(raw)))
	for b.Loop() {
		if _, err := d.DecodeRecord(raw, &ev, &out); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkDecode(b *testing.B) {
	raw := readSamples(b, filepath.Join("testdata", "ipv6.hex"))[1].raw
	d := NewDecoder()
	var out eventpb.Event
	if _, err := d.DecodeRecord(raw, &out, nil); err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	b.SetBytes(int64(len(raw)))
	for b.Loop() {
		if _, err := d.DecodeRecord(raw, &out, nil); err != nil {
			b.Fatal(err)
		}
	}
}
