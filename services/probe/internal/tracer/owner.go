package tracer

import (
	"fmt"

	"github.com/cilium/ebpf"
	"golang.org/x/sys/unix"
)

// Owner is the process a socket belongs to.
type Owner struct {
	PID      uint32 // tgid
	Comm     string // up to 15 bytes are kept
	CgroupID uint64 // cgroup v2 id
}

// SeedListener remembers o as the owner of the listening port (family
// AF_INET 2 or AF_INET6 10) in the probe's own network namespace, for a
// listener that predates the probe: connections it has not accepted yet
// then carry o with owner_source LISTENER instead of UNKNOWN. The kernel
// side replaces the entry when a socket starts listening on that port and
// deletes it when the port's listener closes.
func (t *Tracer) SeedListener(family uint16, port uint16, o Owner) error {
	if family != unix.AF_INET && family != unix.AF_INET6 {
		return fmt.Errorf("tracer: seed listener: family %d is neither AF_INET (2) nor AF_INET6 (10)", family)
	}
	if port == 0 {
		return fmt.Errorf("tracer: seed listener: port 0")
	}
	k := tcpstateListenKey{Netns: t.netns, Family: family, Port: port}
	var v tcpstateListenOwner
	v.Owner.Tgid = o.PID
	v.Owner.CgroupId = o.CgroupID
	for i := 0; i < len(v.Owner.Comm)-1 && i < len(o.Comm); i++ {
		v.Owner.Comm[i] = int8(o.Comm[i])
	}
	m := t.maps.Maps[tcpstateMapListeners]
	err := m.Update(&k, &v, ebpf.UpdateNoExist)
	if err == nil {
		t.listenerSeeds.Add(1)
		return nil
	}
	if err := m.Update(&k, &v, ebpf.UpdateAny); err != nil {
		return fmt.Errorf("tracer: seed listener %d/%d: %w", family, port, err)
	}
	return nil
}
