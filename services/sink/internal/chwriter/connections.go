package chwriter

import (
	"time"

	"github.com/netpulse/netpulse/lib/eventpb"
	"github.com/netpulse/netpulse/lib/wire"
)

// connRows are tcp_connections rows.
type connRows struct {
	bufState
	time, start                                    []time.Time
	timeNs, startNs                                []uint64
	host, comm, saddr, daddr, probeID              []string
	pid, segsOut, segsIn, retrans, srtt, hsRetrans []uint32
	owner, side, family, lastState                 []int8
	sport, dport                                   []uint16
	errno                                          []int32
	cgroup, durationUs, bytesSent, bytesRecv, hsUs []uint64
	sockID, cookie, seq, sSeq                      []uint64
}

func (r *connRows) add(host, probeID string, streamSeq uint64, c *eventpb.Connection, addrs *addrCache) {
	r.time = append(r.time, time.Unix(0, int64(c.TimeUnixNano)).UTC())
	r.timeNs = append(r.timeNs, c.TimeUnixNano)
	r.host = append(r.host, host)
	r.pid = append(r.pid, c.Pid)
	r.comm = append(r.comm, c.Comm)
	r.cgroup = append(r.cgroup, c.CgroupId)
	r.owner = append(r.owner, wire.OwnerSources.Code(c.OwnerSource))
	r.side = append(r.side, wire.Sides.Code(c.Side))
	r.family = append(r.family, wire.Families.Code(c.Family))
	r.saddr = append(r.saddr, addrs.string(c.Saddr))
	r.sport = append(r.sport, uint16(c.Sport))
	r.daddr = append(r.daddr, addrs.string(c.Daddr))
	r.dport = append(r.dport, uint16(c.Dport))
	r.start = append(r.start, time.Unix(0, int64(c.StartUnixNano)).UTC())
	r.startNs = append(r.startNs, c.StartUnixNano)
	r.durationUs = append(r.durationUs, c.DurationUs)
	r.bytesSent = append(r.bytesSent, c.BytesSent)
	r.bytesRecv = append(r.bytesRecv, c.BytesReceived)
	r.segsOut = append(r.segsOut, c.SegmentsOut)
	r.segsIn = append(r.segsIn, c.SegmentsIn)
	r.retrans = append(r.retrans, c.Retransmits)
	r.srtt = append(r.srtt, c.SrttUs)
	r.hsUs = append(r.hsUs, c.HandshakeUs)
	r.hsRetrans = append(r.hsRetrans, c.HandshakeRetransmits)
	r.lastState = append(r.lastState, wire.States.Code(c.LastState))
	r.errno = append(r.errno, c.Error)
	r.sockID = append(r.sockID, c.SockId)
	r.cookie = append(r.cookie, c.Cookie)
	r.probeID = append(r.probeID, probeID)
	r.seq = append(r.seq, c.Seq)
	r.sSeq = append(r.sSeq, streamSeq)
	r.added(streamSeq)
}

func (r *connRows) values() []any {
	return []any{
		r.time, r.timeNs, r.host, r.pid, r.comm, r.cgroup, r.owner, r.side, r.family,
		r.saddr, r.sport, r.daddr, r.dport, r.start, r.startNs, r.durationUs,
		r.bytesSent, r.bytesRecv, r.segsOut, r.segsIn, r.retrans, r.srtt, r.hsUs, r.hsRetrans,
		r.lastState, r.errno, r.sockID, r.cookie, r.probeID, r.seq, r.sSeq,
	}
}

func (r *connRows) reset() {
	r.resetState()
	r.time, r.start, r.timeNs, r.startNs = r.time[:0], r.start[:0], r.timeNs[:0], r.startNs[:0]
	r.host, r.comm, r.saddr, r.daddr, r.probeID = r.host[:0], r.comm[:0], r.saddr[:0], r.daddr[:0], r.probeID[:0]
	r.pid, r.segsOut, r.segsIn, r.retrans, r.srtt, r.hsRetrans = r.pid[:0], r.segsOut[:0], r.segsIn[:0], r.retrans[:0], r.srtt[:0], r.hsRetrans[:0]
	r.owner, r.side, r.family, r.lastState = r.owner[:0], r.side[:0], r.family[:0], r.lastState[:0]
	r.sport, r.dport, r.errno = r.sport[:0], r.dport[:0], r.errno[:0]
	r.cgroup, r.durationUs, r.bytesSent, r.bytesRecv, r.hsUs = r.cgroup[:0], r.durationUs[:0], r.bytesSent[:0], r.bytesRecv[:0], r.hsUs[:0]
	r.sockID, r.cookie, r.seq, r.sSeq = r.sockID[:0], r.cookie[:0], r.seq[:0], r.sSeq[:0]
}
