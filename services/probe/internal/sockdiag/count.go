package sockdiag

import (
	"bytes"
	"os"
	"strconv"
)

// CountHint is the number of TCP sockets the kernel has in use (hashed:
// listening, connecting, connected, closing; not TIME_WAIT), IPv4 and IPv6,
// from /proc/net/sockstat and sockstat6; 0 when unknown. It sizes a Dump's
// slice up front: grown by append, a 100k-socket dump would hold its
// array about twice over while copying and leave the old copies behind.
func CountHint() int {
	n := 0
	for _, f := range [...]struct{ path, prefix string }{
		{"/proc/net/sockstat", "TCP:"},
		{"/proc/net/sockstat6", "TCP6:"},
	} {
		if b, err := os.ReadFile(f.path); err == nil {
			n += sockstatInuse(b, f.prefix)
		}
	}
	return n
}

// sockstatInuse returns the "inuse" value of the line starting with prefix
// ("TCP: inuse 18 orphan 0 tw 50496 alloc 19 mem 1057"), 0 when absent.
func sockstatInuse(b []byte, prefix string) int {
	for line := range bytes.Lines(b) {
		rest, ok := bytes.CutPrefix(line, []byte(prefix))
		if !ok {
			continue
		}
		f := bytes.Fields(rest)
		for i := 0; i+1 < len(f); i += 2 {
			if string(f[i]) == "inuse" {
				if n, err := strconv.Atoi(string(f[i+1])); err == nil && n > 0 {
					return n
				}
			}
		}
	}
	return 0
}
