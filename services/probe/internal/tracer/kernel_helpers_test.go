package tracer

import (
	"bufio"
	"bytes"
	"context"
	"crypto/rand"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"regexp"
	"runtime"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/netpulse/netpulse/lib/eventpb"
	"github.com/netpulse/netpulse/lib/testutil/priv"
)

// startTracer opens a tracer with cfg and reads it into a collector until
// the test ends. On this kernel (6.18) every tracepoint must attach.
func startTracer(t *testing.T, cfg Config) (*Tracer, *collector) {
	t.Helper()
	priv.RequireRoot(t)
	tr, err := Open(cfg)
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	if s := tr.Skipped(); len(s) > 0 {
		tr.Close()
		t.Fatalf("tracepoints skipped on this kernel: %v", s)
	}
	col := &collector{dec: NewDecoder(), notify: make(chan struct{}, 1)}
	ctx, stop := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- tr.Read(ctx, col.add) }()
	t.Cleanup(func() {
		stop()
		if err := <-done; err != nil {
			t.Errorf("Read: %v", err)
		}
		_, errs := col.snapshot()
		for _, err := range errs {
			t.Errorf("decode: %v", err)
		}
		if err := tr.Close(); err != nil {
			t.Errorf("Close: %v", err)
		}
	})
	return tr, col
}

var uniq atomic.Uint32

// uniqueName is short (interface names have 15 bytes) and unique per
// process and call, so parallel runs do not collide.
func uniqueName(prefix string) string {
	var b [3]byte
	_, _ = rand.Read(b[:])
	return fmt.Sprintf("%s%x%d", prefix, b, uniq.Add(1))
}

func run(t *testing.T, stdin string, name string, args ...string) string {
	t.Helper()
	cmd := exec.Command(name, args...)
	cmd.Stdin = strings.NewReader(stdin)
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, out)
	}
	return string(out)
}

// nft loads an nftables table of the test (in netns, or the host's when
// "") built from rules, and deletes it when the test ends.
func nft(t *testing.T, netns string, rules ...string) {
	t.Helper()
	table := uniqueName("netpulse_test_")
	var b strings.Builder
	fmt.Fprintf(&b, "add table inet %s\n", table)
	fmt.Fprintf(&b, "add chain inet %s in { type filter hook input priority 0; }\n", table)
	fmt.Fprintf(&b, "add chain inet %s out { type filter hook output priority 0; }\n", table)
	for _, r := range rules {
		fmt.Fprintf(&b, "add rule inet %s %s\n", table, r)
	}
	args := []string{"nft", "-f", "-"}
	if netns != "" {
		args = append([]string{"ip", "netns", "exec", netns}, args...)
	}
	run(t, b.String(), args[0], args[1:]...)
	t.Cleanup(func() {
		del := []string{"nft", "delete", "table", "inet", table}
		if netns != "" {
			del = append([]string{"ip", "netns", "exec", netns}, del...)
		}
		if out, err := exec.Command(del[0], del[1:]...).CombinedOutput(); err != nil {
			t.Errorf("delete nft table: %v: %s", err, out)
		}
	})
}

// netnsPair is two network namespaces joined by a veth pair: a and b with
// addresses addrA and addrB in one /24.
type netnsPair struct {
	a, b         string
	addrA, addrB string
}

func newNetnsPair(t *testing.T) netnsPair {
	t.Helper()
	id := uniqueName("")
	var oct [1]byte
	_, _ = rand.Read(oct[:])
	p := netnsPair{
		a: "np-a-" + id, b: "np-b-" + id,
		addrA: fmt.Sprintf("10.213.%d.1", oct[0]), addrB: fmt.Sprintf("10.213.%d.2", oct[0]),
	}
	va, vb := "npa"+id, "npb"+id
	run(t, "", "ip", "netns", "add", p.a)
	t.Cleanup(func() { _ = exec.Command("ip", "netns", "del", p.a).Run() })
	run(t, "", "ip", "netns", "add", p.b)
	t.Cleanup(func() { _ = exec.Command("ip", "netns", "del", p.b).Run() })
	run(t, "", "ip", "link", "add", va, "netns", p.a, "type", "veth", "peer", "name", vb, "netns", p.b)
	for _, c := range [][]string{
		{p.a, "addr", "add", p.addrA + "/24", "dev", va},
		{p.b, "addr", "add", p.addrB + "/24", "dev", vb},
		{p.a, "link", "set", va, "up"}, {p.b, "link", "set", vb, "up"},
		{p.a, "link", "set", "lo", "up"}, {p.b, "link", "set", "lo", "up"},
	} {
		run(t, "", "ip", append([]string{"-n"}, c...)...)
	}
	return p
}

