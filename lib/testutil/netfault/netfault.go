// Package netfault makes real network faults for privileged tests: a veth
// link into a network namespace of the test's own (MTU-sized segments,
// unlike loopback) and nftables rules that drop a share of packets or the
// first SYN of every connection. Everything is removed at test cleanup.
// Traffic only ever goes to loopback or to these namespaces.
package netfault

import (
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"net"
	"os/exec"
	"strings"
	"testing"

	"github.com/netpulse/netpulse/lib/testutil/priv"
)

// Link is a veth pair: HostAddr on the host side, PeerAddr inside
// namespace NS.
type Link struct {
	NS                 string
	HostIf, PeerIf     string
	HostAddr, PeerAddr string
}

// NewLink creates namespace and veth pair and brings both ends up.
func NewLink(t testing.TB) *Link {
	t.Helper()
	priv.RequireRoot(t)
	id := randomHex(3)
	l := &Link{NS: "np" + id, HostIf: "nph" + id, PeerIf: "npp" + id}
	octet := freeOctet(t)
	l.HostAddr, l.PeerAddr = fmt.Sprintf("10.213.%d.1", octet), fmt.Sprintf("10.213.%d.2", octet)
	Run(t, "ip", "netns", "add", l.NS)
	t.Cleanup(func() { _ = exec.Command("ip", "netns", "del", l.NS).Run() })
	Run(t, "ip", "link", "add", l.HostIf, "type", "veth", "peer", "name", l.PeerIf, "netns", l.NS)
	t.Cleanup(func() { _ = exec.Command("ip", "link", "del", l.HostIf).Run() })
	Run(t, "ip", "addr", "add", l.HostAddr+"/24", "dev", l.HostIf)
	Run(t, "ip", "link", "set", l.HostIf, "up")
	l.Exec(t, "ip", "addr", "add", l.PeerAddr+"/24", "dev", l.PeerIf)
	l.Exec(t, "ip", "link", "set", l.PeerIf, "up")
	l.Exec(t, "ip", "link", "set", "lo", "up")
	return l
}

// Exec runs a command inside the namespace and returns its output.
func (l *Link) Exec(t testing.TB, args ...string) string {
	t.Helper()
	return Run(t, append([]string{"ip", "netns", "exec", l.NS}, args...)...)
}

// Command is a command to run inside the namespace.
func (l *Link) Command(name string, args ...string) *exec.Cmd {
	return exec.Command("ip", append([]string{"netns", "exec", l.NS, name}, args...)...)
}

// DropShare drops percent (1..99) of the TCP packets to or from port,
// chosen at random, as they arrive in namespace ns ("" for the host): loss
// on the path, as the sender sees it. (A drop on the sender's own output
// path is not that: the kernel reports it to TCP at once, as a failed
// transmit, and retransmits it without counting a loss.)
func DropShare(t testing.TB, ns string, port, percent int) {
	t.Helper()
	DropPerMille(t, ns, port, percent*10)
}

// DropPerMille is DropShare in thousandths (1..999): a small steady loss,
// such as 2 (0.2%). Rules added for the same port add up.
func DropPerMille(t testing.TB, ns string, port, perMille int) {
	t.Helper()
	table := "netfault" + randomHex(3)
	nft(t, ns, table, fmt.Sprintf(`table inet %[1]s {
	chain in {
		type filter hook input priority 0; policy accept;
		tcp dport %[2]d numgen random mod 1000 < %[3]d drop
		tcp sport %[2]d numgen random mod 1000 < %[3]d drop
	}
}`, table, port, perMille))
}

