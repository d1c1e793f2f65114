package tracer

import (
	"bytes"
	"debug/elf"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/btf"
	"github.com/cilium/ebpf/rlimit"

	"github.com/netpulse/netpulse/lib/testutil/priv"
)

// TestCORECompat applies every program's CO-RE relocations against a
// kernel's BTF and loads the result into this kernel's verifier: a type or
// field that the kernel lacks fails the load unless the program branches
// round it (bpf_core_type_exists / bpf_core_field_exists). It fails when a
// hook that should work on a kernel does not, and when one that is expected
// to be missing there relocates after all (the expectation is stale).
//
// Kernels checked:
//   - Debian 12's 6.1 (linux-image-6.1.0-*-amd64-unsigned, newest in apt;
//     6.1.0-56 / 6.1.192 when written), from .cache/btf/debian-6.1.btf,
//     which deploy/btf/fetch-6.1.sh makes (deploy/deps.sh runs it, so CI
//     has it; missing, the test skips, or fails under
//     NETPULSE_REQUIRE_PRIVILEGED=1). NETPULSE_BTF replaces it with another
//     6.1 build's vmlinux (ELF) or raw BTF. Expected missing there, and only
//     those: sock:sock_send_length and sock_recv_length (added in 6.3; the
//     probe then learns owners from connect/listen/close/accept alone).
//     tcp_retransmit_skb and tcp_send_reset are the shared tcp_event_sk_skb
//     class there: the ___6_1 flavour in tcpstate.bpf.c reads it.
//   - the running kernel (/sys/kernel/btf/vmlinux): every hook whose
//     tracepoint tracefs lists must relocate, and only those.
//
// Loading checks offsets and types, not what the 6.1 branches do with
// them: TestRetransmitResetLayout6_1 runs them on this kernel's retransmits.
func TestCORECompat(t *testing.T) {
	priv.RequireRoot(t)
	if err := rlimit.RemoveMemlock(); err != nil {
		t.Fatal(err)
	}
	spec, err := loadTcpstate()
	if err != nil {
		t.Fatal(err)
	}

	t.Run("debian-6.1", func(t *testing.T) {
		kt := loadDebian61BTF(t)
		checkCORE(t, spec, kt, []string{"sock:sock_send_length", "sock:sock_recv_length"})
	})

	t.Run("running", func(t *testing.T) {
		kt, err := btf.LoadKernelSpec()
		if err != nil {
			t.Fatal(err)
		}
		tracefs, err := ensureTracefs()
		if err != nil {
			t.Fatal(err)
		}
		var absent []string
		for _, h := range hooks {
			if _, err := os.Stat(filepath.Join(tracefs, "events", h.group, h.name)); errors.Is(err, os.ErrNotExist) {
				absent = append(absent, h.group+":"+h.name)
			}
		}
		checkCORE(t, spec, kt, absent)
	})
}

// checkCORE loads each hook's program alone with kt as the kernel's types
// and compares the hooks that fail with wantMissing.
func checkCORE(t *testing.T, spec *ebpf.CollectionSpec, kt *btf.Spec, wantMissing []string) {
	t.Helper()
	var missing []string
	for _, h := range hooks {
		tp := h.group + ":" + h.name
		one := spec.Copy()
		one.Programs = map[string]*ebpf.ProgramSpec{h.prog: spec.Programs[h.prog]}
		coll, err := ebpf.NewCollectionWithOptions(one, ebpf.CollectionOptions{Programs: ebpf.ProgramOptions{KernelTypes: kt}})
		if err != nil {
			missing = append(missing, tp)
			if slices.Contains(wantMissing, tp) {
				t.Logf("%s: missing, as expected: %.200v", tp, err)
			} else {
				t.Errorf("%s (%s) does not relocate: %.600v", tp, h.prog, err)
			}
			continue
		}
		coll.Close()
		t.Logf("%s: ok", tp)
	}
	for _, tp := range wantMissing {
		if !slices.Contains(missing, tp) {
			t.Errorf("%s relocates although expected missing: update the expectation (and the docs)", tp)
		}
	}
	for _, h := range hooks {
		if h.required && slices.Contains(missing, h.group+":"+h.name) {
			t.Errorf("required %s:%s does not relocate: the probe cannot start there", h.group, h.name)
		}
	}
}

// debian61Env names a BTF file to use instead of the fetched one.
const debian61Env = "NETPULSE_BTF"

// loadDebian61BTF loads NETPULSE_BTF or the file deploy/btf/fetch-6.1.sh
// writes; without it the test skips, or fails under
// NETPULSE_REQUIRE_PRIVILEGED=1 (CI fetches it in deploy/deps.sh).
func loadDebian61BTF(t *testing.T) *btf.Spec {
	t.Helper()
	path := os.Getenv(debian61Env)
	if path == "" {
		root, err := repoRoot()
		if err != nil {
			t.Fatal(err)
		}
		path = filepath.Join(root, ".cache", "btf", "debian-6.1.btf")
		if _, err := os.Stat(path); errors.Is(err, os.ErrNotExist) {
			priv.Skip(t, "no Debian 6.1 BTF at "+path+": run `bash deploy/btf/fetch-6.1.sh` (or set "+debian61Env+")")
		}
		if info, err := os.ReadFile(filepath.Join(filepath.Dir(path), "debian-6.1.txt")); err == nil {
			t.Logf("BTF of %s", strings.SplitN(string(info), "\n", 2)[0])
		}
	}
	kt, err := loadBTF(path)
	if err != nil {
		t.Fatalf("%s: %v", path, err)
	}
	return kt
}

// loadBTF reads raw BTF, or the .BTF section of an ELF file such as a
// vmlinux: kernel images are stripped, which btf.LoadSpec refuses.
func loadBTF(path string) (*btf.Spec, error) {
	f, err := elf.Open(path)
	if err != nil {
		var ferr *elf.FormatError
		if errors.As(err, &ferr) {
			return btf.LoadSpec(path) // not ELF: raw BTF
		}
		return nil, err
	}
	defer f.Close()
	sec := f.Section(".BTF")
	if sec == nil {
		return nil, errors.New("ELF file without a .BTF section")
	}
	data, err := sec.Data()
	if err != nil {
		return nil, err
	}
	return btf.LoadSpecFromReader(bytes.NewReader(data))
}

// repoRoot is the directory holding go.work, above the working directory.
func repoRoot() (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.work")); err == nil {
			return dir, nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", errors.New("no go.work above the working directory")
		}
		dir = parent
	}
}
