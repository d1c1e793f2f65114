package chwriter

import (
	"time"

	"github.com/netpulse/netpulse/lib/eventpb"
	"github.com/netpulse/netpulse/lib/wire"
)

// Row kinds of socket_snapshots (chschema's Enum8 codes).
const (
	rowSummary   int8 = 0
	rowGroup     int8 = 1
	rowCloseWait int8 = 2
	rowEndpoint  int8 = 3
)

// snapRows are socket_snapshots rows. Every snapshot makes one summary
// row, one row per group and one per listed CLOSE_WAIT socket; a column
// a row kind does not use gets its zero value.
type snapRows struct {
	bufState
	time                                             []time.Time
	timeNs                                           []uint64
	host, comm, saddr, daddr, probeID                []string
	kind, tcpState, owner, side, family              []int8
	pid, count, recvQueue, groupsCut, cwTotal, cwCut []uint32
	socketsTotal, intervalMs                         []uint32
	localPort, dport                                 []uint16
	ageEstimated, seeded                             []uint8
	cgroup, sockID, cookie, ageUs, outSegs, retrSegs []uint64
	seq, sSeq                                        []uint64
	timeWait, finWait2, live, endpointsCut           []uint32
	finTimeout, maxTwBuckets                         []uint32
	twEntered                                        []uint64
	portLow, portHigh                                []uint16
	endpointsRead, twReuse                           []uint8
	eventsSeq                                        []uint64
}

// row appends one row of kind with every column at its zero value but the
// snapshot's own; the caller sets the rest on the last element.
func (r *snapRows) row(kind int8, host, probeID string, streamSeq uint64, s *eventpb.Snapshot) {
	r.time = append(r.time, time.Unix(0, int64(s.TimeUnixNano)).UTC())
	r.timeNs = append(r.timeNs, s.TimeUnixNano)
	r.host = append(r.host, host)
	r.kind = append(r.kind, kind)
	r.tcpState = append(r.tcpState, 0)
	r.pid = append(r.pid, 0)
	r.comm = append(r.comm, "")
	r.cgroup = append(r.cgroup, 0)
	r.owner = append(r.owner, 0)
	r.side = append(r.side, 0)
	r.localPort = append(r.localPort, 0)
	r.count = append(r.count, 0)
	r.family = append(r.family, 0)
	r.saddr = append(r.saddr, "")
	r.daddr = append(r.daddr, "")
	r.dport = append(r.dport, 0)
	r.sockID = append(r.sockID, 0)
	r.cookie = append(r.cookie, 0)
	r.ageUs = append(r.ageUs, 0)
	r.ageEstimated = append(r.ageEstimated, 0)
	r.recvQueue = append(r.recvQueue, 0)
	r.groupsCut = append(r.groupsCut, 0)
	r.cwTotal = append(r.cwTotal, 0)
	r.cwCut = append(r.cwCut, 0)
	r.socketsTotal = append(r.socketsTotal, 0)
	r.seeded = append(r.seeded, 0)
	r.outSegs = append(r.outSegs, 0)
	r.retrSegs = append(r.retrSegs, 0)
	r.intervalMs = append(r.intervalMs, 0)
	r.timeWait = append(r.timeWait, 0)
	r.finWait2 = append(r.finWait2, 0)
	r.live = append(r.live, 0)
	r.twEntered = append(r.twEntered, 0)
	r.endpointsCut = append(r.endpointsCut, 0)
	r.endpointsRead = append(r.endpointsRead, 0)
	r.portLow = append(r.portLow, 0)
	r.portHigh = append(r.portHigh, 0)
	r.finTimeout = append(r.finTimeout, 0)
	r.maxTwBuckets = append(r.maxTwBuckets, 0)
	r.twReuse = append(r.twReuse, 0)
	r.eventsSeq = append(r.eventsSeq, 0)
	r.probeID = append(r.probeID, probeID)
	r.seq = append(r.seq, s.Seq)
	r.sSeq = append(r.sSeq, streamSeq)
	r.added(streamSeq)
}

