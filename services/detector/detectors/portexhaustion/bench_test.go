package portexhaustion

import (
	"fmt"
	"testing"
	"time"

	"github.com/netpulse/netpulse/lib/eventpb"
	"github.com/netpulse/netpulse/services/detector/detect"
	"github.com/netpulse/netpulse/services/detector/detectors/internal/dtest"
)

// BenchmarkObserve: a busy healthy host (3000 connections/s, 1000 of them
// to 20 remotes, leaving ~3000 TIME_WAIT sockets each), its errors and
// snapshots every 15 s, batches of 100 ms, one evaluation per second.
func BenchmarkObserve(b *testing.B) {
	tr := dtest.Healthy(3, 2*time.Minute)
	tr.ServerConns, tr.ClientConns = 2000, 1000
	steps := tr.Stream().Steps(dtest.T0, dtest.At(2*time.Minute), time.Second, 100*time.Millisecond, kinds)
	dtest.Bench(b, steps, func() detect.Instance { return newInstance(b, nil) })
}

// BenchmarkHotPath: its worst case: 20k connects/s failing with
// EADDRNOTAVAIL towards 1000 remotes (every one firing), and snapshots
// every second listing 1000 endpoint groups, 200 of them near exhaustion.
func BenchmarkHotPath(b *testing.B) {
	var s dtest.Stream
	for i := range 20000 * 60 {
		sk := dtest.Sock{ID: uint64(i + 1), Pid: 200, Comm: "worker", Local: "10.0.0.10:0",
			Peer: fmt.Sprintf("10.1.%d.%d:5432", i%1000/250, i%250+1), Owner: eventpb.OwnerSource_OWNER_SOURCE_TASK}
		e := sk.State(dtest.At(time.Duration(i)*50*time.Microsecond), dtest.SynSent, dtest.Close)
		e.Type, e.Error = eventpb.EventType_EVENT_TYPE_CONNECT_FAILED, errAddrNotAvail
		s.Event(e)
	}
	for sec := range 60 {
		sn := snapshot(time.Duration(sec)*time.Second, "10.2.0.1:443", 100, 1, 10, 0)
		sn.IntervalMs = 1000
		for r := range 1000 {
			tw := uint32(3000)
			if r%5 == 0 {
				tw = 25000
			}
			sn.Endpoints = append(sn.Endpoints, &eventpb.EndpointGroup{Family: eventpb.Family_FAMILY_IPV4,
				Saddr: dtest.LocalIP, Daddr: dtest.RemoteIP(r), Dport: 443, Pid: 200, Comm: "worker",
				TimeWait: tw, Live: 5, TimeWaitEntered: tw / 60})
		}
		s.Snapshot(sn)
	}
	steps := s.Steps(dtest.T0, dtest.At(time.Minute), time.Second, 100*time.Millisecond, kinds)
	dtest.Bench(b, steps, func() detect.Instance { return newInstance(b, nil) })
}
