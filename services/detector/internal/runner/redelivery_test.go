package runner

import (
	"sync/atomic"
	"testing"

	"github.com/netpulse/netpulse/services/detector/internal/lifecycle"
)

// A batch lost on a dropped connection comes back after ack_wait, behind
// later batches of its host: it is observed once; a redelivery of a batch
// already observed is not observed again. (Judged by "at most the last
// sequence", the late batch would be dropped as a duplicate.)
func TestOutOfOrderRedeliveryObservedOnce(t *testing.T) {
	r := benchRunner(1)
	w := r.workers[0]
	inst := &nopDetector{}
	w.hosts["web-1"] = &hostState{inst: inst, tr: lifecycle.New(lifecycle.Settings{Detector: "nop", Host: "web-1"})}
	data := sampleBatch("web-1", 1)
	var acked atomic.Uint64
	deliver := func(seq uint64) {
		w.handle(delivery{msg: &fakeMsg{acked: &acked}, subject: "netpulse.events.web-1.state", host: "web-1", kind: "state", seq: seq, data: data, state: 1})
	}
	for _, seq := range []uint64{10, 12, 13, 11, 12, 10, 14} { // 11 late; 12 and 10 again
		deliver(seq)
	}
	if inst.events != 5 || r.c.Duplicates.Load() != 2 || acked.Load() != 7 {
		t.Errorf("observed %d batches, %d duplicates, %d acked; want 5, 2, 7", inst.events, r.c.Duplicates.Load(), acked.Load())
	}
}

func TestSeqRing(t *testing.T) {
	var r seqRing
	for s := uint64(1000); s < 1000+seenSeqs; s++ {
		r.add(s)
	}
	for _, c := range []struct {
		seq  uint64
		want bool
	}{{1000, true}, {1000 + seenSeqs - 1, true}, {999, true}, {1000 + seenSeqs, false}} {
		if got := r.covers(c.seq); got != c.want {
			t.Errorf("covers(%d) = %v, want %v", c.seq, got, c.want)
		}
	}
	r.add(5000) // 1000 leaves: now unknown... but older than the oldest held
	if !r.covers(1000) || r.covers(4999) {
		t.Errorf("after 5000: covers(1000) %v (want true: too old), covers(4999) %v (want false)", r.covers(1000), r.covers(4999))
	}
}
