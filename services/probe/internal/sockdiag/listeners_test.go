package sockdiag

import (
	"testing"

	"golang.org/x/sys/unix"

	"github.com/netpulse/netpulse/lib/testutil/netstat"
	"github.com/netpulse/netpulse/lib/testutil/priv"
)

// A listener that never accepts, with a backlog of 1, flooded with
// connects: its own drop counter, as DumpListeners reads it, grows by what
// the kernel counts in TcpExtListenOverflows, and its queue is full.
func TestDumpListenersDrops(t *testing.T) {
	priv.RequireRoot(t)
	ln, err := unix.Socket(unix.AF_INET, unix.SOCK_STREAM, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(ln)
	if err := unix.Bind(ln, &unix.SockaddrInet4{Addr: [4]byte{127, 0, 0, 1}}); err != nil {
		t.Fatal(err)
	}
	if err := unix.Listen(ln, 1); err != nil {
		t.Fatal(err)
	}
	sa, err := unix.Getsockname(ln)
	if err != nil {
		t.Fatal(err)
	}
	port := sa.(*unix.SockaddrInet4).Port
	d, err := NewDumper()
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	find := func() Socket {
		t.Helper()
		socks, err := d.DumpListeners(nil)
		if err != nil {
			t.Fatal(err)
		}
		for _, s := range socks {
			if s.State != StateListen {
				t.Fatalf("DumpListeners returned a socket in state %d", s.State)
			}
			if int(s.Src.Port()) == port {
				if !s.HasDrops {
					t.Fatalf("listener %v without its drop counter", s.Src)
				}
				return s
			}
		}
		t.Fatalf("listener on port %d not dumped", port)
		return Socket{}
	}
	before, overflowsBefore := find(), netstat.TcpExt(t, "ListenOverflows")
	if before.Drops != 0 || before.WQueue != 1 {
		t.Fatalf("fresh listener: drops %d, backlog %d", before.Drops, before.WQueue)
	}

	const conns = 40
	for range conns {
		fd, err := unix.Socket(unix.AF_INET, unix.SOCK_STREAM|unix.SOCK_NONBLOCK, 0)
		if err != nil {
			t.Fatal(err)
		}
		if err := unix.Connect(fd, &unix.SockaddrInet4{Port: port, Addr: [4]byte{127, 0, 0, 1}}); err != nil && err != unix.EINPROGRESS {
			t.Fatalf("connect: %v", err)
		}
		defer unix.Close(fd)
	}
	// Loopback delivers each SYN within the connect call: the counters
	// are final once the connects returned, before any SYN retransmit.
	after, overflows := find(), netstat.TcpExt(t, "ListenOverflows")
	got, want := uint64(after.Drops-before.Drops), overflows-overflowsBefore
	if got == 0 || got != want {
		t.Fatalf("listener dropped %d, TcpExtListenOverflows grew by %d", got, want)
	}
	if after.RQueue != after.WQueue+1 && after.RQueue != after.WQueue {
		t.Errorf("accept queue %d of %d: want it full", after.RQueue, after.WQueue)
	}
	t.Logf("%d connects: listener sk_drops +%d, TcpExtListenOverflows +%d, accept queue %d/%d", conns, got, want, after.RQueue, after.WQueue)
}
