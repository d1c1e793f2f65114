package sockdiag

import (
	"bytes"
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/netpulse/netpulse/lib/testutil/priv"
)

// seen is one socket as the test compares it: from Dump+Owners or from ss.
type seen struct {
	state  uint8
	pid    uint32 // 0 when no process holds it
	inode  uint64
	cookie uint64
}

func (s seen) String() string {
	return fmt.Sprintf("state=%d pid=%d ino=%d sk=%x", s.state, s.pid, s.inode, s.cookie)
}

// TestDumpAndOwners makes real sockets on loopback before dumping, IPv4 and
// IPv6, and checks that Dump and Owners report each with the right state,
// ports, cookie (SO_COOKIE), inode (fstat) and owner, nothing more on the
// test's ports, and the same set as `ss -tanpeH`.
func TestDumpAndOwners(t *testing.T) {
	priv.RequireRoot(t)
	sets := []*loopback{
		newLoopback(t, "tcp4", "127.0.0.1:0", 3, 2),
		newLoopback(t, "tcp6", "[::1]:0", 3, 2),
	}
	ports := map[netip.AddrPort]bool{} // the listeners: every test socket has one of them at an end
	expected := map[[2]netip.AddrPort]want{}
	for _, lb := range sets {
		ports[lb.ln.Addr().(*net.TCPAddr).AddrPort()] = true
		for k, v := range lb.expected() {
			expected[k] = v
		}
	}

	d, err := NewDumper()
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()

	socks := settled(t, d, expected, ports)
	got := onPorts(socks, ports)
	if len(got) != len(expected) {
		t.Errorf("dump shows %d sockets on the test ports, want %d", len(got), len(expected))
	}

	owners, st, err := Owners()
	if err != nil {
		t.Fatal(err)
	}
	if st.Processes == 0 || st.Sockets == 0 {
		t.Fatalf("owner scan found nothing: %+v", st)
	}
	comm, err := os.ReadFile("/proc/self/comm")
	if err != nil {
		t.Fatal(err)
	}
	pid := uint32(os.Getpid())
	for k, w := range expected {
		s := got[k]
		wantFamily := uint8(unix.AF_INET)
		if k[0].Addr().Is6() {
			wantFamily = unix.AF_INET6
		}
		if s.Family != wantFamily {
			t.Errorf("%v: family %d, want %d", k, s.Family, wantFamily)
		}
		if s.Cookie == 0 {
			t.Errorf("%v: cookie 0", k)
		}
		if !w.owned {
			if s.Inode != 0 {
				t.Errorf("%v: closed socket has inode %d", k, s.Inode)
			}
			continue
		}
		cookie, inode := sockIdentity(t, w.conn)
		if s.Inode != inode {
			t.Errorf("%v: inode %d, fstat %d", k, s.Inode, inode)
		}
		// For a LISTEN socket, kernel 6.18 reports a cookie in sock_diag
		// (and ss) that differs from its SO_COOKIE; for connected sockets
		// the two agree.
		if s.State != StateListen && s.Cookie != cookie {
			t.Errorf("%v: cookie %d, SO_COOKIE %d", k, s.Cookie, cookie)
		}
		o, ok := owners[s.Inode]
		if !ok || o.PID != pid || o.Comm != strings.TrimSpace(string(comm)) || o.Procs != 1 {
			t.Errorf("%v: owner %+v (found %v), want pid %d comm %q", k, o, ok, pid, comm)
		}
		if s.State == StateEstablished && (s.Info.Len == 0 || !s.Info.HasBytes || s.Info.RTTUs == 0) {
			t.Errorf("%v: established socket without tcp_info: %+v", k, s.Info)
		}
	}

	// The same sockets, as ss sees them.
	mine := map[[2]netip.AddrPort]seen{}
	for k, s := range got {
		mine[k] = seen{state: s.State, pid: owners[s.Inode].PID, inode: s.Inode, cookie: s.Cookie}
	}
	theirs := ssSockets(t, ports)
	if diff := seenDiff(mine, theirs); diff != "" {
		t.Errorf("Dump+Owners and ss differ:\n%s", diff)
	}
	if n := d.Stats().Skipped; n != 0 {
		t.Errorf("%d sockets skipped", n)
	}
}