// add appends the rows of snapshot s.
func (r *snapRows) add(host, probeID string, streamSeq uint64, s *eventpb.Snapshot, addrs *addrCache) {
	r.row(rowSummary, host, probeID, streamSeq, s)
	i := r.rows - 1
	r.groupsCut[i], r.cwTotal[i], r.cwCut[i] = s.GroupsCut, s.CloseWaitTotal, s.CloseWaitCut
	r.socketsTotal[i], r.seeded[i] = s.SocketsTotal, b2u(s.Seeded)
	r.outSegs[i], r.retrSegs[i], r.intervalMs[i] = s.TcpOutSegs, s.TcpRetransSegs, s.IntervalMs
	r.timeWait[i], r.finWait2[i], r.twEntered[i] = s.TimeWaitTotal, s.FinWait2Total, s.TimeWaitEntered
	r.endpointsCut[i], r.endpointsRead[i] = s.EndpointsCut, b2u(s.EndpointsRead)
	r.portLow[i], r.portHigh[i] = uint16(s.PortRangeLow), uint16(s.PortRangeHigh)
	r.finTimeout[i], r.maxTwBuckets[i], r.twReuse[i] = s.FinTimeoutS, s.MaxTwBuckets, uint8(min(s.TwReuse, 255))
	r.eventsSeq[i] = s.EventsSeq

	for _, g := range s.Groups {
		r.row(rowGroup, host, probeID, streamSeq, s)
		i := r.rows - 1
		r.tcpState[i], r.pid[i], r.comm[i], r.cgroup[i] = wire.States.Code(g.State), g.Pid, g.Comm, g.CgroupId
		r.localPort[i], r.count[i], r.side[i] = uint16(g.LocalPort), g.Count, wire.Sides.Code(g.Side)
	}
	for _, c := range s.CloseWait {
		r.row(rowCloseWait, host, probeID, streamSeq, s)
		i := r.rows - 1
		r.tcpState[i] = int8(eventpb.TcpState_TCP_STATE_CLOSE_WAIT)
		r.pid[i], r.comm[i], r.cgroup[i], r.owner[i], r.side[i] = c.Pid, c.Comm, c.CgroupId, wire.OwnerSources.Code(c.OwnerSource), wire.Sides.Code(c.Side)
		r.localPort[i], r.count[i], r.family[i] = uint16(c.Sport), 1, wire.Families.Code(c.Family)
		r.saddr[i], r.daddr[i], r.dport[i] = addrs.string(c.Saddr), addrs.string(c.Daddr), uint16(c.Dport)
		r.sockID[i], r.cookie[i], r.ageUs[i] = c.SockId, c.Cookie, c.AgeUs
		r.ageEstimated[i], r.recvQueue[i] = b2u(c.AgeEstimated), c.RecvQueue
	}
	for _, e := range s.Endpoints {
		r.row(rowEndpoint, host, probeID, streamSeq, s)
		i := r.rows - 1
		r.pid[i], r.comm[i], r.cgroup[i] = e.Pid, e.Comm, e.CgroupId
		r.family[i], r.saddr[i], r.daddr[i] = wire.Families.Code(e.Family), addrs.string(e.Saddr), addrs.string(e.Daddr)
		r.dport[i], r.localPort[i] = uint16(e.Dport), uint16(e.LocalPort)
		r.timeWait[i], r.finWait2[i], r.live[i], r.twEntered[i] = e.TimeWait, e.FinWait2, e.Live, uint64(e.TimeWaitEntered)
		r.count[i], r.ageUs[i] = e.TimeWait+e.FinWait2+e.Live, e.FinWait2OldestUs
	}
}

func (r *snapRows) values() []any {
	return []any{
		r.time, r.timeNs, r.host, r.kind, r.tcpState, r.pid, r.comm, r.cgroup, r.owner, r.side,
		r.localPort, r.count, r.family, r.saddr, r.daddr, r.dport, r.sockID, r.cookie,
		r.ageUs, r.ageEstimated, r.recvQueue, r.groupsCut, r.cwTotal, r.cwCut, r.socketsTotal,
		r.seeded, r.outSegs, r.retrSegs, r.intervalMs,
		r.timeWait, r.finWait2, r.live, r.twEntered, r.endpointsCut, r.endpointsRead,
		r.portLow, r.portHigh, r.finTimeout, r.maxTwBuckets, r.twReuse, r.eventsSeq,
		r.probeID, r.seq, r.sSeq,
	}
}

func (r *snapRows) reset() {
	r.resetState()
	r.time, r.timeNs = r.time[:0], r.timeNs[:0]
	r.host, r.comm, r.saddr, r.daddr, r.probeID = r.host[:0], r.comm[:0], r.saddr[:0], r.daddr[:0], r.probeID[:0]
	r.kind, r.tcpState, r.owner, r.side, r.family = r.kind[:0], r.tcpState[:0], r.owner[:0], r.side[:0], r.family[:0]
	r.pid, r.count, r.recvQueue, r.groupsCut, r.cwTotal, r.cwCut = r.pid[:0], r.count[:0], r.recvQueue[:0], r.groupsCut[:0], r.cwTotal[:0], r.cwCut[:0]
	r.socketsTotal, r.intervalMs = r.socketsTotal[:0], r.intervalMs[:0]
	r.localPort, r.dport = r.localPort[:0], r.dport[:0]
	r.ageEstimated, r.seeded = r.ageEstimated[:0], r.seeded[:0]
	r.cgroup, r.sockID, r.cookie, r.ageUs, r.outSegs, r.retrSegs = r.cgroup[:0], r.sockID[:0], r.cookie[:0], r.ageUs[:0], r.outSegs[:0], r.retrSegs[:0]
	r.seq, r.sSeq = r.seq[:0], r.sSeq[:0]
	r.timeWait, r.finWait2, r.live, r.endpointsCut = r.timeWait[:0], r.finWait2[:0], r.live[:0], r.endpointsCut[:0]
	r.finTimeout, r.maxTwBuckets, r.twEntered = r.finTimeout[:0], r.maxTwBuckets[:0], r.twEntered[:0]
	r.portLow, r.portHigh, r.endpointsRead, r.twReuse = r.portLow[:0], r.portHigh[:0], r.endpointsRead[:0], r.twReuse[:0]
	r.eventsSeq = r.eventsSeq[:0]
}
