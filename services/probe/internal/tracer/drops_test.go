package tracer

import (
	"bytes"
	"crypto/rand"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"net"
	"net/netip"
	"os"
	"testing"
	"time"

	"github.com/cilium/ebpf/btf"
	"golang.org/x/sys/unix"

	"github.com/netpulse/netpulse/lib/testutil/priv"
)

// Reasons are named from the kernel's own BTF: 6.1 and the running kernel
// number NETFILTER_DROP alike but TCP_LISTEN_OVERFLOW is not in 6.1 at
// all, so a table built into the probe would be wrong on one of them.
func TestDropReasonsFromBTF(t *testing.T) {
	running, err := KernelDropReasons()
	if err != nil {
		t.Skipf("no kernel BTF: %v", err)
	}
	check := func(t *testing.T, r DropReasons, name string) uint32 {
		t.Helper()
		for v, n := range r.names {
			if n == name {
				if got := r.Name(v); got != name {
					t.Errorf("Name(%d) = %q, want %q", v, got, name)
				}
				return v
			}
		}
		t.Fatalf("no %s among %d reasons", name, len(r.names))
		return 0
	}
	check(t, running, "NETFILTER_DROP")
	check(t, running, "NO_SOCKET")
	if got := running.Name(0); got != NotSpecified {
		t.Errorf("Name(0) = %q, want %s", got, NotSpecified)
	}
	if got := running.Name(1 << 30); got != "REASON_1073741824" {
		t.Errorf("unnamed reason: %q", got)
	}
	t.Run("debian-6.1", func(t *testing.T) {
		old, err := dropReasonsFrom(loadDebian61BTF(t))
		if err != nil {
			t.Fatal(err)
		}
		check(t, old, "NETFILTER_DROP")
		for v, n := range old.names {
			if n == "TCP_LISTEN_OVERFLOW" {
				t.Errorf("6.1 names %d TCP_LISTEN_OVERFLOW: the expectation is stale", v)
			}
		}
		if len(old.names) == len(running.names) {
			t.Errorf("6.1 and the running kernel have as many reasons (%d): the test no longer shows they differ", len(old.names))
		}
	})
	t.Run("no enum", func(t *testing.T) {
		b, err := btf.NewBuilder([]btf.Type{&btf.Int{Name: "int", Size: 4}}, nil)
		if err != nil {
			t.Fatal(err)
		}
		raw, err := b.Marshal(nil, nil)
		if err != nil {
			t.Fatal(err)
		}
		spec, err := btf.LoadSpecFromReader(bytes.NewReader(raw))
		if err != nil {
			t.Fatal(err)
		}
		r, err := dropReasonsFrom(spec)
		if err != nil {
			t.Fatal(err)
		}
		if got := r.Name(12); got != "REASON_12" {
			t.Errorf("Name(12) without BTF = %q", got)
		}
	})
}

// nftPackets reads the packets counted by the rule with comment in the
// host's nftables ruleset.
func nftPackets(t *testing.T, comment string) uint64 {
	t.Helper()
	out := run(t, "", "nft", "-j", "list", "ruleset")
	var rs struct {
		Nftables []struct {
			Rule *struct {
				Comment string            `json:"comment"`
				Expr    []json.RawMessage `json:"expr"`
			} `json:"rule"`
		} `json:"nftables"`
	}
	if err := json.Unmarshal([]byte(out), &rs); err != nil {
		t.Fatalf("nft -j: %v", err)
	}
	for _, e := range rs.Nftables {
		if e.Rule == nil || e.Rule.Comment != comment {
			continue
		}
		for _, x := range e.Rule.Expr {
			var c struct {
				Counter *struct{ Packets uint64 } `json:"counter"`
			}
			if json.Unmarshal(x, &c) == nil && c.Counter != nil {
				return c.Counter.Packets
			}
		}
	}
	t.Fatalf("no counter rule %q in the ruleset", comment)
	return 0
}

