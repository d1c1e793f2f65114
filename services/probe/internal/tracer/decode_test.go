package tracer

import (
	"bytes"
	"encoding/json"
	"flag"
	"os"
	"path/filepath"
	"strings"
	"testing"

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
	Error   string          `json:"error,omitempty"`
}

func TestDecodeGolden(t *testing.T) {
	for _, name := range []string{"ipv4", "ipv6", "malformed"} {
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
	if err := goldenDecoder.Decode(s.raw, &ev); err != nil {
		e.Error = err.Error()
		return e
	}
	b, err := protojson.Marshal(&ev)
	if err != nil {
		t.Fatal(err)
	}
	e.Event = b
	return e
}

// compareEntry compares events as messages: protojson's spacing is
// deliberately unstable, so bytes cannot be compared.
func compareEntry(t *testing.T, got, want goldenEntry) {
	t.Helper()
	if got.Error != want.Error {
		t.Errorf("%s: error %q, want %q", got.Comment, got.Error, want.Error)
	}
	if (got.Event == nil) != (want.Event == nil) {
		t.Errorf("%s: event %s, want %s", got.Comment, got.Event, want.Event)
		return
	}
	if got.Event == nil {
		return
	}
	var g, w eventpb.Event
	if err := protojson.Unmarshal(got.Event, &g); err != nil {
		t.Fatal(err)
	}
	if err := protojson.Unmarshal(want.Event, &w); err != nil {
		t.Fatalf("%s: bad golden: %v", want.Comment, err)
	}
	if !proto.Equal(&g, &w) {
		t.Errorf("%s:\n got %s\nwant %s", got.Comment, got.Event, want.Event)
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
	if err := goldenDecoder.Decode(v4, &fresh); err != nil {
		t.Fatal(err)
	}
	if err := goldenDecoder.Decode(v6, &reused); err != nil {
		t.Fatal(err)
	}
	reused.Seq = 42
	if err := goldenDecoder.Decode(v4, &reused); err != nil {
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

// TestDecodeErrorKeepsOut: a failed decode must not half-fill out.
func TestDecodeErrorKeepsOut(t *testing.T) {
	for _, s := range readSamples(t, filepath.Join("testdata", "malformed.hex")) {
		t.Run(strings.ReplaceAll(s.comment, " ", "_"), func(t *testing.T) {
			out := eventpb.Event{Comm: "before"}
			if err := goldenDecoder.Decode(s.raw, &out); err == nil {
				t.Fatal("Decode returned nil, want an error")
			}
			if !proto.Equal(&out, &eventpb.Event{Comm: "before"}) {
				t.Errorf("out changed on error: %v", &out)
			}
		})
	}
}

func TestSockIDHidesAddress(t *testing.T) {
	raw := readSamples(t, filepath.Join("testdata", "ipv4.hex"))[0].raw
	var a, b eventpb.Event
	if err := (Decoder{SockKey: 1}).Decode(raw, &a); err != nil {
		t.Fatal(err)
	}
	if err := (Decoder{SockKey: 2}).Decode(raw, &b); err != nil {
		t.Fatal(err)
	}
	if a.SockId == b.SockId {
		t.Errorf("sock_id %x does not depend on SockKey", a.SockId)
	}
	var ev tcpstateEvent
	copyRecord(&ev, raw)
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

func BenchmarkDecode(b *testing.B) {
	raw := readSamples(b, filepath.Join("testdata", "ipv6.hex"))[1].raw
	d := NewDecoder()
	var out eventpb.Event
	if err := d.Decode(raw, &out); err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	b.SetBytes(int64(len(raw)))
	for b.Loop() {
		if err := d.Decode(raw, &out); err != nil {
			b.Fatal(err)
		}
	}
}
