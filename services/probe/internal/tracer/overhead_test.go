package tracer

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"net"
	"os/exec"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/netpulse/netpulse/lib/eventpb"
	"github.com/netpulse/netpulse/lib/testutil/priv"
)

var overhead = flag.Duration("overhead", 0, "measure the loopback connection rate for this long per mode (root); 0 skips")

// TestOverhead compares the loopback connection rate without a probe, under
// libbpf-tools tcpstates, and under this tracer with and without batched
// wakeups. It measures, it does not assert: run it by hand with -overhead.
func TestOverhead(t *testing.T) {
	if *overhead == 0 {
		t.Skip("a measurement: run with -overhead=3s -v")
	}
	priv.RequireRoot(t)
	modes := []struct {
		name  string
		start func(t *testing.T) (stop func() string)
	}{
		{"no probe", func(*testing.T) func() string { return func() string { return "" } }},
		{"tcpstates >/dev/null", startTcpstates},
		{"tracer, default wakeups", func(t *testing.T) func() string { return startTracer(t, 0) }},
		{"tracer, batched wakeups", func(t *testing.T) func() string {
			return startTracer(t, wakeupBytes(DefaultRingBufferBytes))
		}},
	}
	for round := 1; round <= 2; round++ {
		for _, m := range modes {
			stop := m.start(t)
			rate := connectRate(t, *overhead)
			t.Logf("round %d %-28s %8.0f conn/s  %s", round, m.name, rate, stop())
		}
	}
}

func startTcpstates(t *testing.T) func() string {
	cmd := exec.Command("tcpstates")
	if err := cmd.Start(); err != nil {
		t.Skipf("tcpstates: %v", err)
	}
	time.Sleep(time.Second) // no readiness signal from tcpstates; a measurement, not a test
	return func() string {
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
		return ""
	}
}

func startTracer(t *testing.T, wakeup uint64) func() string {
	cfg := Config{}.withDefaults()
	tr, err := open(cfg, wakeup)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	var n atomic.Uint64
	done := make(chan error, 1)
	go func() {
		dec := NewDecoder()
		var ev eventpb.Event
		done <- tr.Read(ctx, func(raw []byte) {
			if dec.Decode(raw, &ev) == nil {
				n.Add(1)
			}
		})
	}()
	return func() string {
		cancel()
		if err := <-done; err != nil {
			t.Error(err)
		}
		c, _ := tr.Counters()
		tr.Close()
		return fmt.Sprintf("events %d, dropped %d", n.Load(), c.Dropped)
	}
}

// connectRate runs 8 dialers against a loopback listener for d and returns
// connections per second.
func connectRate(t *testing.T, d time.Duration) float64 {
	ln, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			c.Close()
		}
	}()
	ctx, cancel := context.WithTimeout(context.Background(), d)
	defer cancel()
	var total atomic.Uint64
	var wg sync.WaitGroup
	for range 8 {
		wg.Go(func() {
			for ctx.Err() == nil {
				c, err := net.Dial("tcp4", ln.Addr().String())
				if err != nil {
					if !errors.Is(err, context.DeadlineExceeded) {
						t.Errorf("dial: %v", err)
					}
					return
				}
				c.Close()
				total.Add(1)
			}
		})
	}
	start := time.Now()
	wg.Wait()
	ln.Close()
	return float64(total.Load()) / time.Since(start).Seconds()
}
