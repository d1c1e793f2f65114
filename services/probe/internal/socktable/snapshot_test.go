package socktable

import (
	"testing"
	"time"

	"google.golang.org/protobuf/encoding/prototext"
	"google.golang.org/protobuf/proto"

	"github.com/netpulse/netpulse/lib/eventpb"
	"github.com/netpulse/netpulse/services/probe/internal/sockdiag"
)

// snapshotTable: an nginx with a listener, three established and two
// CLOSE_WAIT connections; an app with two outgoing connections and one in
// CLOSE_WAIT; one CLOSE_WAIT socket older than the probe.
func snapshotTable(t *testing.T) *Table {
	t.Helper()
	tb := New(100)
	cw := diagSock(sockdiag.StateCloseWait, "10.0.0.1:41000", "10.0.0.3:5432", 12, 1002)
	cw.Info = sockdiag.TCPInfo{Len: 232, LastAckRecvMs: 5000, LastDataRecvMs: 6000}
	cw.RQueue = 17
	tb.Seed([]sockdiag.Socket{cw}, map[uint64]sockdiag.Owner{1002: {PID: 202, Comm: "legacy", CgroupID: 4}}, time.Unix(0, t0))

	nginx := owner(ownTask, 200, "nginx", 9)
	worker := owner(ownTask, 201, "nginx-worker", 9)
	app := owner(ownTask, 300, "app", 5)
	mustApply(t, tb,
		ev(1, t0, stClose, stListen, addrs("0.0.0.0:80", "0.0.0.0:0"), nginx),
		ev(2, t0, stSynRecv, stEst, addrs("10.0.0.1:80", "10.0.0.9:1002"), worker, side(sideServer)),
		ev(3, t0, stSynRecv, stEst, addrs("10.0.0.1:80", "10.0.0.9:1003"), worker, side(sideServer)),
		ev(4, t0, stSynRecv, stEst, addrs("10.0.0.1:80", "10.0.0.9:1004"), worker, side(sideServer)),
		ev(5, t0, stSynRecv, stEst, addrs("10.0.0.1:80", "10.0.0.9:1005"), worker, side(sideServer)),
		ev(5, t0+1*ms, stEst, stCloseWait, addrs("10.0.0.1:80", "10.0.0.9:1005"), cookie(55)),
		ev(6, t0, stSynRecv, stEst, addrs("10.0.0.1:80", "10.0.0.9:1006"), worker, side(sideServer)),
		ev(6, t0+3*ms, stEst, stCloseWait, addrs("10.0.0.1:80", "10.0.0.9:1006")),
		ev(7, t0, stSynSent, stEst, addrs("10.0.0.1:42007", "10.0.0.4:443"), app, side(sideClient)),
		ev(8, t0, stSynSent, stEst, addrs("10.0.0.1:42008", "10.0.0.5:443"), app, side(sideClient)),
		ev(9, t0, stSynSent, stEst, addrs("[fd00::1]:42009", "[fd00::4]:443"), app, side(sideClient)),
		ev(9, t0+2*ms, stEst, stCloseWait, addrs("[fd00::1]:42009", "[fd00::4]:443")),
	)
	return tb
}

func group(state eventpb.TcpState, pid uint32, comm string, cg uint64, port uint32, s eventpb.Side, n uint32) *eventpb.SocketGroup {
	return &eventpb.SocketGroup{State: state, Pid: pid, Comm: comm, CgroupId: cg, LocalPort: port, Side: s, Count: n}
}

