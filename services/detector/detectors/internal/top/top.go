// Package top finds the processes behind a key's events in constant memory:
// a space-saving count of the three most frequent owners, halved now and
// then so that the main process is a recent one.
package top

import "github.com/netpulse/netpulse/lib/eventpb"

// Owner is a process and its (approximate) weight.
type Owner struct {
	Pid  uint32 `json:"pid"`
	Comm string `json:"comm"`
	N    uint32 `json:"weight"`
}

// Owners counts the main processes.
type Owners [3]Owner

// Name is the owner detectors report: an unknown owner (the event ran in
// softirq context on behalf of nobody the probe knew) is pid 0 "unknown",
// never the interrupted task.
func Name(pid uint32, comm string, src eventpb.OwnerSource) (uint32, string) {
	if src == eventpb.OwnerSource_OWNER_SOURCE_UNKNOWN {
		return 0, "unknown"
	}
	return pid, comm
}

// Add counts one event of (pid, comm).
func (o *Owners) Add(pid uint32, comm string) {
	m := 0
	for i := range o {
		e := &o[i]
		if e.N > 0 && e.Pid == pid && e.Comm == comm {
			e.N++
			return
		}
		if e.N < o[m].N {
			m = i
		}
	}
	o[m] = Owner{Pid: pid, Comm: comm, N: o[m].N + 1}
}

// Decay halves the weights.
func (o *Owners) Decay() {
	for i := range o {
		o[i].N /= 2
	}
}

// Main is the heaviest owner; ok is false when none was counted.
func (o *Owners) Main() (Owner, bool) {
	m := o[0]
	for _, e := range o[1:] {
		if e.N > m.N {
			m = e
		}
	}
	return m, m.N > 0
}

// List is the counted owners, heaviest first.
func (o *Owners) List() []Owner {
	var l []Owner
	for _, e := range o {
		if e.N > 0 {
			l = append(l, e)
		}
	}
	for i := 1; i < len(l); i++ {
		for j := i; j > 0 && l[j].N > l[j-1].N; j-- {
			l[j], l[j-1] = l[j-1], l[j]
		}
	}
	return l
}
