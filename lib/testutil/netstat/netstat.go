// Package netstat reads the kernel's TCP counters of the caller's network
// namespace (/proc/net/netstat, what `nstat -az` shows) for tests that
// take them as ground truth.
package netstat

import (
	"bufio"
	"os"
	"strconv"
	"strings"
	"testing"
)

// TcpExt is the TcpExt counter name (ListenOverflows, ...) now.
func TcpExt(tb testing.TB, name string) uint64 {
	tb.Helper()
	f, err := os.Open("/proc/net/netstat")
	if err != nil {
		tb.Fatal(err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		keys := strings.Fields(sc.Text())
		if !sc.Scan() || len(keys) == 0 || keys[0] != "TcpExt:" {
			continue
		}
		vals := strings.Fields(sc.Text())
		for i, k := range keys {
			if k == name && i < len(vals) {
				v, err := strconv.ParseUint(vals[i], 10, 64)
				if err != nil {
					tb.Fatalf("TcpExt %s: %v", name, err)
				}
				return v
			}
		}
	}
	tb.Fatalf("no TcpExt %s in /proc/net/netstat", name)
	return 0
}
