package e2e

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/netpulse/netpulse/lib/testutil/priv"
)

// probeCaps is the documented capability set of a probe run without root
// (README "Running the probe without root"), in setpriv's spelling.
var probeCaps = []struct {
	name string // setpriv's: bpf
	cap  int
}{
	{"bpf", unix.CAP_BPF},
	{"perfmon", unix.CAP_PERFMON},
	{"dac_read_search", unix.CAP_DAC_READ_SEARCH},
	{"sys_ptrace", unix.CAP_SYS_PTRACE},
}

// unprivileged runs the probe binary as a user of its own (no passwd entry
// needed: setpriv takes numbers) holding exactly the given capabilities.
type unprivileged struct {
	uid, gid int
	bin      string // a copy of netpulse-probe that user may execute
}

func newUnprivileged(t *testing.T) *unprivileged {
	t.Helper()
	priv.RequireRoot(t)
	for _, tool := range []string{"setpriv", "unshare"} {
		if _, err := exec.LookPath(tool); err != nil {
			priv.Skip(t, tool+" is not installed (util-linux)")
		}
	}
	// Root mounts tracefs when it is missing; an unprivileged probe could
	// not (see "tracefs not mounted" below), and a fresh machine may not
	// have it yet.
	if _, err := os.Stat("/sys/kernel/tracing/events"); err != nil {
		if err := syscall.Mount("tracefs", "/sys/kernel/tracing", "tracefs", syscall.MS_NOSUID|syscall.MS_NODEV|syscall.MS_NOEXEC, ""); err != nil {
			t.Fatalf("mount tracefs: %v", err)
		}
	}
	// A uid no account and no process has: nothing it can read by owning it.
	uid := 64513
	for ; uid < 65000; uid++ {
		if _, err := user.LookupId(strconv.Itoa(uid)); err == nil {
			continue
		}
		if _, err := user.LookupGroupId(strconv.Itoa(uid)); err == nil {
			continue
		}
		break
	}
	// binDir is root's, mode 0700.
	dir, err := os.MkdirTemp("", "netpulse-unpriv-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	bin := filepath.Join(dir, "netpulse-probe")
	src, err := os.Open(filepath.Join(binDir, "netpulse-probe"))
	if err != nil {
		t.Fatal(err)
	}
	defer src.Close()
	dst, err := os.OpenFile(bin, os.O_CREATE|os.O_WRONLY, 0o755)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := io.Copy(dst, src); err != nil {
		t.Fatal(err)
	}
	if err := dst.Close(); err != nil {
		t.Fatal(err)
	}
	return &unprivileged{uid: uid, gid: uid, bin: bin}
}

// command is setpriv running the probe as u with exactly caps (setpriv
// names: "bpf"), in the ambient set so that they survive the exec, with
// the bounding set cut to them.
func (u *unprivileged) command(caps []string, args ...string) *exec.Cmd {
	set := "-all"
	for _, c := range caps {
		set += ",+" + c
	}
	argv := append([]string{
		"--reuid=" + strconv.Itoa(u.uid), "--regid=" + strconv.Itoa(u.gid), "--clear-groups",
		"--inh-caps=" + set, "--ambient-caps=" + set, "--bounding-set=" + set,
		"--", u.bin, "--metrics.addr=127.0.0.1:0"}, args...)
	cmd := exec.Command("setpriv", argv...)
	cmd.Env = append(os.Environ(), "NETPULSE_CONFIG=/dev/null")
	cmd.Dir = "/"
	return cmd
}

// startProc is start() for a prepared command: its stderr is searchable
// with waitLog; it is killed at cleanup.
func startProc(t testing.TB, name string, cmd *exec.Cmd) *proc {
	t.Helper()
	stderr, err := cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatalf("start %s: %v", name, err)
	}
	p := &proc{t: t, name: name, cmd: cmd, done: make(chan struct{}), wake: make(chan struct{})}
	go p.scan(stderr)
	t.Cleanup(func() { p.kill(syscall.SIGKILL) })
	return p
}

