package tracer

import (
	"context"
	"encoding/binary"
	"net"
	"testing"
	"time"

	"github.com/cilium/ebpf"
	"golang.org/x/sys/unix"

	"github.com/netpulse/netpulse/lib/testutil/netfault"
	"github.com/netpulse/netpulse/lib/testutil/priv"
)

// synSender writes raw TCP SYNs to 127.0.0.1:port from a range of source
// ports, as fast as the kernel takes them: a flood that needs no socket.
type synSender struct {
	fd  int
	pkt [40]byte
	dst unix.SockaddrInet4
}

func newSynSender(tb testing.TB, port int) *synSender {
	tb.Helper()
	fd, err := unix.Socket(unix.AF_INET, unix.SOCK_RAW, unix.IPPROTO_RAW)
	if err != nil {
		tb.Fatalf("raw socket: %v", err)
	}
	tb.Cleanup(func() { unix.Close(fd) })
	s := &synSender{fd: fd, dst: unix.SockaddrInet4{Addr: [4]byte{127, 0, 0, 1}}}
	ip := s.pkt[:20]
	ip[0] = 0x45 // IPv4, 5 words; the kernel fills in id, length and checksum
	ip[8] = 64
	ip[9] = unix.IPPROTO_TCP
	copy(ip[12:16], []byte{127, 0, 0, 1})
	copy(ip[16:20], []byte{127, 0, 0, 1})
	binary.BigEndian.PutUint16(ip[2:], 40)
	tcp := s.pkt[20:]
	binary.BigEndian.PutUint16(tcp[2:], uint16(port))
	tcp[12] = 5 << 4 // data offset
	tcp[13] = 0x02   // SYN
	binary.BigEndian.PutUint16(tcp[14:], 65535)
	return s
}

// send sends one SYN from source port sport.
func (s *synSender) send(tb testing.TB, sport uint16) {
	binary.BigEndian.PutUint16(s.pkt[20:], sport)
	if err := unix.Sendto(s.fd, s.pkt[:], 0, &s.dst); err != nil {
		tb.Fatalf("sendto: %v", err)
	}
}

// BenchmarkDropStorm: every packet of a SYN flood to a listening port is
// dropped by nftables on its way in, b.N packets from 1024 source ports
// (one key: the client ports are not in it). Reports the kfree_skb program's CPU per drop (the
// kernel's run-time statistics), the drop rate, and what the storm cost
// the rest: ring-buffer records (none should come from drops), ring
// drops and drops counted without their key. Fails when a drop is lost:
// the kernel's count must equal nft's.
func BenchmarkDropStorm(b *testing.B) {
	priv.RequireRoot(b)
	stats, err := ebpf.EnableStats(unix.BPF_STATS_RUN_TIME)
	if err != nil {
		b.Fatalf("enable BPF run-time statistics: %v", err)
	}
	defer stats.Close()
	tr, err := Open(Config{})
	if err != nil {
		b.Fatal(err)
	}
	defer tr.Close()
	ctx, stop := context.WithCancel(context.Background())
	done := make(chan error, 1)
	var records uint64
	go func() { done <- tr.Read(ctx, func([]byte) { records++ }) }()
	defer func() {
		stop()
		if err := <-done; err != nil {
			b.Error(err)
		}
	}()
	var prog *ebpf.Program
	for i, tp := range tr.tps {
		if tp == "skb:kfree_skb" {
			prog = tr.progs[i]
		}
	}
	if prog == nil {
		b.Fatal("skb:kfree_skb not attached")
	}
	// A service's port: its listener makes all the flood one key.
	ln, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	defer ln.Close()
	port := ln.Addr().(*net.TCPAddr).Port
	nftDropped := netfault.DropAll(b, "", port)
	send := newSynSender(b, port)

	counted := uint64(0)
	collect := func() {
		if err := tr.Drops(func(d *Drop) {
			if int(d.Local.Port()) == port && d.Ingress {
				counted += d.Count
			}
		}); err != nil {
			b.Fatal(err)
		}
	}
	collect()
	before, err := tr.Counters()
	if err != nil {
		b.Fatal(err)
	}
	st0, err := prog.Stats()
	if err != nil {
		b.Fatal(err)
	}
	nft0 := nftDropped()
	b.ResetTimer()
	start := time.Now()
	for i := range b.N {
		send.send(b, uint16(20000+i%1024))
		if i%200_000 == 199_999 {
			collect() // an interval's worth, as the probe's drops.interval does
		}
	}
	elapsed := time.Since(start)
	b.StopTimer()
	// Loopback hands each packet to the softirq before sendto returns:
	// nft has counted them all by now.
	nftCount := nftDropped() - nft0
	collect()
	st1, err := prog.Stats()
	if err != nil {
		b.Fatal(err)
	}
	after, err := tr.Counters()
	if err != nil {
		b.Fatal(err)
	}
	if counted != nftCount || nftCount != uint64(b.N) {
		b.Fatalf("sent %d SYNs, nft dropped %d, the probe counted %d", b.N, nftCount, counted)
	}
	runs := st1.RunCount - st0.RunCount
	b.ReportMetric(float64(st1.Runtime-st0.Runtime)/float64(max(runs, 1)), "bpf_ns/run")
	b.ReportMetric(float64(nftCount)/elapsed.Seconds(), "drops/s")
	b.ReportMetric(float64(st1.Runtime-st0.Runtime)/elapsed.Seconds()*100/1e9, "bpf_cpu_%")
	b.ReportMetric(float64(after.Submitted-before.Submitted), "ring_records")
	b.ReportMetric(float64(after.Dropped-before.Dropped), "ring_drops")
	b.ReportMetric(float64(after.DropsKeyless-before.DropsKeyless), "keyless")
	b.ReportMetric(0, "ns/op")
}
