package chschema

import "github.com/netpulse/netpulse/lib/wire"

var dropSourceEnum = wire.DropSources.Enum8()

// TCPDrops holds the probe's drop counts (see Doc).
var TCPDrops = Table{
	Name: "tcp_drops",
	Doc: `TCP packets the kernel dropped, counted by the probe per interval (kind
drop, the proto's DropCount): one row per key that dropped in an
interval (start_time, time]. source 'kfree_skb' counts the packets
skb:kfree_skb saw freed as dropped, per reason (the kernel's name without
SKB_DROP_REASON_), this host's end (saddr, sport), the remote end (daddr,
dport), direction and owner where the socket names one; source
'listener' counts a listener's own drops (its accept queue was full),
with reason LISTEN_OVERFLOW, accept_queue and backlog at time. A drop
rate is sum(count) over a time range divided by its length. Partitions
are UTC days. ORDER BY (host, toStartOfHour(time), reason, sport, time):
the questions are "which reason / which port dropped most in this time
range", and a reason's rows of one hour lie together.`,
	Columns: []Column{
		// The end of the interval.
		{Name: "time", Modern: "DateTime64(9, 'UTC')", Legacy: "DateTime('UTC')", Codec: codecSeq},
		{Name: "time_ns", Modern: "UInt64", Codec: codecSeq},
		{Name: "start_time", Modern: "DateTime64(9, 'UTC')", Legacy: "DateTime('UTC')", Codec: codecSeq},
		{Name: "start_ns", Modern: "UInt64", Codec: codecSeq},
		{Name: "host", Modern: lcString, Legacy: "String", Codec: codecZSTD},
		{Name: "source", Modern: dropSourceEnum},
		{Name: "reason", Modern: lcString, Legacy: "String", Codec: codecZSTD},
		{Name: "family", Modern: familyEnum},
		{Name: "saddr", Modern: "String", Codec: codecZSTD},
		{Name: "sport", Modern: "UInt16", Codec: codecSmall},
		{Name: "daddr", Modern: "String", Codec: codecZSTD},
		{Name: "dport", Modern: "UInt16", Codec: codecSmall},
		// 1: dropped on its way in; 0: on its way out.
		{Name: "ingress", Modern: "UInt8", Codec: codecSmall},
		{Name: "pid", Modern: "UInt32", Codec: codecSmall},
		{Name: "comm", Modern: lcString, Legacy: "String", Codec: codecZSTD},
		{Name: "cgroup_id", Modern: "UInt64", Codec: codecSmall},
		// Packets dropped with this key in the interval.
		{Name: "count", Modern: "UInt64", Codec: codecSmall},
		{Name: "accept_queue", Modern: "UInt32", Codec: codecSmall},
		{Name: "backlog", Modern: "UInt32", Codec: codecSmall},
		{Name: "probe_id", Modern: lcString, Legacy: "String", Codec: codecZSTD},
		// The message's batch_seq: one per host, probe and interval.
		{Name: "seq", Modern: "UInt64", Codec: codecSeq},
		{Name: "stream_seq", Modern: "UInt64", Codec: codecSeq},
	},
	Engine:     "MergeTree",
	TimeColumn: "time",
	OrderBy:    "(host, toStartOfHour(time), reason, sport, time)",
	TTLFrom:    "toDateTime(time)",
}
