package tracer

import (
	"io"
	"net"
	"strings"
	"testing"
	"unsafe"

	"github.com/cilium/ebpf"

	"github.com/netpulse/netpulse/lib/testutil/priv"
)

// TestCounterLayout: the Go counter indexes and record types match the C
// enums (the counters array is sized by COUNTER_MAX; the record type is
// the first field of both records).
func TestCounterLayout(t *testing.T) {
	spec, err := loadTcpstate()
	if err != nil {
		t.Fatal(err)
	}
	if got := spec.Maps[tcpstateMapCounters].MaxEntries; got != counterMax {
		t.Errorf("counters map has %d entries, Go expects %d", got, counterMax)
	}
	var ev tcpstateEvent
	var cn tcpstateConn
	if unsafe.Offsetof(ev.Type) != 0 || unsafe.Offsetof(cn.Type) != 0 {
		t.Error("record type is not the first field")
	}
	if eventSize == connSize {
		t.Error("event and connection records have the same size")
	}
	for r := RecordType(1); r < NumRecordTypes; r++ {
		if r.String() == "" || strings.HasPrefix(r.String(), "record_type_") {
			t.Errorf("record type %d has no name", r)
		}
	}
}

// The names are stats keys (submitted/dropped per type): they stay as
// they were when they come from wire.
func TestRecordTypeNames(t *testing.T) {
	want := []string{"record_type_0", "state_change", "retransmit", "synack_retransmit",
		"reset_sent", "reset_received", "socket_error", "connect_failed", "conn", "record_type_9"}
	for r, name := range want {
		if got := RecordType(r).String(); got != name {
			t.Errorf("RecordType(%d).String() = %q, want %q", r, got, name)
		}
	}
}

// BenchmarkMapUsage measures MapUsage with a full default-size socket map
// (filled from user space with fake entries).
func BenchmarkMapUsage(b *testing.B) {
	priv.RequireRoot(b)
	tr, err := Open(Config{})
	if err != nil {
		b.Fatal(err)
	}
	defer tr.Close()
	m := tr.maps.Maps[tcpstateMapSocks]
	keys := make([]uint64, DefaultSocketMapEntries)
	vals := make([]tcpstateSockInfo, DefaultSocketMapEntries)
	for i := range keys {
		keys[i] = uint64(i + 1)
	}
	if _, err := m.BatchUpdate(keys, vals, &ebpf.BatchOptions{}); err != nil {
		b.Fatal(err)
	}
	b.ResetTimer()
	for b.Loop() {
		u, err := tr.MapUsage()
		if err != nil {
			b.Fatal(err)
		}
		if u[0].Live < DefaultSocketMapEntries*9/10 {
			b.Fatalf("live %d, want about %d", u[0].Live, DefaultSocketMapEntries)
		}
	}
}

// BenchmarkSendRecv is a 64-byte loopback ping-pong without and with the
// tracer: what the send/recv owner hooks and the rest cost a chatty
// connection.
func BenchmarkSendRecv(b *testing.B) {
	for _, traced := range []bool{false, true} {
		name := "untraced"
		if traced {
			name = "traced"
		}
		b.Run(name, func(b *testing.B) {
			if traced {
				priv.RequireRoot(b)
				tr, err := Open(Config{})
				if err != nil {
					b.Fatal(err)
				}
				defer tr.Close()
			}
			ln, err := net.Listen("tcp4", "127.0.0.1:0")
			if err != nil {
				b.Fatal(err)
			}
			defer ln.Close()
			c, err := net.Dial("tcp4", ln.Addr().String())
			if err != nil {
				b.Fatal(err)
			}
			defer c.Close()
			sc, err := ln.Accept()
			if err != nil {
				b.Fatal(err)
			}
			defer sc.Close()
			go func() { _, _ = io.Copy(sc, sc) }()
			buf := make([]byte, 64)
			for b.Loop() {
				if _, err := c.Write(buf); err != nil {
					b.Fatal(err)
				}
				if _, err := io.ReadFull(c, buf); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
