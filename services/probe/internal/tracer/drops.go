package tracer

import (
	"errors"
	"fmt"
	"net/netip"
	"strconv"
	"strings"
	"sync/atomic"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/btf"
	"golang.org/x/sys/unix"
)

// Drop is the TCP packets the kernel dropped with one key (skb:kfree_skb)
// since the previous Drops call.
type Drop struct {
	// Reason is the kernel's drop reason without SKB_DROP_REASON_ (see
	// DropReasons).
	Reason string
	Family uint16 // AF_INET or AF_INET6
	// Local is this host's end of the packet, Remote the other: for a
	// packet on its way in, its destination and its source. One key per
	// service, not per connection: the client's port is 0 (the remote's
	// when this host listens on the local port, else the local one when
	// it is in the ephemeral range, ip_local_port_range at Open). Both
	// are invalid for the drops counted without their key (the map was
	// full).
	Local, Remote netip.AddrPort
	Ingress       bool
	Owner         Owner // PID 0: unknown
	Count         uint64
}

// dropBatch is how many entries one batch syscall drains.
const dropBatch = 1024

// drops is the user-space half of the kernel's double-buffered drop maps.
type drops struct {
	maps    [2]*ebpf.Map // drops_a, drops_b
	active  atomic.Int32 // index in maps of the one in drop_slot (MapUsage reads it)
	slot    *ebpf.Map
	keyless *ebpf.Map
	// keylessSeen: the per-reason totals of drops_keyless at the last
	// Drops call (the kernel never resets them).
	keylessSeen []uint64
	reasons     DropReasons

	keys []tcpstateDropKey
	vals []tcpstateDropValue
}

// Drops swaps the kernel's active drop map for the idle one and hands fn
// every key the swapped-out map counted, then empties it: an exact count
// per interval, since the swap waits for running programs to finish (a
// map-in-map update does synchronize_rcu). fn's Drop is only valid during
// the call. Drops counted without their key come as entries with invalid
// addresses, one per reason. Not safe for concurrent use.
func (t *Tracer) Drops(fn func(d *Drop)) error {
	d := &t.drops
	if d.slot == nil {
		return nil // kfree_skb not attached
	}
	next := 1 - d.active.Load()
	// A map-in-map takes BPF_ANY only.
	if err := d.slot.Update(uint32(0), d.maps[next], ebpf.UpdateAny); err != nil {
		return fmt.Errorf("tracer: swap drop maps: %w", err)
	}
	d.active.Store(next)
	if err := d.drain(d.maps[1-next], fn); err != nil {
		return err
	}
	return d.keylessDrops(fn)
}

// drain hands fn every entry of m and deletes it. Nothing writes to m.
func (d *drops) drain(m *ebpf.Map, fn func(*Drop)) error {
	if d.keys == nil {
		d.keys = make([]tcpstateDropKey, dropBatch)
		d.vals = make([]tcpstateDropValue, dropBatch)
	}
	var out Drop
	emit := func(k *tcpstateDropKey, v *tcpstateDropValue) {
		out = Drop{Reason: d.reasons.Name(k.Reason), Family: k.Family, Ingress: k.Ingress != 0, Count: v.Count,
			Local: addrPort(k.Family, k.Laddr, k.Lport), Remote: addrPort(k.Family, k.Raddr, k.Rport)}
		if v.Owner.Tgid != 0 {
			out.Owner = Owner{PID: v.Owner.Tgid, CgroupID: v.Owner.CgroupId}
			setComm(&out.Owner.Comm, v.Owner.Comm[:])
		}
		fn(&out)
	}
	var cursor ebpf.MapBatchCursor
	for {
		n, err := m.BatchLookupAndDelete(&cursor, d.keys, d.vals, nil)
		for i := range n {
			emit(&d.keys[i], &d.vals[i])
		}
		switch {
		case errors.Is(err, ebpf.ErrKeyNotExist):
			return nil
		case errors.Is(err, ebpf.ErrNotSupported):
			return d.drainKeys(m, emit)
		case err != nil:
			return fmt.Errorf("tracer: drain drop map: %w", err)
		}
	}
}

