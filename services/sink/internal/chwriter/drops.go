package chwriter

import (
	"time"

	"github.com/netpulse/netpulse/lib/eventpb"
	"github.com/netpulse/netpulse/lib/wire"
)

// dropRows are tcp_drops rows: one per DropCount.
type dropRows struct {
	bufState
	time, start                      []time.Time
	timeNs, startNs                  []uint64
	host, reason, saddr, daddr, comm []string
	probeID                          []string
	source, family                   []int8
	sport, dport                     []uint16
	ingress                          []uint8
	pid, acceptQueue, backlog        []uint32
	cgroup, count, seq, sSeq         []uint64
}

func (r *dropRows) add(host, probeID string, streamSeq, batchSeq uint64, d *eventpb.DropCount, addrs *addrCache) {
	r.time = append(r.time, time.Unix(0, int64(d.EndUnixNano)).UTC())
	r.timeNs = append(r.timeNs, d.EndUnixNano)
	r.start = append(r.start, time.Unix(0, int64(d.StartUnixNano)).UTC())
	r.startNs = append(r.startNs, d.StartUnixNano)
	r.host = append(r.host, host)
	r.source = append(r.source, wire.DropSources.Code(d.Source))
	r.reason = append(r.reason, d.Reason)
	r.family = append(r.family, wire.Families.Code(d.Family))
	r.saddr = append(r.saddr, addrs.string(d.Saddr))
	r.sport = append(r.sport, uint16(d.Sport))
	r.daddr = append(r.daddr, addrs.string(d.Daddr))
	r.dport = append(r.dport, uint16(d.Dport))
	r.ingress = append(r.ingress, b2u(d.Ingress))
	r.pid = append(r.pid, d.Pid)
	r.comm = append(r.comm, d.Comm)
	r.cgroup = append(r.cgroup, d.CgroupId)
	r.count = append(r.count, d.Count)
	r.acceptQueue = append(r.acceptQueue, d.AcceptQueue)
	r.backlog = append(r.backlog, d.Backlog)
	r.probeID = append(r.probeID, probeID)
	r.seq = append(r.seq, batchSeq)
	r.sSeq = append(r.sSeq, streamSeq)
	r.added(streamSeq)
}

func (r *dropRows) values() []any {
	return []any{
		r.time, r.timeNs, r.start, r.startNs, r.host, r.source, r.reason, r.family,
		r.saddr, r.sport, r.daddr, r.dport, r.ingress, r.pid, r.comm, r.cgroup,
		r.count, r.acceptQueue, r.backlog, r.probeID, r.seq, r.sSeq,
	}
}

func (r *dropRows) reset() {
	r.resetState()
	r.time, r.start, r.timeNs, r.startNs = r.time[:0], r.start[:0], r.timeNs[:0], r.startNs[:0]
	r.host, r.reason, r.saddr, r.daddr, r.comm = r.host[:0], r.reason[:0], r.saddr[:0], r.daddr[:0], r.comm[:0]
	r.probeID, r.source, r.family = r.probeID[:0], r.source[:0], r.family[:0]
	r.sport, r.dport, r.ingress = r.sport[:0], r.dport[:0], r.ingress[:0]
	r.pid, r.acceptQueue, r.backlog = r.pid[:0], r.acceptQueue[:0], r.backlog[:0]
	r.cgroup, r.count, r.seq, r.sSeq = r.cgroup[:0], r.count[:0], r.seq[:0], r.sSeq[:0]
}
