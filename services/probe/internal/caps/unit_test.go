package caps

import (
	"bufio"
	"os"
	"slices"
	"strings"
	"testing"

	"github.com/netpulse/netpulse/lib/testutil/repofile"
)

// The shipped systemd unit grants exactly what the probe needs with its
// defaults (the /proc scan on, tracefs mounted by systemd), ambient and as
// the bounding set. The Kubernetes DaemonSet is held to this unit's set by
// deploy/deploytest, so this is where both meet the code.
func TestSystemdUnitGrantsRequired(t *testing.T) {
	p, err := repofile.Find("deploy/systemd/netpulse-probe.service")
	if err != nil {
		t.Fatal(err)
	}
	f, err := os.Open(p)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	got := map[string][]string{}
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		k, v, ok := strings.Cut(strings.TrimSpace(sc.Text()), "=")
		if ok && (k == "AmbientCapabilities" || k == "CapabilityBoundingSet") {
			got[k] = append(got[k], strings.Fields(v)...)
		}
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	var want []string
	for _, r := range Required(Options{ProcScan: true}) {
		want = append(want, Name(r.Cap))
	}
	slices.Sort(want)
	for _, k := range []string{"AmbientCapabilities", "CapabilityBoundingSet"} {
		slices.Sort(got[k])
		if !slices.Equal(got[k], want) {
			t.Errorf("%s: %s=%s, want %s", p, k, strings.Join(got[k], " "), strings.Join(want, " "))
		}
	}
}
