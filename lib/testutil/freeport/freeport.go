// Package freeport picks loopback TCP ports for tests' servers. A port is
// free when picked; a server started on it later can still lose a race,
// which its start-up retries cover.
package freeport

import (
	"net"
	"testing"
)

// Get is a loopback port free a moment ago.
func Get(t testing.TB) int {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port
}