// procStatus reads the Uid and CapEff lines of /proc/<pid>/status.
func procStatus(t *testing.T, pid int) (uid string, capEff uint64) {
	t.Helper()
	f, err := os.Open(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		k, v, _ := strings.Cut(sc.Text(), ":")
		v = strings.TrimSpace(v)
		switch k {
		case "Uid":
			uid = strings.Fields(v)[1] // real, effective, saved, fs
		case "CapEff":
			if capEff, err = strconv.ParseUint(v, 16, 64); err != nil {
				t.Fatalf("CapEff %q: %v", v, err)
			}
		}
	}
	return uid, capEff
}

// The probe as an unprivileged user with exactly the documented
// capabilities passes what the probe's real-traffic tests check: every
// transition bpftrace counts is in ClickHouse, connections are attributed
// to their process, and the sockets of another user's process that are
// older than the probe (the /proc scan) carry that process as their owner.
// With any one capability dropped it exits at start naming that one.
func TestProbeUnprivileged(t *testing.T) {
	u := newUnprivileged(t)

	t.Run("documented set", func(t *testing.T) {
		p := newPipeline(t)
		ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
		defer cancel()
		// Root's process (another user than the probe's) with CLOSE_WAIT
		// sockets made before the probe starts: only the /proc scan can
		// name their owner, and seeding its listener's owner to the kernel
		// side attributes the handshakes it accepts later.
		leak, leakPort := leaker(t)
		const before, after = 8, 8
		dialClose := func(n int) {
			for i := 0; i < n; i++ {
				c, err := net.Dial("tcp4", "127.0.0.1:"+strconv.Itoa(leakPort))
				if err != nil {
					t.Fatal(err)
				}
				c.Close()
			}
		}
		dialClose(before)
		for closeWaitOn(t, leakPort) != before {
			select {
			case <-ctx.Done():
				t.Fatalf("ss shows %d CLOSE_WAIT sockets on port %d, want %d", closeWaitOn(t, leakPort), leakPort, before)
			case <-time.After(20 * time.Millisecond):
			}
		}

		p.startSink(ctx)
		var caps []string
		var want uint64
		for _, c := range probeCaps {
			caps = append(caps, c.name)
			want |= 1 << uint(c.cap)
		}
		probe := startProc(t, "probe", u.command(caps, append(p.natsArgs("probe"), "--host="+p.host,
			"--batch.flush_interval=50ms", "--stats.interval=1s", "--snapshot.interval=1s")...))
		t.Cleanup(func() {
			if t.Failed() {
				t.Logf("unprivileged probe's log (last 3000 bytes):\n%s", tail(probe.log(), 3000))
			}
		})
		probe.waitLog(ctx, "probe running")
		// It really is that user with that set (setpriv exec'd the probe).
		if uid, eff := procStatus(t, probe.cmd.Process.Pid); uid != strconv.Itoa(u.uid) || eff != want {
			t.Fatalf("probe runs as uid %s with CapEff %#x, want uid %d with %#x", uid, eff, u.uid, want)
		}
		probe.waitLog(ctx, "existing sockets read")

		// Real traffic, counted by bpftrace on the same tracepoint.
		port, listen := bindLoopback(t)
		stopTrace := bpftraceCount(t, ctx, port)
		const n = 1000
		serve(t, listen(), n, 8)
		dialClose(after)
		q := "SELECT count() FROM tcp_events WHERE host = ? AND (sport = ? OR dport = ?)"
		wctx, wcancel := context.WithTimeout(ctx, 15*time.Second)
		defer wcancel()
		p.waitRows(wctx, 10*n+2, q, p.host, uint16(port), uint16(port))
		wantRows := stopTrace()
		p.waitRows(wctx, wantRows, q, p.host, uint16(port), uint16(port))
		// The leaker's new sockets: SYN_RECV, ESTABLISHED, CLOSE_WAIT each,
		// and the leaked ones' latest snapshot.
		p.waitRows(wctx, 3*after, "SELECT count() FROM tcp_events WHERE host = ? AND sport = ?", p.host, uint16(leakPort))
		snapCW := `SELECT count() FROM socket_snapshots WHERE host = ? AND row_kind = 'close_wait' AND local_port = ?
			AND seq = (SELECT max(seq) FROM socket_snapshots WHERE host = ? AND row_kind = 'summary') AND pid = ? AND comm = 'python3'`
		p.waitRows(wctx, before+after, snapCW, p.host, uint16(leakPort), p.host, uint32(leak.Process.Pid))
		p.waitRows(wctx, before, snapCW+" AND owner_source = 'scan'", p.host, uint16(leakPort), p.host, uint32(leak.Process.Pid))
		probe.stop()

		if got := p.uint64(q, p.host, uint16(port), uint16(port)); got != wantRows {
			t.Errorf("tcp_events holds %d rows for port %d, bpftrace counted %d", got, port, wantRows)
		}
		comparePaths(t, p.paths(port), map[string]uint64{wantClient: n, wantServer: n, wantListener: 1})
		// This test (root) made the connects: its process context.
		comm, _ := os.ReadFile("/proc/self/comm")
		if wrong := p.uint64(`SELECT count() FROM tcp_events WHERE host = ? AND dport = ? AND old_state = 'CLOSE' AND new_state = 'SYN_SENT'
			AND NOT (pid = ? AND comm = ?)`, p.host, uint16(port), uint32(os.Getpid()), strings.TrimSpace(string(comm))); wrong != 0 {
			t.Errorf("%d of %d connects are not attributed to pid %d", wrong, n, os.Getpid())
		}
		// The leaker's handshakes ran in softirq context: their owner is the
		// listener's, which only the /proc scan of root's process knew.
		if wrong := p.uint64("SELECT count() FROM tcp_events WHERE host = ? AND sport = ? AND NOT (pid = ? AND comm = 'python3')",
			p.host, uint16(leakPort), uint32(leak.Process.Pid)); wrong != 0 {
			t.Errorf("%d events of the leaker's sockets are not attributed to it (pid %d)", wrong, leak.Process.Pid)
		}
		if got := p.uint64("SELECT count() FROM tcp_events WHERE host = ? AND sport = ? AND owner_source = 'listener'",
			p.host, uint16(leakPort)); got < after {
			t.Errorf("%d of the leaker's %d handshakes were attributed through its listener, want all", got, after)
		}
	})

	// The capabilities' check runs before NATS is used: any URL will do.
	for _, drop := range probeCaps {
		t.Run("without "+drop.name, func(t *testing.T) {
			var caps []string
			for _, c := range probeCaps {
				if c != drop {
					caps = append(caps, c.name)
				}
			}
			name := "CAP_" + strings.ToUpper(drop.name)
			expectRefusal(t, u.command(caps, "--nats.url=nats://127.0.0.1:1"), name)
		})
	}

	// Where tracefs is mounted nowhere (a private mount namespace here), the
	// probe must mount it: then it needs CAP_SYS_ADMIN too, and says so.
	t.Run("tracefs not mounted", func(t *testing.T) {
		var caps []string
		for _, c := range probeCaps {
			caps = append(caps, c.name)
		}
		cmd := u.command(caps, "--nats.url=nats://127.0.0.1:1")
		argv := append([]string{"--mount", "--propagation", "private", "sh", "-c",
			`umount -l /sys/kernel/tracing 2>/dev/null; umount -R -l /sys/kernel/debug 2>/dev/null; ` +
				`if grep -qw tracefs /proc/self/mounts; then echo "tracefs still mounted" >&2; exit 99; fi; exec "$@"`,
			"sh"}, cmd.Args...)
		un := exec.Command("unshare", argv...)
		un.Env, un.Dir = cmd.Env, cmd.Dir
		expectRefusal(t, un, "CAP_SYS_ADMIN")
	})
}

// expectRefusal runs cmd, a probe that must exit non-zero at start naming
// the one missing capability name.
func expectRefusal(t *testing.T, cmd *exec.Cmd, name string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	pr := startProc(t, "probe", cmd)
	select {
	case <-pr.done:
	case <-ctx.Done():
		t.Fatalf("probe without %s still running after 20 s:\n%s", name, pr.log())
	}
	out := pr.log()
	code := pr.cmd.ProcessState.ExitCode()
	if code == 99 {
		t.Fatalf("could not unmount tracefs in a private mount namespace:\n%s", out)
	}
	if code == 0 {
		t.Fatalf("probe without %s exited 0:\n%s", name, out)
	}
	if !strings.Contains(out, "missing capability "+name+" (") {
		t.Errorf("probe without %s exited %d without naming it:\n%s", name, code, out)
	}
	if strings.Contains(out, "probe running") {
		t.Errorf("probe without %s started anyway:\n%s", name, out)
	}
}
