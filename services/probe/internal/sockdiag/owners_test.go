package sockdiag

import (
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"testing"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/asm"
	"golang.org/x/sys/unix"

	"github.com/netpulse/netpulse/lib/testutil/priv"
)

// fakeProc builds a procfs-shaped tree: for each pid its comm, a cgroup
// file and fd symlinks. Symlinks to "socket:[N]" read back exactly like the
// kernel's, which lets the sharing rules be tested with chosen pids.
func fakeProc(t *testing.T, procs map[string]map[string]string) string {
	t.Helper()
	root := t.TempDir()
	for pid, fds := range procs {
		dir := filepath.Join(root, pid)
		if err := os.MkdirAll(dir, 0o755); err != nil {
			t.Fatal(err)
		}
		if fds == nil { // a process that exited: no fd directory
			continue
		}
		if err := os.MkdirAll(filepath.Join(dir, "fd"), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dir, "comm"), []byte("proc"+pid+"\n"), 0o644); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dir, "cgroup"), []byte("1:cpu:/x\n0::/svc/"+pid+"\n"), 0o644); err != nil {
			t.Fatal(err)
		}
		for fd, target := range fds {
			if err := os.Symlink(target, filepath.Join(dir, "fd", fd)); err != nil {
				t.Fatal(err)
			}
		}
	}
	for _, name := range []string{"self", "sys", "1x"} { // not processes
		if err := os.Mkdir(filepath.Join(root, name), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	return root
}

func TestScanSharingAndSkips(t *testing.T) {
	cg := t.TempDir() // stands in for a cgroup2 mount; see cgroupRoot below
	root := fakeProc(t, map[string]map[string]string{
		"300":  {"3": "socket:[555]", "4": "socket:[777]", "5": "/dev/null", "6": "socket:[12x]", "7": "pipe:[555]", "8": "socket:[555]"},
		"20":   {"0": "/dev/tty", "9": "socket:[555]"},
		"4000": {"3": "socket:[555]", "8": "socket:[888]"},
		"50":   nil, // vanished
	})
	s := OwnerScanner{procRoot: root, cgroupRoot: cg}
	owners := map[uint64]Owner{999: {PID: 1}} // Scan must clear it
	st, err := s.Scan(owners)
	if err != nil {
		t.Fatal(err)
	}
	want := map[uint64]Owner{
		555: {PID: 20, Comm: "proc20", Procs: 3},
		777: {PID: 300, Comm: "proc300", Procs: 1},
		888: {PID: 4000, Comm: "proc4000", Procs: 1},
	}
	if fmt.Sprint(owners) != fmt.Sprint(want) {
		t.Errorf("owners %v\nwant   %v", owners, want)
	}
	// A temp dir is not a cgroup2 mount: ids stay 0 and are counted.
	wantSt := OwnerStats{Processes: 3, Sockets: 3, Shared: 1, Vanished: 1, NoCgroup: 3}
	if st != wantSt {
		t.Errorf("stats %+v, want %+v", st, wantSt)
	}
}

func TestParseHelpers(t *testing.T) {
	for in, want := range map[string]uint64{"socket:[1]": 1, "socket:[18446744073709551615]": 0, "socket:[]": 0,
		"socket:[12": 0, "anon_inode:[eventpoll]": 0, "socket:[4294967296]": 4294967296} {
		got, ok := socketInode([]byte(in))
		if got != want || ok != (want != 0) {
			t.Errorf("socketInode(%q) = %d %v, want %d", in, got, ok, want)
		}
	}
	for in, want := range map[string]string{
		"0::/user.slice/a.scope\n":          "/user.slice/a.scope",
		"12:pids:/x\n0::/\n":                "/",
		"1:name=systemd:/x\n0::/a b\n2:x:/": "/a b",
		"1:cpu:/x\n":                        "",
		"0::\n":                             "",
	} {
		got, ok := unifiedCgroupPath([]byte(in))
		if string(got) != want || ok != (want != "") {
			t.Errorf("unifiedCgroupPath(%q) = %q %v, want %q", in, got, ok, want)
		}
	}
}

// TestOwnerSharedAfterFork hands a socket to a child process: both hold
// it, and the lower pid owns it.
func TestOwnerSharedAfterFork(t *testing.T) {
	priv.RequireRoot(t)
	ln, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	f, err := ln.(*net.TCPListener).File()
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	child := exec.Command("sleep", "600")
	child.ExtraFiles = []*os.File{f}
	if err := child.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { _ = child.Process.Kill(); _ = child.Wait() }()

	_, inode := sockIdentity(t, ln.(*net.TCPListener))
	owners, _, err := Owners()
	if err != nil {
		t.Fatal(err)
	}
	wantPID := uint32(min(os.Getpid(), child.Process.Pid))
	if o := owners[inode]; o.PID != wantPID || o.Procs != 2 {
		t.Errorf("owner %+v, want pid %d held by 2 processes (test %d, child %d)", o, wantPID, os.Getpid(), child.Process.Pid)
	}
}

// TestCgroupIDIsBPFs checks the claim that Owner.CgroupID is what
// bpf_get_current_cgroup_id() returns for the owner: it moves the test
// process into a fresh cgroup, so the id is not merely the root's, and
// runs a BPF program in the test's own context.
func TestCgroupIDIsBPFs(t *testing.T) {
	priv.RequireRoot(t)
	var s OwnerScanner
	if !s.resolveCgroupRoot() {
		priv.Skip(t, "no cgroup v2 mount at /sys/fs/cgroup or /sys/fs/cgroup/unified")
	}
	dir := moveToNewCgroup(t, s.root)
	var st unix.Stat_t
	if err := unix.Stat(dir, &st); err != nil {
		t.Fatal(err)
	}

	ln, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	_, inode := sockIdentity(t, ln.(*net.TCPListener))
	owners := map[uint64]Owner{}
	if _, err := s.Scan(owners); err != nil {
		t.Fatal(err)
	}
	got := owners[inode].CgroupID
	if got != st.Ino {
		t.Errorf("owner cgroup id %d, inode of %s is %d", got, dir, st.Ino)
	}
	t.Logf("cgroup %s: id %d", dir, got)
	if bpf := bpfCurrentCgroupID(t); got != bpf {
		t.Errorf("owner cgroup id %d, bpf_get_current_cgroup_id() %d", got, bpf)
	}
}

// moveToNewCgroup makes a child cgroup of the hierarchy's root and moves
// the whole test process into it until the test ends.
func moveToNewCgroup(t *testing.T, root string) string {
	t.Helper()
	self, err := os.ReadFile("/proc/self/cgroup")
	if err != nil {
		t.Fatal(err)
	}
	orig, ok := unifiedCgroupPath(self)
	if !ok {
		t.Fatalf("no cgroup v2 line in /proc/self/cgroup: %q", self)
	}
	dir := filepath.Join(root, "netpulse-sockdiag-test-"+strconv.Itoa(os.Getpid()))
	if err := os.Mkdir(dir, 0o755); err != nil {
		priv.Skip(t, "cannot make a cgroup: "+err.Error())
	}
	pid := []byte(strconv.Itoa(os.Getpid()))
	if err := os.WriteFile(filepath.Join(dir, "cgroup.procs"), pid, 0); err != nil {
		_ = os.Remove(dir)
		priv.Skip(t, "cannot move into a new cgroup: "+err.Error())
	}
	t.Cleanup(func() {
		if err := os.WriteFile(filepath.Join(root, string(orig), "cgroup.procs"), pid, 0); err != nil {
			t.Errorf("moving back to cgroup %s: %v", orig, err)
		}
		if err := os.Remove(dir); err != nil {
			t.Errorf("removing test cgroup: %v", err)
		}
	})
	return dir
}

// bpfCurrentCgroupID runs two tiny raw-tracepoint programs through
// BPF_PROG_TEST_RUN, which executes them in the calling thread's context:
// one returns the low 32 bits of bpf_get_current_cgroup_id(), one the high.
func bpfCurrentCgroupID(t *testing.T) uint64 {
	t.Helper()
	run := func(shift bool) uint32 {
		insns := asm.Instructions{asm.FnGetCurrentCgroupId.Call()}
		if shift {
			insns = append(insns, asm.RSh.Imm(asm.R0, 32))
		}
		insns = append(insns, asm.Return())
		prog, err := ebpf.NewProgram(&ebpf.ProgramSpec{Type: ebpf.RawTracepoint, Instructions: insns, License: "GPL"})
		if err != nil {
			if errors.Is(err, ebpf.ErrNotSupported) {
				priv.Skip(t, "raw tracepoint programs: "+err.Error())
			}
			t.Fatal(err)
		}
		defer prog.Close()
		ret, err := prog.Run(&ebpf.RunOptions{})
		if err != nil {
			t.Fatalf("BPF_PROG_TEST_RUN: %v", err)
		}
		return ret
	}
	// The cgroup is the thread's: keep both runs on this thread (all of
	// the process's threads were moved anyway).
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	lo, hi := run(false), run(true)
	return uint64(hi)<<32 | uint64(lo)
}

// TestScanInodesOnlyWanted checks that a scan for chosen inodes keeps only
// those, with the same owners a full scan gives them.
func TestScanInodesOnlyWanted(t *testing.T) {
	root := fakeProc(t, map[string]map[string]string{
		"20":  {"3": "socket:[555]", "4": "socket:[556]"},
		"300": {"3": "socket:[555]", "4": "socket:[777]", "5": "socket:[888]"},
	})
	s := OwnerScanner{procRoot: root, cgroupRoot: t.TempDir()}
	owners := map[uint64]Owner{1: {PID: 1}}
	if _, err := s.ScanInodes(owners, map[uint64]struct{}{555: {}, 777: {}, 999: {}}); err != nil {
		t.Fatal(err)
	}
	want := map[uint64]Owner{555: {PID: 20, Comm: "proc20", Procs: 2}, 777: {PID: 300, Comm: "proc300", Procs: 1}}
	if fmt.Sprint(owners) != fmt.Sprint(want) {
		t.Errorf("owners %v\nwant   %v", owners, want)
	}
	if _, err := s.ScanInodes(owners, nil); err != nil || len(owners) != 0 {
		t.Errorf("nothing wanted: %v, %v", owners, err)
	}
	// The filter is not left behind.
	if st, err := s.Scan(owners); err != nil || st.Sockets != 4 {
		t.Errorf("full scan after: %+v %v", st, err)
	}
}