// TestDumpReusesMemory checks that a Dump into a slice that already has
// room allocates nothing.
func TestDumpReusesMemory(t *testing.T) {
	priv.RequireRoot(t)
	newLoopback(t, "tcp4", "127.0.0.1:0", 20, 0)
	d, err := NewDumper()
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	socks, err := d.Dump(nil)
	if err != nil {
		t.Fatal(err)
	}
	socks = make([]Socket, 0, 2*len(socks)+100)
	allocs := testing.AllocsPerRun(5, func() {
		if socks, err = d.Dump(socks[:0]); err != nil {
			t.Fatal(err)
		}
	})
	if allocs != 0 {
		t.Errorf("Dump allocates %.1f times per call", allocs)
	}
	if d.Stats().Dumps != 7 {
		t.Errorf("Dumps counter %d, want 7", d.Stats().Dumps)
	}
}

func onPorts(socks []Socket, ports map[netip.AddrPort]bool) map[[2]netip.AddrPort]Socket {
	m := map[[2]netip.AddrPort]Socket{}
	for _, s := range socks {
		// By address and port: another test's socket of the other family
		// may use the same port number.
		if ports[s.Src] || ports[s.Dst] {
			m[[2]netip.AddrPort{s.Src, s.Dst}] = s
		}
	}
	return m
}

// settled dumps until every socket of expected is in its state (the FINs
// travel asynchronously) and returns that dump.
func settled(t *testing.T, d *Dumper, expected map[[2]netip.AddrPort]want, ports map[netip.AddrPort]bool) []Socket {
	t.Helper()
	var socks []Socket
	for deadline := time.Now().Add(10 * time.Second); ; {
		var err error
		if socks, err = d.Dump(socks[:0]); err != nil {
			t.Fatal(err)
		}
		diff := stateDiff(expected, onPorts(socks, ports))
		if diff == "" {
			return socks
		}
		if time.Now().After(deadline) {
			t.Fatalf("sockets did not reach their states: %s", diff)
		}
		time.Sleep(10 * time.Millisecond) // poll: nothing tells when a FIN arrived
	}
}

func stateDiff(expected map[[2]netip.AddrPort]want, got map[[2]netip.AddrPort]Socket) string {
	var b strings.Builder
	for k, w := range expected {
		s, ok := got[k]
		switch {
		case !ok:
			fmt.Fprintf(&b, "\n%v missing (want state %d)", k, w.state)
		case s.State != w.state:
			fmt.Fprintf(&b, "\n%v state %d, want %d", k, s.State, w.state)
		}
	}
	return b.String()
}

func seenDiff(a, b map[[2]netip.AddrPort]seen) string {
	var lines []string
	for k, x := range a {
		if y, ok := b[k]; !ok {
			lines = append(lines, fmt.Sprintf("only in dump: %v %v", k, x))
		} else if x != y {
			lines = append(lines, fmt.Sprintf("%v: dump %v, ss %v", k, x, y))
		}
	}
	for k, y := range b {
		if _, ok := a[k]; !ok {
			lines = append(lines, fmt.Sprintf("only in ss: %v %v", k, y))
		}
	}
	sort.Strings(lines)
	return strings.Join(lines, "\n")
}

var ssStates = map[string]uint8{
	"ESTAB": StateEstablished, "SYN-SENT": StateSynSent, "SYN-RECV": StateSynRecv,
	"FIN-WAIT-1": StateFinWait1, "FIN-WAIT-2": StateFinWait2, "TIME-WAIT": StateTimeWait,
	"UNCONN": StateClose, "CLOSE-WAIT": StateCloseWait, "LAST-ACK": StateLastAck,
	"LISTEN": StateListen, "CLOSING": StateClosing, "NEW-SYN-RECV": StateNewSynRecv,
}

// ssSockets runs `ss -tanpeH` and parses the sockets on ports, e.g.
//
//	ESTAB 0 0 127.0.0.1:40000 127.0.0.1:51234 users:(("x",pid=7,fd=3)) ino:123 sk:1f <->
func ssSockets(t *testing.T, ports map[netip.AddrPort]bool) map[[2]netip.AddrPort]seen {
	t.Helper()
	out, err := exec.Command("ss", "-tanpeH").Output()
	if err != nil {
		t.Fatalf("ss: %v", err)
	}
	m := map[[2]netip.AddrPort]seen{}
	for _, line := range bytes.Split(out, []byte("\n")) {
		f := strings.Fields(string(line))
		if len(f) < 5 {
			continue
		}
		local, remote := ssAddr(t, f[3]), ssAddr(t, f[4])
		if !ports[local] && !ports[remote] {
			continue
		}
		state, ok := ssStates[f[0]]
		if !ok {
			t.Fatalf("ss: unknown state in %q", line)
		}
		s := seen{state: state}
		for _, x := range f[5:] {
			switch {
			case strings.HasPrefix(x, "users:"):
				s.pid = ssLowestPID(t, x)
			case strings.HasPrefix(x, "ino:"):
				s.inode = mustUint(t, x[len("ino:"):], 10)
			case strings.HasPrefix(x, "sk:"):
				s.cookie = mustUint(t, x[len("sk:"):], 16)
			}
		}
		m[[2]netip.AddrPort{local, remote}] = s
	}
	return m
}

