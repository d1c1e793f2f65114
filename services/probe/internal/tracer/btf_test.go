package tracer

import (
	"os"
	"testing"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/btf"

	"github.com/netpulse/netpulse/lib/testutil/priv"
)

// TestCORECompat applies the programs' CO-RE relocations against another
// kernel's BTF (NETPULSE_BTF: a vmlinux ELF or raw BTF file, e.g. Debian
// 6.1's vmlinux extracted from linux-image-6.1.0-*-amd64) and loads them
// into this kernel: a relocation that finds no type or field fails the
// load. It reports which tracepoints would work there. Debian 12's 6.1
// (6.1.0-52, checked by hand): all but sock_send/recv_length (added in
// 6.3), tcp_retransmit_skb and tcp_send_reset (6.1 has them as the shared
// tcp_event_sk_skb class: needs a ___6_1 flavour of the struct).
// The .BTF section of a vmlinux: objcopy -O binary --only-section=.BTF.
func TestCORECompat(t *testing.T) {
	path := os.Getenv("NETPULSE_BTF")
	if path == "" {
		t.Skip("NETPULSE_BTF not set")
	}
	priv.RequireRoot(t)
	kt, err := btf.LoadSpec(path)
	if err != nil {
		t.Fatal(err)
	}
	spec, err := loadTcpstate()
	if err != nil {
		t.Fatal(err)
	}
	for _, h := range hooks {
		one := spec.Copy()
		one.Programs = map[string]*ebpf.ProgramSpec{h.prog: spec.Programs[h.prog]}
		coll, err := ebpf.NewCollectionWithOptions(one, ebpf.CollectionOptions{Programs: ebpf.ProgramOptions{KernelTypes: kt}})
		if err != nil {
			t.Logf("%s:%s: NOT compatible: %.300v", h.group, h.name, err)
			if h.required {
				t.Errorf("required %s:%s does not relocate", h.group, h.name)
			}
			continue
		}
		coll.Close()
		t.Logf("%s:%s: ok", h.group, h.name)
	}
}
