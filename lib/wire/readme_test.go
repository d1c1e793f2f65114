package wire

import (
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/netpulse/netpulse/lib/alert"
)

// readme is the repository's README.md, which documents this contract.
func readme(t *testing.T) string {
	t.Helper()
	b, err := os.ReadFile("../../README.md")
	if err != nil {
		t.Fatalf("reading the README: %v", err)
	}
	return string(b)
}

// requireCode fails unless doc holds s as inline code (`s`).
func requireCode(t *testing.T, doc, s, what string) {
	t.Helper()
	if !strings.Contains(doc, "`"+s+"`") {
		t.Errorf("README does not show %s as `%s`", what, s)
	}
}

// The README names every subject, stream and enum value the code knows.
func TestReadmeSubjectsAndStreams(t *testing.T) {
	doc := readme(t)
	for _, kind := range append(append([]string{}, DataKinds...), KindStats) {
		requireCode(t, doc, EventSubject("<host>", kind), "the subject of kind "+kind)
	}
	for _, stream := range []string{EventsStream, AlertsStream, DeadLetterStream} {
		requireCode(t, doc, stream, "stream "+stream)
	}
	requireCode(t, doc, AlertSubject("<detector>", "<severity>", "<host>"), "the alert subject")
	requireCode(t, doc, DetectorDeadLetterSubject("<detector>"), "the dead-letter subject")
	for _, h := range []string{HeaderReason, HeaderSubject, HeaderStreamSeq, HeaderDetector} {
		requireCode(t, doc, h, "header "+h)
	}
}

func TestReadmeEnumNames(t *testing.T) {
	doc := readme(t)
	check := func(what string, names []string) {
		t.Helper()
		for _, n := range names {
			if n != "" {
				requireCode(t, doc, n, what+" "+n)
			}
		}
	}
	// The name of 0 is stored and documented for these two ...
	check("owner source", OwnerSources.names)
	check("side", Sides.names)
	check("drop source", DropSources.names[1:])
	// ... and only a fallback for these.
	check("event type", EventTypes.names[1:])
	check("family", Families.names[1:])
}

// The message-ID patterns the README states are what the code writes: each
// ID is rendered with placeholders for its parts (a sentinel number for a
// numeric part, replaced by its placeholder), and the README must state
// exactly that pattern.
func TestReadmeMessageIDs(t *testing.T) {
	doc := readme(t)
	const sentinel = 7350917
	pattern := func(id, numeric string) string {
		t.Helper()
		n := strconv.Itoa(sentinel)
		if strings.Count(id, n) != 1 {
			t.Fatalf("message ID %q does not hold its number %s once", id, n)
		}
		return strings.Replace(id, n, numeric, 1)
	}

	batch := pattern(BatchMsgID("<probe id>", "<kind>", sentinel), "<batch seq>")
	if got := strings.Split(BatchMsgID("p", KindState, sentinel), "-"); len(got) != 3 || got[0] != "p" || got[1] != KindState {
		t.Errorf("BatchMsgID parts = %q; the README's pattern %q has three", got, batch)
	}
	requireCode(t, doc, batch, "the event batch message ID")

	a := alert.Alert{Fingerprint: "<fingerprint>", Status: "<status>", SentAt: time.Unix(0, sentinel)}
	requireCode(t, doc, pattern(AlertMsgID(a), "<sentAt ns>"), "the alert message ID")

	requireCode(t, doc, pattern(DeadLetterMsgID("<detector>", sentinel), "<stream seq>"), "the dead-letter message ID")
}
