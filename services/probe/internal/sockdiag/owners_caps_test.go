package sockdiag

import (
	"encoding/json"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strconv"
	"testing"

	"github.com/netpulse/netpulse/lib/testutil/priv"
)

// ownerHelperEnv makes this test binary (see TestMain), run by
// TestScanWithoutPtrace as another user, scan /proc for one inode and print
// what it found.
const ownerHelperEnv = "NETPULSE_SOCKDIAG_OWNER_HELPER"

type helperResult struct {
	Found  bool
	PID    uint32
	Denied int
}

func ownerHelper(inode string) int {
	ino, err := strconv.ParseUint(inode, 10, 64)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 2
	}
	owners, st, err := Owners()
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 2
	}
	o, ok := owners[ino]
	_ = json.NewEncoder(os.Stdout).Encode(helperResult{Found: ok, PID: o.PID, Denied: st.Denied})
	return 0
}

// Another user's process may be listed with CAP_DAC_READ_SEARCH but its
// descriptors only read with CAP_SYS_PTRACE too: without it the scan
// counts the process as denied instead of leaving its sockets out silently.
func TestScanWithoutPtrace(t *testing.T) {
	priv.RequireRoot(t)
	if _, err := exec.LookPath("setpriv"); err != nil {
		priv.Skip(t, "setpriv is not installed (util-linux)")
	}
	uid := 64523
	for ; uid < 65000; uid++ {
		if _, err := user.LookupId(strconv.Itoa(uid)); err != nil {
			break
		}
	}
	// The test binary's directory is root's, mode 0700: copy it out.
	dir, err := os.MkdirTemp("", "netpulse-sockdiag-")
	if err != nil {
		t.Fatal(err)
	}
	defer os.RemoveAll(dir)
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	bin := filepath.Join(dir, "sockdiag.test")
	copyFile(t, os.Args[0], bin)

	// The socket of this process (root's).
	ln, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	_, inode := sockIdentity(t, ln.(*net.TCPListener))

	scan := func(caps string) helperResult {
		t.Helper()
		cmd := exec.Command("setpriv", "--reuid="+strconv.Itoa(uid), "--regid="+strconv.Itoa(uid), "--clear-groups",
			"--inh-caps="+caps, "--ambient-caps="+caps, "--bounding-set="+caps, "--", bin)
		cmd.Env = append(os.Environ(), ownerHelperEnv+"="+strconv.FormatUint(inode, 10))
		cmd.Dir = "/"
		out, err := cmd.Output()
		if err != nil {
			t.Fatalf("helper with %s: %v", caps, err)
		}
		var r helperResult
		if err := json.Unmarshal(out, &r); err != nil {
			t.Fatalf("helper with %s printed %q: %v", caps, out, err)
		}
		return r
	}
	for _, tc := range []struct {
		caps  string
		found bool
	}{
		{"-all", false},                  // /proc/<pid>/fd is not ours to list
		{"-all,+dac_read_search", false}, // listed, but readlink is a ptrace check
		{"-all,+sys_ptrace", false},      // readable links, but no listing
		{"-all,+dac_read_search,+sys_ptrace", true},
	} {
		r := scan(tc.caps)
		if r.Found != tc.found || (r.Found && r.PID != uint32(os.Getpid())) {
			t.Errorf("with %s: found %v (pid %d), want found %v (pid %d)", tc.caps, r.Found, r.PID, tc.found, os.Getpid())
		}
		if !tc.found && r.Denied == 0 {
			t.Errorf("with %s: this process's socket is missing but no process was counted as denied", tc.caps)
		}
	}
}

func copyFile(t *testing.T, from, to string) {
	t.Helper()
	src, err := os.Open(from)
	if err != nil {
		t.Fatal(err)
	}
	defer src.Close()
	dst, err := os.OpenFile(to, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, 0o755)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := io.Copy(dst, src); err != nil {
		t.Fatal(err)
	}
	if err := dst.Close(); err != nil {
		t.Fatal(err)
	}
}