// SYNs dropped by an nftables rule as they arrive are counted in the
// kernel with the netfilter reason, per key, exactly as many as nft's own
// rule counter, and attributed to the port's listener (this process): one
// key for the listener, whatever the clients' ports.
func TestDropsMatchNftCounter(t *testing.T) {
	priv.RequireRoot(t)
	tr, _ := startTracer(t, Config{})
	for _, fam := range []struct {
		name string
		addr string
		af   int
	}{{"ipv4", "127.0.0.1", unix.AF_INET}, {"ipv6", "::1", unix.AF_INET6}} {
		t.Run(fam.name, func(t *testing.T) {
			ln, err := net.Listen("tcp", net.JoinHostPort(fam.addr, "0"))
			if err != nil {
				t.Fatal(err)
			}
			defer ln.Close()
			port := ln.Addr().(*net.TCPAddr).Port
			comment := uniqueName("np_drop_")
			nft(t, "", fmt.Sprintf("in tcp dport %d counter drop comment %q", port, comment))

			// Non-blocking connects: each sends one SYN, dropped on its way
			// in; closed long before the 1 s SYN retransmit.
			const conns = 300
			dst := netip.MustParseAddr(fam.addr)
			for range conns {
				fd, err := unix.Socket(fam.af, unix.SOCK_STREAM|unix.SOCK_NONBLOCK, 0)
				if err != nil {
					t.Fatal(err)
				}
				var sa unix.Sockaddr = &unix.SockaddrInet6{Port: port, Addr: dst.As16()}
				if fam.af == unix.AF_INET {
					sa = &unix.SockaddrInet4{Port: port, Addr: dst.As4()}
				}
				if err := unix.Connect(fd, sa); err != unix.EINPROGRESS {
					t.Fatalf("connect: %v", err)
				}
				unix.Close(fd)
			}

			var got uint64
			byReason := map[string]uint64{}
			ctx := deadline(t, 10*time.Second)
			for {
				want := nftPackets(t, comment)
				err := tr.Drops(func(d *Drop) {
					if d.Local.Port() != uint16(port) || !d.Ingress {
						return
					}
					got += d.Count
					byReason[d.Reason] += d.Count
					if d.Remote.Addr() != dst || d.Local.Addr() != dst {
						t.Errorf("drop %+v: want %s on both ends", d, dst)
					}
					if d.Remote.Port() != 0 {
						t.Errorf("drop %+v: the client's port is in the key", d)
					}
					if d.Owner.PID != uint32(os.Getpid()) {
						t.Errorf("drop %+v: owner pid %d, want the listener's %d", d, d.Owner.PID, os.Getpid())
					}
				})
				if err != nil {
					t.Fatal(err)
				}
				if want == conns && got == want {
					break
				}
				if got > want || ctx.Err() != nil {
					t.Fatalf("counted %d drops to port %d (%v), nft counted %d, %d SYNs sent", got, port, byReason, want, conns)
				}
				select {
				case <-ctx.Done():
				case <-time.After(20 * time.Millisecond): // polling the kernel's counter, not waiting for it
				}
			}
			if byReason["NETFILTER_DROP"] != conns {
				t.Errorf("reasons %v, want all %d NETFILTER_DROP", byReason, conns)
			}
			t.Logf("%d SYNs dropped by nft, %d counted with reason NETFILTER_DROP", conns, byReason["NETFILTER_DROP"])
		})
	}
	c, err := tr.Counters()
	if err != nil {
		t.Fatal(err)
	}
	if c.DroppedPackets < 600 {
		t.Errorf("kernel counted %d dropped TCP packets, want at least 600", c.DroppedPackets)
	}
	if c.DropsKeyless != 0 {
		t.Errorf("%d drops counted without their key", c.DropsKeyless)
	}
}

// A drop map that is full still counts every drop: per reason, without
// the endpoints, and the drops say so (map usage evictions).
func TestDropMapFull(t *testing.T) {
	priv.RequireRoot(t)
	tr, _ := startTracer(t, Config{DropMapEntries: 16})
	// Ports below the ephemeral range with no listener keep both ports in
	// their keys: 64 distinct ones. Nothing reaches them: nft drops first.
	low := int(ephemeralLow())
	if low < 2048 {
		t.Skipf("ephemeral range starts at %d: no room below it", low)
	}
	var rnd [2]byte
	_, _ = rand.Read(rnd[:])
	base := 1024 + int(binary.LittleEndian.Uint16(rnd[:]))%(low-1024-64)
	comment := uniqueName("np_drop_")
	const ports = 64
	nft(t, "", fmt.Sprintf("in ip daddr 127.0.0.1 tcp dport %d-%d counter drop comment %q", base, base+ports-1, comment))
	if err := tr.Drops(func(*Drop) {}); err != nil { // starts an interval afresh
		t.Fatal(err)
	}
	for i := range ports {
		fd, err := unix.Socket(unix.AF_INET, unix.SOCK_STREAM|unix.SOCK_NONBLOCK, 0)
		if err != nil {
			t.Fatal(err)
		}
		if err := unix.Connect(fd, &unix.SockaddrInet4{Port: base + i, Addr: [4]byte{127, 0, 0, 1}}); err != unix.EINPROGRESS {
			t.Fatalf("connect: %v", err)
		}
		unix.Close(fd)
	}
	var keyed, keyless uint64
	ctx := deadline(t, 10*time.Second)
	for keyed+keyless < ports && ctx.Err() == nil {
		if err := tr.Drops(func(d *Drop) {
			switch {
			case !d.Local.IsValid() && d.Reason == "NETFILTER_DROP":
				keyless += d.Count
			case d.Local.Addr() == netip.MustParseAddr("127.0.0.1") && int(d.Local.Port()) >= base && int(d.Local.Port()) < base+ports:
				keyed += d.Count
			}
		}); err != nil {
			t.Fatal(err)
		}
		select {
		case <-ctx.Done():
		case <-time.After(20 * time.Millisecond):
		}
	}
	if n := nftPackets(t, comment); keyed+keyless != n || n != ports {
		t.Fatalf("keyed %d + keyless %d drops, nft counted %d of %d", keyed, keyless, n, ports)
	}
	if keyed > 16 || keyless == 0 {
		t.Errorf("a 16-entry map held %d keyed drops, %d keyless", keyed, keyless)
	}
	usage, err := tr.MapUsage()
	if err != nil {
		t.Fatal(err)
	}
	for _, u := range usage {
		if u.Name == "drop" {
			if u.Evictions < keyless {
				t.Errorf("drop map usage %+v: want evictions >= %d", u, keyless)
			}
			return
		}
	}
	t.Errorf("no drop map in %+v", usage)
}