// drainKeys is drain for kernels without batch operations on hash maps.
func (d *drops) drainKeys(m *ebpf.Map, emit func(*tcpstateDropKey, *tcpstateDropValue)) error {
	var k tcpstateDropKey
	var v tcpstateDropValue
	var keys []tcpstateDropKey
	it := m.Iterate()
	for it.Next(&k, &v) {
		emit(&k, &v)
		keys = append(keys, k)
	}
	if err := it.Err(); err != nil {
		return fmt.Errorf("tracer: read drop map: %w", err)
	}
	for i := range keys {
		if err := m.Delete(&keys[i]); err != nil && !errors.Is(err, ebpf.ErrKeyNotExist) {
			return fmt.Errorf("tracer: empty drop map: %w", err)
		}
	}
	return nil
}

// keylessDrops hands fn, per reason, the drops counted without their key
// since the last call.
func (d *drops) keylessDrops(fn func(*Drop)) error {
	var perCPU []uint64
	for reason := range d.keylessSeen {
		if err := d.keyless.Lookup(uint32(reason), &perCPU); err != nil {
			return fmt.Errorf("tracer: read keyless drops: %w", err)
		}
		var total uint64
		for _, v := range perCPU {
			total += v
		}
		if total > d.keylessSeen[reason] {
			fn(&Drop{Reason: d.reasons.Name(uint32(reason)), Count: total - d.keylessSeen[reason]})
			d.keylessSeen[reason] = total
		}
	}
	return nil
}

// dropMapUsage is the fill of the active drop map (emptied at every Drops
// call); its Evictions are the drops since Open that found it full and
// were counted without their key.
func (t *Tracer) dropMapUsage(keyless uint64) (MapUsage, error) {
	d := &t.drops
	live, err := countEntries[tcpstateDropKey, tcpstateDropValue](d.maps[d.active.Load()])
	if err != nil {
		return MapUsage{}, fmt.Errorf("tracer: count drop map: %w", err)
	}
	return MapUsage{Name: "drop", Capacity: uint64(d.maps[0].MaxEntries()), Live: live, Evictions: keyless}, nil
}

func addrPort(family uint16, a [16]uint8, port uint16) netip.AddrPort {
	switch family {
	case unix.AF_INET:
		return netip.AddrPortFrom(netip.AddrFrom4([4]byte(a[:4])), port)
	case unix.AF_INET6:
		return netip.AddrPortFrom(netip.AddrFrom16(a), port)
	}
	return netip.AddrPort{}
}

// DropReasons names the running kernel's drop reasons (enum
// skb_drop_reason in its BTF: the numbering differs between kernels).
type DropReasons struct {
	names map[uint32]string
}

// reasonPrefix is what every enum skb_drop_reason constant starts with.
const reasonPrefix = "SKB_DROP_REASON_"

// NotSpecified is the name of a drop the kernel gave no reason for, or
// every drop on a kernel whose tracepoint has no reason field.
const NotSpecified = "NOT_SPECIFIED"

// KernelDropReasons reads the names from the running kernel's BTF; with
// none there, every reason is named by number.
func KernelDropReasons() (DropReasons, error) {
	spec, err := btf.LoadKernelSpec()
	if err != nil {
		return DropReasons{}, fmt.Errorf("tracer: kernel BTF: %w", err)
	}
	return dropReasonsFrom(spec)
}

func dropReasonsFrom(spec *btf.Spec) (DropReasons, error) {
	var e *btf.Enum
	if err := spec.TypeByName("skb_drop_reason", &e); err != nil {
		if errors.Is(err, btf.ErrNotFound) {
			return DropReasons{}, nil
		}
		return DropReasons{}, fmt.Errorf("tracer: enum skb_drop_reason: %w", err)
	}
	r := DropReasons{names: make(map[uint32]string, len(e.Values))}
	for _, v := range e.Values {
		if name, ok := strings.CutPrefix(v.Name, reasonPrefix); ok {
			r.names[uint32(v.Value)] = name
		}
	}
	return r, nil
}

// Name is the reason's name: 0 (the kernel's "not dropped yet", which
// the tracepoint never carries, and what a kernel without the field gives)
// is NOT_SPECIFIED, a number the BTF does not name REASON_<n>.
func (r DropReasons) Name(reason uint32) string {
	if reason == 0 {
		return NotSpecified
	}
	if n, ok := r.names[reason]; ok {
		return n
	}
	return "REASON_" + strconv.FormatUint(uint64(reason), 10)
}