// inNetns runs fn on a thread that entered netns: sockets fn creates
// belong to that namespace for their whole life. The thread stays locked
// and ends with its goroutine, so nothing else ever runs in the namespace.
func inNetns(t *testing.T, netns string, fn func() error) {
	t.Helper()
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		f, err := os.Open("/run/netns/" + netns)
		if err != nil {
			errc <- err
			return
		}
		defer f.Close()
		if err := unix.Setns(int(f.Fd()), unix.CLONE_NEWNET); err != nil {
			errc <- fmt.Errorf("setns %s: %w", netns, err)
			return
		}
		errc <- fn()
	}()
	if err := <-errc; err != nil {
		t.Fatal(err)
	}
}

// nstat reads one kernel counter of netns ("" for the host's) with nstat.
func nstat(t *testing.T, netns, name string) uint64 {
	t.Helper()
	args := []string{"nstat", "-asz", name}
	if netns != "" {
		args = append([]string{"ip", "netns", "exec", netns}, args...)
	}
	out := run(t, "", args[0], args[1:]...)
	for _, line := range strings.Split(out, "\n") {
		f := strings.Fields(line)
		if len(f) >= 2 && f[0] == name {
			v, err := strconv.ParseUint(f[1], 10, 64)
			if err != nil {
				t.Fatalf("nstat %s: %q: %v", name, line, err)
			}
			return v
		}
	}
	t.Fatalf("nstat: no %s in %q", name, out)
	return 0
}

// ssOwner finds the process ss -tnp shows for the socket local -> peer.
func ssOwner(t *testing.T, local, peer string) proc {
	t.Helper()
	out := run(t, "", "ss", "-tnpH", "state", "all")
	re := regexp.MustCompile(`users:\(\("([^"]*)",pid=(\d+),`)
	for _, line := range strings.Split(out, "\n") {
		f := strings.Fields(line)
		if len(f) < 5 || f[3] != local || f[4] != peer {
			continue
		}
		m := re.FindStringSubmatch(line)
		if m == nil {
			t.Fatalf("ss: no process for %s -> %s: %q", local, peer, line)
		}
		pid, _ := strconv.ParseUint(m[2], 10, 32)
		return proc{pid: uint32(pid), comm: m[1]}
	}
	t.Fatalf("ss: no socket %s -> %s in\n%s", local, peer, out)
	return proc{}
}

// bySockID returns the events of the socket that has an event matching
// match (state changes before the socket had its port included).
func bySockID(recs []rec, match func(*eventpb.Event) bool) (events []rec, id uint64) {
	for _, r := range recs {
		if r.ev != nil && r.ev.SockId != 0 && match(r.ev) {
			id = r.ev.SockId
			break
		}
	}
	if id == 0 {
		return nil, 0
	}
	for _, r := range recs {
		if r.ev != nil && r.ev.SockId == id {
			events = append(events, r)
		}
	}
	return events, id
}

func waitUntil(ctx context.Context, col *collector, done func([]rec) bool) []rec {
	for {
		recs := col.all()
		if done(recs) {
			return recs
		}
		select {
		case <-col.notify:
		case <-ctx.Done():
			return col.all()
		}
	}
}

func hasState(recs []rec, id uint64, to eventpb.TcpState) bool {
	for _, r := range recs {
		if r.ev != nil && r.ev.SockId == id && r.ev.Type == eventpb.EventType_EVENT_TYPE_STATE_CHANGE && r.ev.NewState == to {
			return true
		}
	}
	return false
}

// The helper processes of TestProcessAttribution: the test binary run
// again with NETPULSE_TRACER_HELPER set. They talk over stdin/stdout.
const helperEnv = "NETPULSE_TRACER_HELPER"