var (
	wantGroups = []*eventpb.SocketGroup{
		group(stEst, 201, "nginx-worker", 9, 80, sideServer, 3),
		group(stEst, 300, "app", 5, 0, sideClient, 2), // client: local port 0
		group(stCloseWait, 201, "nginx-worker", 9, 80, sideServer, 2),
		group(stCloseWait, 202, "legacy", 4, 0, sideClient, 1),
		group(stCloseWait, 300, "app", 5, 0, sideClient, 1),
		group(stListen, 200, "nginx", 9, 80, sideServer, 1),
	}
	wantCloseWait = []*eventpb.SnapshotSocket{
		{Cookie: 12, Pid: 202, Comm: "legacy", CgroupId: 4, OwnerSource: ownScan, Family: v4,
			Saddr: []byte{10, 0, 0, 1}, Daddr: []byte{10, 0, 0, 3}, Sport: 41000, Dport: 5432, Side: sideClient,
			AgeUs: 5_010_000, AgeEstimated: true, RecvQueue: 17},
		{SockId: 5, Cookie: 55, Pid: 201, Comm: "nginx-worker", CgroupId: 9, OwnerSource: ownTask, Family: v4,
			Saddr: []byte{10, 0, 0, 1}, Daddr: []byte{10, 0, 0, 9}, Sport: 80, Dport: 1005, Side: sideServer, AgeUs: 9000},
		{SockId: 9, Pid: 300, Comm: "app", CgroupId: 5, OwnerSource: ownTask, Family: v6,
			Saddr: ap("[fd00::1]:1").Addr().AsSlice(), Daddr: ap("[fd00::4]:1").Addr().AsSlice(), Sport: 42009, Dport: 443, Side: sideClient, AgeUs: 8000},
		{SockId: 6, Pid: 201, Comm: "nginx-worker", CgroupId: 9, OwnerSource: ownTask, Family: v4,
			Saddr: []byte{10, 0, 0, 1}, Daddr: []byte{10, 0, 0, 9}, Sport: 80, Dport: 1006, Side: sideServer, AgeUs: 7000},
	}
)

func TestSnapshot(t *testing.T) {
	tb := snapshotTable(t)
	now := time.Unix(0, t0+10*ms)
	got := tb.Snapshot(nil, now, 10, 10)
	want := &eventpb.Snapshot{
		TimeUnixNano: uint64(t0 + 10*ms), Groups: wantGroups, CloseWait: wantCloseWait,
		CloseWaitTotal: 4, SocketsTotal: 10, Seeded: true,
	}
	if !proto.Equal(want, got) {
		t.Fatalf("snapshot\n got %s\nwant %s", prototext.Format(got), prototext.Format(want))
	}
}

func TestSnapshotCutsAndReuse(t *testing.T) {
	tb := snapshotTable(t)
	now := time.Unix(0, t0+10*ms)
	dst := &eventpb.Snapshot{Seq: 7, TcpOutSegs: 100, IntervalMs: 1000}
	tb.Snapshot(dst, now, 10, 10)
	firstGroup, firstSock := dst.Groups[0], dst.CloseWait[0]

	got := tb.Snapshot(dst, now, 2, 2)
	want := &eventpb.Snapshot{
		TimeUnixNano: uint64(t0 + 10*ms), Seq: 7, TcpOutSegs: 100, IntervalMs: 1000,
		Groups: wantGroups[:2], GroupsCut: 4, CloseWait: wantCloseWait[:2], CloseWaitTotal: 4, CloseWaitCut: 2,
		SocketsTotal: 10, Seeded: true,
	}
	if !proto.Equal(want, got) {
		t.Fatalf("cut snapshot\n got %s\nwant %s", prototext.Format(got), prototext.Format(want))
	}
	if got != dst || dst.Groups[0] != firstGroup || dst.CloseWait[0] != firstSock {
		t.Error("messages not reused")
	}
	// Growing back reuses the messages beyond the slices' lengths.
	allocs := testing.AllocsPerRun(10, func() {
		tb.Snapshot(dst, now, 10, 10)
		tb.Snapshot(dst, now, 2, 2)
	})
	if allocs != 0 {
		t.Errorf("snapshot into a used message allocates %.1f times", allocs)
	}

	none := tb.Snapshot(nil, now, 0, 0)
	if len(none.Groups) != 0 || none.GroupsCut != 6 || len(none.CloseWait) != 0 || none.CloseWaitCut != 4 {
		t.Errorf("limits of 0: %v", none)
	}
	if _, err := proto.Marshal(got); err != nil {
		t.Fatal(err)
	}
}

func TestSnapshotOfEmptyTable(t *testing.T) {
	got := New(10).Snapshot(nil, time.Unix(0, t0), 10, 10)
	want := &eventpb.Snapshot{TimeUnixNano: uint64(t0)}
	if !proto.Equal(want, got) {
		t.Fatalf("empty table\n got %s\nwant %s", prototext.Format(got), prototext.Format(want))
	}
}
