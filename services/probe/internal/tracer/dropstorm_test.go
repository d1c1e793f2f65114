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

// stormResult is what a drop storm cost.
type stormResult struct {
	sent, nft, counted          uint64 // SYNs sent, nft's drops, the probe's count
	elapsed                     time.Duration
	runs, runtime               uint64 // kfree_skb program runs and their ns
	records, ringDrops, keyless uint64 // meanwhile: ring-buffer records and drops, keyless drops
}

// dropStorm floods a listening port with n SYNs that nftables drops on
// their way in, from 1024 source ports (one key: the client ports are not
// in it), through a real tracer, draining the drop maps every 200 000 as
// the probe's drops.interval does. timed brackets the flood (a
// benchmark's timer).
func dropStorm(tb testing.TB, n int, timed func(start bool)) stormResult {
	tb.Helper()
	priv.RequireRoot(tb)
	stats, err := ebpf.EnableStats(unix.BPF_STATS_RUN_TIME)
	if err != nil {
		tb.Fatalf("enable BPF run-time statistics: %v", err)
	}
	defer stats.Close()
	tr, err := Open(Config{})
	if err != nil {
		tb.Fatal(err)
	}
	defer tr.Close()
	ctx, stop := context.WithCancel(context.Background())
	done := make(chan error, 1)
	var records uint64
	go func() { done <- tr.Read(ctx, func([]byte) { records++ }) }()
	defer func() {
		stop()
		if err := <-done; err != nil {
			tb.Error(err)
		}
	}()
	var prog *ebpf.Program
	for i, tp := range tr.tps {
		if tp == "skb:kfree_skb" {
			prog = tr.progs[i]
		}
	}
	if prog == nil {
		tb.Fatal("skb:kfree_skb not attached")
	}
	// A service's port: its listener makes all the flood one key.
	ln, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		tb.Fatal(err)
	}
	defer ln.Close()
	port := ln.Addr().(*net.TCPAddr).Port
	nftDropped := netfault.DropAll(tb, "", port)
	send := newSynSender(tb, port)

	r := stormResult{sent: uint64(n)}
	collect := func() {
		if err := tr.Drops(func(d *Drop) {
			if int(d.Local.Port()) == port && d.Ingress {
				r.counted += d.Count
			}
		}); err != nil {
			tb.Fatal(err)
		}
	}
	collect()
	before, err := tr.Counters()
	if err != nil {
		tb.Fatal(err)
	}
	st0, err := prog.Stats()
	if err != nil {
		tb.Fatal(err)
	}
	nft0 := nftDropped()
	timed(true)
	start := time.Now()
	for i := range n {
		send.send(tb, uint16(20000+i%1024))
		if i%200_000 == 199_999 {
			collect()
		}
	}
	r.elapsed = time.Since(start)
	timed(false)
	// Loopback hands each packet to the softirq before sendto returns:
	// nft has counted them all by now.
	r.nft = nftDropped() - nft0
	collect()
	st1, err := prog.Stats()
	if err != nil {
		tb.Fatal(err)
	}
	after, err := tr.Counters()
	if err != nil {
		tb.Fatal(err)
	}
	r.runs, r.runtime = st1.RunCount-st0.RunCount, uint64(st1.Runtime-st0.Runtime)
	r.records, r.ringDrops, r.keyless = after.Submitted-before.Submitted, after.Dropped-before.Dropped, after.DropsKeyless-before.DropsKeyless
	return r
}

// TestDropStorm: a storm of drops costs map updates, not ring-buffer
// records: every drop counted (nft's count), none without its key, no ring
// record lost meanwhile.
func TestDropStorm(t *testing.T) {
	r := dropStorm(t, 300_000, func(bool) {})
	if r.nft != r.sent || r.counted != r.nft {
		t.Fatalf("sent %d SYNs, nft dropped %d, the probe counted %d", r.sent, r.nft, r.counted)
	}
	if r.keyless != 0 || r.ringDrops != 0 {
		t.Fatalf("during the storm: %d drops counted without their key, %d ring-buffer records dropped", r.keyless, r.ringDrops)
	}
	// The flood makes no socket: the ring carries only what the rest of
	// the machine did meanwhile, far fewer records than drops.
	if r.records > r.sent/100 {
		t.Fatalf("%d ring-buffer records during %d drops: drops reach the ring", r.records, r.sent)
	}
	t.Logf("%d drops in %v (%.0f/s), kfree_skb %.0f ns a run, %d ring records meanwhile",
		r.nft, r.elapsed, float64(r.nft)/r.elapsed.Seconds(), float64(r.runtime)/float64(max(r.runs, 1)), r.records)
}

// BenchmarkDropStorm: a drop storm of b.N SYNs (dropStorm). Reports the
// kfree_skb program's CPU per drop (the kernel's run-time statistics), the
// drop rate, and what the storm cost the rest: ring-buffer records (none
// should come from drops), ring drops and drops counted without their key.
// Fails when a drop is lost: the kernel's count must equal nft's.
func BenchmarkDropStorm(b *testing.B) {
	r := dropStorm(b, b.N, func(start bool) {
		if start {
			b.ResetTimer()
		} else {
			b.StopTimer()
		}
	})
	if r.counted != r.nft || r.nft != r.sent {
		b.Fatalf("sent %d SYNs, nft dropped %d, the probe counted %d", r.sent, r.nft, r.counted)
	}
	b.ReportMetric(float64(r.runtime)/float64(max(r.runs, 1)), "bpf_ns/run")
	b.ReportMetric(float64(r.nft)/r.elapsed.Seconds(), "drops/s")
	b.ReportMetric(float64(r.runtime)/r.elapsed.Seconds()*100/1e9, "bpf_cpu_%")
	b.ReportMetric(float64(r.records), "ring_records")
	b.ReportMetric(float64(r.ringDrops), "ring_drops")
	b.ReportMetric(float64(r.keyless), "keyless")
	b.ReportMetric(0, "ns/op")
}