// ssAddr parses "127.0.0.1:80", "[::1]:80", "0.0.0.0:*" or "[::]:*".
func ssAddr(t *testing.T, s string) netip.AddrPort {
	t.Helper()
	s = strings.Replace(s, ":*", ":0", 1)
	if strings.HasPrefix(s, "*:") {
		s = "0.0.0.0" + s[1:]
	}
	ap, err := netip.ParseAddrPort(s)
	if err != nil {
		t.Fatalf("ss address %q: %v", s, err)
	}
	return ap
}

// ssLowestPID picks the lowest pid of users:(("a",pid=1,fd=3),("b",pid=2,fd=4)),
// the owner Owners chooses.
func ssLowestPID(t *testing.T, users string) uint32 {
	t.Helper()
	var lowest uint32
	for _, part := range strings.Split(users, "pid=")[1:] {
		end := strings.IndexByte(part, ',')
		if end < 0 {
			t.Fatalf("ss users %q", users)
		}
		pid := uint32(mustUint(t, part[:end], 10))
		if lowest == 0 || pid < lowest {
			lowest = pid
		}
	}
	return lowest
}

func mustUint(t *testing.T, s string, base int) uint64 {
	t.Helper()
	v, err := strconv.ParseUint(s, base, 64)
	if err != nil {
		t.Fatalf("ss number %q: %v", s, err)
	}
	return v
}

// TestDumpStatesFilters checks that the kernel leaves out the sockets of
// the states a DumpStates call does not ask for, and only those.
func TestDumpStatesFilters(t *testing.T) {
	priv.RequireRoot(t)
	lb := newLoopback(t, "tcp4", "127.0.0.1:0", 2, 2)
	ports := map[netip.AddrPort]bool{lb.ln.Addr().(*net.TCPAddr).AddrPort(): true}
	expected := lb.expected()
	d, err := NewDumper()
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	socks := settled(t, d, expected, ports)
	for _, tc := range []struct {
		name   string
		states StateSet
	}{
		{"without CLOSE_WAIT and FIN_WAIT2", AllStates.Without(StateCloseWait, StateFinWait2)},
		{"LISTEN only", AllStates &^ AllStates.Without(StateListen)},
		{"none", 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if socks, err = d.DumpStates(socks[:0], tc.states); err != nil {
				t.Fatal(err)
			}
			got := onPorts(socks, ports)
			want := 0
			for k, w := range expected {
				_, ok := got[k]
				if tc.states.Has(w.state) {
					want++
				}
				if ok != tc.states.Has(w.state) {
					t.Errorf("%v in state %d: dumped %v, want %v", k, w.state, ok, !ok)
				}
			}
			if len(got) != want {
				t.Errorf("%d sockets on the test port, want %d", len(got), want)
			}
		})
	}
}

// Without returns the set less the given states.
func (s StateSet) Without(states ...uint8) StateSet {
	for _, st := range states {
		s &^= 1 << st
	}
	return s
}

// TestDumpFuncMatchesDump checks that the streamed dump hands over the
// same sockets as Dump, each once.
func TestDumpFuncMatchesDump(t *testing.T) {
	lb := newLoopback(t, "tcp4", "127.0.0.1:0", 300, 50)
	ports := map[netip.AddrPort]bool{lb.ln.Addr().(*net.TCPAddr).AddrPort(): true}
	d, err := NewDumper()
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	settled(t, d, lb.expected(), ports) // no socket changes state between the two dumps
	var streamed []Socket
	if err := d.DumpFunc(AllStates, func(s *Socket) { streamed = append(streamed, *s) }); err != nil {
		t.Fatal(err)
	}
	whole, err := d.Dump(nil)
	if err != nil {
		t.Fatal(err)
	}
	a, b := onPorts(streamed, ports), onPorts(whole, ports)
	if len(a) != len(b) || len(a) < 1+2*300+4*50 {
		t.Fatalf("streamed %d sockets on the test port, Dump %d, want both at least %d", len(a), len(b), 1+2*300+4*50)
	}
	for k, s := range b {
		if a[k].Cookie != s.Cookie || a[k].State != s.State {
			t.Errorf("%v: streamed %+v, dumped %+v", k, a[k], s)
		}
	}
}