func TestMain(m *testing.M) {
	switch os.Getenv(helperEnv) {
	case "server":
		os.Exit(helperMain(helperServer))
	case "client":
		os.Exit(helperMain(helperClient))
	}
	os.Exit(m.Run())
}

func helperMain(fn func(in *bufio.Reader) error) int {
	if err := fn(bufio.NewReader(os.Stdin)); err != nil {
		fmt.Fprintln(os.Stderr, "helper:", err)
		return 1
	}
	return 0
}

func helperSizes() (toServer, toClient int) {
	toServer, _ = strconv.Atoi(os.Getenv("NETPULSE_TRACER_TO_SERVER"))
	toClient, _ = strconv.Atoi(os.Getenv("NETPULSE_TRACER_TO_CLIENT"))
	return toServer, toClient
}

// helperServer listens, accepts one connection, reads the client's bytes,
// answers, and closes after the client did once told to on stdin.
func helperServer(in *bufio.Reader) error {
	toServer, toClient := helperSizes()
	ln, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		return err
	}
	fmt.Printf("port %d\n", ln.Addr().(*net.TCPAddr).Port)
	c, err := ln.Accept()
	if err != nil {
		return err
	}
	if _, err := io.CopyN(io.Discard, c, int64(toServer)); err != nil {
		return err
	}
	if _, err := c.Write(make([]byte, toClient)); err != nil {
		return err
	}
	fmt.Println("ready")
	if _, err := in.ReadString('\n'); err != nil {
		return err
	}
	if n, err := c.Read(make([]byte, 1)); n != 0 || err != io.EOF {
		return fmt.Errorf("read after client close: %d, %v", n, err)
	}
	if err := c.Close(); err != nil {
		return err
	}
	return ln.Close()
}

func helperClient(in *bufio.Reader) error {
	toServer, toClient := helperSizes()
	c, err := net.Dial("tcp4", "127.0.0.1:"+os.Getenv("NETPULSE_TRACER_PORT"))
	if err != nil {
		return err
	}
	if _, err := c.Write(make([]byte, toServer)); err != nil {
		return err
	}
	if _, err := io.CopyN(io.Discard, c, int64(toClient)); err != nil {
		return err
	}
	fmt.Printf("local %d\n", c.LocalAddr().(*net.TCPAddr).Port)
	if _, err := in.ReadString('\n'); err != nil {
		return err
	}
	return c.Close()
}

// helper is a running helper process.
type helper struct {
	cmd   *exec.Cmd
	stdin io.WriteCloser
	out   *bufio.Reader
}

func startHelper(t *testing.T, role string, env ...string) *helper {
	t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(append(os.Environ(), helperEnv+"="+role), env...)
	cmd.Stderr = os.Stderr
	stdin, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	h := &helper{cmd: cmd, stdin: stdin, out: bufio.NewReader(stdout)}
	t.Cleanup(func() {
		_ = stdin.Close()
		if cmd.ProcessState == nil {
			_ = cmd.Process.Kill()
			_ = cmd.Wait()
		}
	})
	return h
}

// expect reads the helper's next line, which must start with prefix, and
// returns the rest.
func (h *helper) expect(t *testing.T, prefix string) string {
	t.Helper()
	line, err := h.out.ReadString('\n')
	if err != nil || !strings.HasPrefix(line, prefix) {
		t.Fatalf("helper %d: got %q, %v; want a line starting %q", h.cmd.Process.Pid, line, err, prefix)
	}
	return strings.TrimSpace(strings.TrimPrefix(line, prefix))
}

func (h *helper) finish(t *testing.T) {
	t.Helper()
	if _, err := io.WriteString(h.stdin, "close\n"); err != nil {
		t.Fatal(err)
	}
	if err := h.cmd.Wait(); err != nil {
		t.Fatalf("helper %d: %v", h.cmd.Process.Pid, err)
	}
}

func (h *helper) proc(t *testing.T) proc {
	t.Helper()
	comm, err := os.ReadFile(fmt.Sprintf("/proc/%d/comm", h.cmd.Process.Pid))
	if err != nil {
		t.Fatal(err)
	}
	return proc{pid: uint32(h.cmd.Process.Pid), comm: string(bytes.TrimSpace(comm))}
}

func deadline(t *testing.T, d time.Duration) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	t.Cleanup(cancel)
	return ctx
}
