package netfault

import (
	"net"
	"strconv"
	"testing"
	"time"
)

// The first SYN to the port is dropped: the connect waits for the SYN
// retransmit (1 s initial RTO), while another port connects at once.
func TestDropFirstSYN(t *testing.T) {
	ln, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			c.Close()
		}
	}()
	port := ln.Addr().(*net.TCPAddr).Port
	DropFirstSYN(t, "", port)
	start := time.Now()
	c, err := net.DialTimeout("tcp4", "127.0.0.1:"+strconv.Itoa(port), 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	c.Close()
	if took := time.Since(start); took < 900*time.Millisecond || took > 3*time.Second {
		t.Errorf("connect took %v, want about 1 s (one SYN retransmit)", took)
	}
}

// The link carries traffic between the host and the namespace.
func TestLink(t *testing.T) {
	l := NewLink(t)
	ln, err := net.Listen("tcp4", l.HostAddr+":0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		c, err := ln.Accept()
		if err == nil {
			_, _ = c.Write([]byte("hi"))
			c.Close()
		}
	}()
	out := l.Exec(t, "python3", "-c", "import socket,sys; s=socket.create_connection((sys.argv[1], int(sys.argv[2]))); print(s.recv(2).decode())",
		l.HostAddr, strconv.Itoa(ln.Addr().(*net.TCPAddr).Port))
	if out != "hi\n" {
		t.Errorf("got %q from the namespace", out)
	}
}
