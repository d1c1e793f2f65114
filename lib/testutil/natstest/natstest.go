// Package natstest runs a real embedded NATS server with JetStream for tests:
// random port, temp store directory, shut down at cleanup.
package natstest

import (
	"errors"
	"net"
	"strconv"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// Start runs a JetStream-enabled server for the test t.
func Start(t testing.TB) *server.Server {
	t.Helper()
	s, err := New(t.TempDir())
	if err != nil {
		t.Fatalf("start NATS: %v", err)
	}
	t.Cleanup(s.Shutdown)
	return s
}

// New runs a JetStream-enabled server storing under dir, on a random
// loopback port. The caller shuts it down.
func New(dir string) (*server.Server, error) { return NewAt(dir, "127.0.0.1:-1") }

// NewAt is New on a given host:port, e.g. to restart a server where it was.
func NewAt(dir, hostPort string) (*server.Server, error) {
	host, portStr, err := net.SplitHostPort(hostPort)
	if err != nil {
		return nil, err
	}
	port, err := strconv.Atoi(portStr)
	if err != nil {
		return nil, err
	}
	s, err := server.NewServer(&server.Options{
		Host:      host,
		Port:      port,
		JetStream: true,
		StoreDir:  dir,
		NoLog:     true,
		NoSigs:    true,
		// Benchmarks push large batches; keep the default 1 MiB payload limit
		// explicit so tests see what production sees.
		MaxPayload: 1 << 20,
	})
	if err != nil {
		return nil, err
	}
	go s.Start()
	if !s.ReadyForConnections(10 * time.Second) {
		s.Shutdown()
		return nil, errNotReady
	}
	return s, nil
}

var errNotReady = errors.New("NATS server not ready after 10s")

// Connect opens a client connection to s with a JetStream handle; the
// connection is closed when t ends.
func Connect(t testing.TB, s *server.Server) (*nats.Conn, jetstream.JetStream) {
	t.Helper()
	nc, err := nats.Connect(s.ClientURL())
	if err != nil {
		t.Fatalf("connect to NATS: %v", err)
	}
	t.Cleanup(nc.Close)
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatalf("jetstream: %v", err)
	}
	return nc, js
}