// DropFirstSYN drops the first SYN of every connection to port, so each
// handshake waits for the SYN retransmit (about 1 s). It works on the
// output path of namespace ns ("" for the host), where the client runs.
func DropFirstSYN(t testing.TB, ns string, port int) {
	t.Helper()
	table := "netfault" + randomHex(3)
	nft(t, ns, table, fmt.Sprintf(`table inet %[1]s {
	set seen4 { type ipv4_addr . inet_service; flags dynamic, timeout; timeout 1m; }
	set seen6 { type ipv6_addr . inet_service; flags dynamic, timeout; timeout 1m; }
	chain out {
		type filter hook output priority 0; policy accept;
		tcp dport %[2]d tcp flags & (syn | ack) == syn ip saddr . tcp sport @seen4 accept
		tcp dport %[2]d tcp flags & (syn | ack) == syn ip6 saddr . tcp sport @seen6 accept
		tcp dport %[2]d tcp flags & (syn | ack) == syn meta nfproto ipv4 add @seen4 { ip saddr . tcp sport } drop
		tcp dport %[2]d tcp flags & (syn | ack) == syn meta nfproto ipv6 add @seen6 { ip6 saddr . tcp sport } drop
	}
}`, table, port))
}

// DropAll drops every TCP packet to port as it arrives in namespace ns
// ("" for the host) and returns what reads nft's own count of them.
func DropAll(t testing.TB, ns string, port int) (dropped func() uint64) {
	t.Helper()
	table := "netpulse_drop_" + randomHex(4)
	nft(t, ns, table, fmt.Sprintf(`table inet %s {
	chain in {
		type filter hook input priority -10;
		tcp dport %d counter drop
	}
}`, table, port))
	return func() uint64 {
		t.Helper()
		args := []string{"nft", "-j", "list", "table", "inet", table}
		if ns != "" {
			args = append([]string{"ip", "netns", "exec", ns}, args...)
		}
		var out struct {
			Nftables []struct {
				Rule *struct {
					Expr []struct {
						Counter *struct{ Packets uint64 } `json:"counter"`
					} `json:"expr"`
				} `json:"rule"`
			} `json:"nftables"`
		}
		if err := json.Unmarshal([]byte(Run(t, args...)), &out); err != nil {
			t.Fatalf("nft -j: %v", err)
		}
		for _, e := range out.Nftables {
			if e.Rule == nil {
				continue
			}
			for _, x := range e.Rule.Expr {
				if x.Counter != nil {
					return x.Counter.Packets
				}
			}
		}
		t.Fatalf("nft table %s has no counter", table)
		return 0
	}
}

func nft(t testing.TB, ns, table, script string) {
	t.Helper()
	args := []string{"nft", "-f", "-"}
	del := []string{"nft", "delete", "table", "inet", table}
	if ns != "" {
		args = append([]string{"ip", "netns", "exec", ns}, args...)
		del = append([]string{"ip", "netns", "exec", ns}, del...)
	}
	cmd := exec.Command(args[0], args[1:]...)
	cmd.Stdin = strings.NewReader(script)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("nft: %v: %s\n%s", err, out, script)
	}
	t.Cleanup(func() { _ = exec.Command(del[0], del[1:]...).Run() })
}

// Run runs a command and fails the test with its output when it fails.
func Run(t testing.TB, args ...string) string {
	t.Helper()
	out, err := exec.Command(args[0], args[1:]...).CombinedOutput()
	if err != nil {
		t.Fatalf("%s: %v: %s", strings.Join(args, " "), err, out)
	}
	return string(out)
}

// freeOctet picks a 10.213.X.0/24 no interface on the host uses yet.
func freeOctet(t testing.TB) int {
	t.Helper()
	used := map[string]bool{}
	addrs, err := net.InterfaceAddrs()
	if err != nil {
		t.Fatal(err)
	}
	for _, a := range addrs {
		used[a.String()] = true
	}
	for i := 0; i < 64; i++ {
		b := make([]byte, 1)
		_, _ = rand.Read(b)
		o := 1 + int(b[0])%254
		if !used[fmt.Sprintf("10.213.%d.1/24", o)] {
			return o
		}
	}
	t.Fatal("no free 10.213.X.0/24 network")
	return 0
}

func randomHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}
