package all

import (
	"os"
	"regexp"
	"slices"
	"strings"
	"testing"

	"github.com/netpulse/netpulse/services/detector/detect"
)

// README.md documents every built-in detector under "The built-in
// detectors" (### <name> — ...) and shows it in the diagram, and documents
// no detector that is not built in.
func TestReadmeDetectors(t *testing.T) {
	b, err := os.ReadFile("../../../../README.md")
	if err != nil {
		t.Fatalf("reading the README: %v", err)
	}
	lines := strings.Split(string(b), "\n")

	// The diagram: the first fenced block, the one showing the detector.
	var diagram []string
	for i, in := 0, false; i < len(lines); i++ {
		if strings.HasPrefix(lines[i], "```") {
			if in {
				break
			}
			in = true
			continue
		}
		if in {
			diagram = append(diagram, lines[i])
		}
	}
	pic := strings.Join(diagram, "\n")
	if !strings.Contains(pic, "netpulse-detector") {
		t.Fatalf("the README's first code block is not the diagram (no netpulse-detector):\n%s", pic)
	}

	// The headings of "The built-in detectors", by their first word.
	var documented []string
	for i, in := 0, false; i < len(lines); i++ {
		switch l := lines[i]; {
		case strings.HasPrefix(l, "## "):
			in = l == "## The built-in detectors"
		case in && strings.HasPrefix(l, "### "):
			documented = append(documented, strings.Fields(l)[1])
		}
	}

	names := detect.Default.Names()
	if len(names) == 0 {
		t.Fatal("no detector registered")
	}
	for _, name := range names {
		if !slices.Contains(documented, name) {
			t.Errorf("README has no section ### %s under \"The built-in detectors\"", name)
		}
		if !regexp.MustCompile(`\b` + regexp.QuoteMeta(name) + `\b`).MatchString(pic) {
			t.Errorf("README's diagram does not show detector %s", name)
		}
	}
	for _, name := range documented {
		if !slices.Contains(names, name) {
			t.Errorf("README documents detector %s, which is not built in", name)
		}
	}
}
