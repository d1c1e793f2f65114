package agent

import (
	"os/exec"
	"strconv"
	"strings"
	"testing"

	"github.com/netpulse/netpulse/lib/testutil/priv"
)

func TestParseTCPCounters(t *testing.T) {
	good := "Ip: Forwarding DefaultTTL\nIp: 1 64\nTcp: RtoAlgorithm RtoMin OutSegs RetransSegs InErrs\nTcp: 1 200 12345 67 0\nUdp: InDatagrams\nUdp: 5\n"
	c, err := parseTCPCounters([]byte(good))
	if err != nil || c != (tcpCounters{OutSegs: 12345, RetransSegs: 67}) {
		t.Fatalf("got %+v, %v", c, err)
	}
	for name, bad := range map[string]string{
		"no tcp":        "Ip: a\nIp: 1\n",
		"short values":  "Tcp: OutSegs RetransSegs\nTcp: 1\n",
		"not a number":  "Tcp: OutSegs RetransSegs\nTcp: x 1\n",
		"missing field": "Tcp: OutSegs InErrs\nTcp: 1 2\n",
		"header only":   "Tcp: OutSegs RetransSegs\n",
	} {
		if _, err := parseTCPCounters([]byte(bad)); err == nil {
			t.Errorf("%s: no error", name)
		}
	}
}

// The live file agrees with nstat (same kernel counters).
func TestReadTCPCountersMatchesNstat(t *testing.T) {
	if _, err := exec.LookPath("nstat"); err != nil {
		priv.Skip(t, "nstat (iproute2) not installed")
	}
	before, err := readTCPCounters("/proc/net/snmp")
	if err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command("nstat", "-az", "TcpRetransSegs").Output()
	if err != nil {
		t.Fatal(err)
	}
	after, err := readTCPCounters("/proc/net/snmp")
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(string(out), "\n") {
		f := strings.Fields(line)
		if len(f) >= 2 && f[0] == "TcpRetransSegs" {
			n, _ := strconv.ParseUint(f[1], 10, 64)
			if n < before.RetransSegs || n > after.RetransSegs {
				t.Errorf("nstat says %d, /proc/net/snmp %d..%d", n, before.RetransSegs, after.RetransSegs)
			}
			return
		}
	}
	t.Fatalf("no TcpRetransSegs in nstat output %q", out)
}
