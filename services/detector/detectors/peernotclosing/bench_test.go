package peernotclosing

import (
	"testing"
	"time"

	"github.com/netpulse/netpulse/lib/eventpb"
	"github.com/netpulse/netpulse/services/detector/detect"
	"github.com/netpulse/netpulse/services/detector/detectors/internal/dtest"
)

// BenchmarkObserve: a busy healthy host's snapshots (3000 connections/s),
// every 15 s, one evaluation per second.
func BenchmarkObserve(b *testing.B) {
	tr := dtest.Healthy(3, 2*time.Minute)
	tr.ServerConns, tr.ClientConns = 2000, 1000
	steps := tr.Stream().Steps(dtest.T0, dtest.At(2*time.Minute), time.Second, 100*time.Millisecond, kinds)
	dtest.Bench(b, steps, func() detect.Instance { return newInstance(b, nil) })
}

// BenchmarkHotPath: its worst case: a snapshot every second listing 1000
// endpoint groups (the probe's default snapshot.max_endpoints), each with
// FIN_WAIT2 sockets, 200 of them stuck and firing.
func BenchmarkHotPath(b *testing.B) {
	var s dtest.Stream
	for sec := range 60 {
		sn := snapshot(time.Duration(sec) * time.Second)
		sn.IntervalMs = 1000
		for r := range 1000 {
			g := &eventpb.EndpointGroup{Family: eventpb.Family_FAMILY_IPV4, Saddr: dtest.LocalIP, Daddr: dtest.RemoteIP(r),
				Dport: 443, Pid: 900, Comm: "uploader", FinWait2: 3, FinWait2OldestUs: 100_000, TimeWait: 500}
			if r%5 == 0 {
				g.FinWait2, g.FinWait2OldestUs = 40, 30_000_000
			}
			sn.Endpoints = append(sn.Endpoints, g)
		}
		s.Snapshot(sn)
	}
	steps := s.Steps(dtest.T0, dtest.At(time.Minute), time.Second, 100*time.Millisecond, kinds)
	dtest.Bench(b, steps, func() detect.Instance { return newInstance(b, nil) })
}
