#!/usr/bin/env bash
# `make bench`: netpulse's performance figures on this machine, as root.
#
#   1. probe overhead: loopback connection rate with no tracing, with the
#      full probe (-> embedded JetStream) and with libbpf-tools tcpstates,
#      interleaved rounds; and whether every kernel event reached JetStream
#   2. sink throughput: a 3M-event JetStream backlog into ClickHouse 18.16,
#      for a few batch.max_rows; events/s and the sink's peak RSS, against
#      the ceiling measured in the same run (the same rows inserted by the
#      same client without NATS) as a share of it
#   3. the micro-benchmarks of the probe's hot path (decode, batch encode)
#   4. detectors: each built-in detector alone (Observe: a busy healthy
#      host; HotPath: its worst case per event) and one real replica per
#      detector (framework + consumer group on an embedded JetStream + the
#      detector) taking a healthy fleet's traffic
#   5. alert latency: kernel event -> alert on the subject, real probe,
#      NATS and detector under background load (tests/e2e)
#
# All are Go benchmarks (go test -run '^$' -bench ...) reporting their
# figures with b.ReportMetric; this script runs them and prints a summary.
# Raw output: .cache/bench/<time>.txt. About 7 minutes.
#
# Knobs (environment): STEPS, the steps to run (default all: probe, the
# overhead and micro-benchmarks; sink; rss; detectors; latency); ROUNDS
# (default 5) and ROUND (4s) for the overhead benchmark; MAX_ROWS
# (100000,200000,500000) and SINK_ROUNDS (2: sink and ceiling alternate
# which runs first) for the sink; REPLICA_HOSTS (64), REPLICA_CONNS
# (300 connections/s per host) and REPLICA_SECONDS (20 s of that traffic)
# for the detector replicas.
set -euo pipefail
cd "$(dirname "$0")/.."

STEPS=${STEPS:-probe sink rss detectors latency}
ROUNDS=${ROUNDS:-5}
ROUND=${ROUND:-4s}
MAX_ROWS=${MAX_ROWS:-100000,200000,500000}
SINK_ROUNDS=${SINK_ROUNDS:-2}
REPLICA_HOSTS=${REPLICA_HOSTS:-64}
REPLICA_CONNS=${REPLICA_CONNS:-300}
REPLICA_SECONDS=${REPLICA_SECONDS:-20}
SINK_TARGET=1000000    # events/s, per sink (issue 10)
SINK_SHARE_TARGET=80   # % of the bare-insert ceiling
DETECTOR_TARGET=200000 # events/s per core, each detector
LATENCY_TARGET=1000    # ms, kernel event -> alert

log() { printf '\033[1mmake bench:\033[0m %s\n' "$*" >&2; }
die() { log "$*"; exit 1; }
step() { [[ " ${STEPS//,/ } " == *" $1 "* ]]; } # whether step $1 runs

if step probe || step rss || step latency; then
	[[ $EUID -eq 0 ]] || die "the probe loads eBPF programs: run as root (sudo make bench)"
	command -v unshare >/dev/null || die "unshare not found (util-linux)"
fi
if step probe; then
	command -v tcpstates >/dev/null || die "tcpstates not found: make deps (installs libbpf-tools)"
fi
if step sink; then
	bash deploy/clickhouse/install.sh >/dev/null || die "no ClickHouse server: make deps"
fi
# Another tracer of TCP state changes (a `make run` probe, tcpstates, ...)
# would tax every mode, the baseline too.
if { step probe || step latency; } && command -v bpftool >/dev/null && others=$(bpftool perf show 2>/dev/null | grep inet_sock_set_state); then
	log "WARNING: sock:inet_sock_set_state is already traced; the overhead figures will be off:"
	printf '%s\n' "$others" >&2
fi
read -r load1 _ </proc/loadavg
log "load average before starting: $load1 (the machine should be idle)"
# Whatever cannot run fails instead of skipping (see lib/testutil/priv).
export NETPULSE_REQUIRE_PRIVILEGED=1

mkdir -p .cache/bench
raw=.cache/bench/$(date -u +%Y%m%dT%H%M%SZ).txt
log "raw output: $raw"

bench() { # title, go test arguments...
	local title=$1
	shift
	log "$title"
	go test -run '^$' -timeout 15m "$@" 2>&1 | tee -a "$raw" || die "$title failed; see $raw"
}

if step probe; then
	bench "micro-benchmarks" -bench . -benchmem \
		./services/probe/internal/batch/ ./services/probe/internal/tracer/
	bench "probe overhead: $ROUNDS rounds of $ROUND per mode" -bench '^BenchmarkOverhead$' -benchtime "${ROUNDS}x" \
		./services/probe/internal/agent/ -args -bench.round="$ROUND"
fi
if step sink; then
	bench "sink throughput: batch.max_rows $MAX_ROWS, $SINK_ROUNDS rounds of sink and ceiling" -bench '^BenchmarkSinkThroughput$' -benchtime "${SINK_ROUNDS}x" \
		./services/sink/internal/ingest/ -args -bench.max_rows="$MAX_ROWS"
fi

rss_line="probe memory: not measured (STEPS)"
if step rss; then
	log "probe memory with ~100k live sockets"
	make build >/dev/null
	[[ -x bin/nats-server ]] || (cd lib && go build -o ../bin/nats-server github.com/nats-io/nats-server/v2)
	rss_line=$(bash deploy/bench-rss.sh) || die "probe memory benchmark failed"
	echo "$rss_line" | tee -a "$raw"
fi

if step detectors; then
	# The replicas' NATS server runs as a process of its own, as in production:
	# the CPU per event is the replica's (and its publisher's).
	[[ -x bin/nats-server ]] || (cd lib && go build -o ../bin/nats-server github.com/nats-io/nats-server/v2)
	bench "detectors: Observe and HotPath of each detector alone" -bench '^Benchmark(Observe|HotPath)$' -benchmem \
		./services/detector/detectors/...
	bench "detectors: one replica each, $REPLICA_HOSTS hosts x $REPLICA_CONNS conn/s, ${REPLICA_SECONDS} s of traffic" \
		-bench '^BenchmarkReplica$' -benchtime "${REPLICA_SECONDS}x" ./services/detector/detectors/all/ \
		-args -bench.hosts="$REPLICA_HOSTS" -bench.conns="$REPLICA_CONNS" -bench.nats-server="$PWD/bin/nats-server"
fi
if step latency; then
	bench "alert latency under load (real probe, NATS, detector)" -bench '^BenchmarkAlertLatency$' -benchtime 1x -timeout 20m \
		./tests/e2e/
fi

# Summary. A result line is: name iterations (value unit)...; m["name unit"]
# holds the value, names without the -GOMAXPROCS suffix. Every detector
# package has a BenchmarkObserve and a BenchmarkHotPath: those are named
# <package>/<benchmark> (connleak/BenchmarkObserve). A section whose
# step did not run (STEPS) says so.
awk -v target=$SINK_TARGET -v starget=$SINK_SHARE_TARGET -v dtarget=$DETECTOR_TARGET -v ltarget=$LATENCY_TARGET -v rounds="$ROUNDS" -v round="$ROUND" \
	-v rhosts="$REPLICA_HOSTS" -v rconns="$REPLICA_CONNS" -v rseconds="$REPLICA_SECONDS" -v steps="${STEPS//,/ }" '
/^pkg: / { pkg = $2; sub(/.*\//, "", pkg) }
/^Benchmark/ && NF > 3 {
	name = $1; sub(/-[0-9]+$/, "", name)
	if (name ~ /^Benchmark(Observe|HotPath)$/) name = pkg "/" name
	names[++n] = name
	seen[name] = 1
	for (i = 3; i < NF; i += 2) m[name " " $(i + 1)] = $i
}
/ round [0-9]+ conn\/s:/ { line = $0; sub(/.*round/, "round", line); sub(/; probe events.*/, "", line); per[++np] = line }
function v(name, unit) { return (name " " unit) in m ? m[name " " unit] : "?" }
function f(fmt, x) { return x == "?" ? "?" : sprintf(fmt, x) } # "?" stays "?"
function stepped(s) { return index(" " steps " ", " " s " ") > 0 } # whether step s ran

function probe(    o, i) {
	o = "BenchmarkOverhead"
	printf "\nProbe overhead at the highest loopback connection rate (8 dialers; %s rounds x %s per mode, interleaved)\n", rounds, round
	printf "  %-34s %12s %16s\n", "mode", "conn/s", "drop vs none"
	printf "  %-34s %12.0f %16s\n", "no tracing", v(o, "conn/s_none"), "-"
	printf "  %-34s %12.0f %15.1f%%\n", "netpulse probe -> JetStream", v(o, "conn/s_probe"), v(o, "drop%_probe")
	printf "  %-34s %12.0f %15.1f%%\n", "libbpf-tools tcpstates >/dev/null", v(o, "conn/s_tcpstates"), v(o, "drop%_tcpstates")
	for (i = 1; i <= np; i++) printf "    %s\n", per[i]
	printf "  probe load: %.0f events/s (%.1f state changes per connection)\n", v(o, "events/s_probe"), v(o, "events/conn")
	printf "  end to end: %.0f kernel events, %.0f published, %.0f in JetStream => lost %.0f; ringbuf drops %.0f, decode errors %.0f, dropped at shutdown %.0f\n",
		v(o, "events_kernel"), v(o, "events_published"), v(o, "events_in_stream"), v(o, "lost"), v(o, "ringbuf_drops"), v(o, "decode_errors"), v(o, "events_dropped")
	printf "  (tcpstates itself reported %.0f events lost)\n", v(o, "tcpstates_lost")
	printf "  probe CPU (with the embedded NATS): %.1f%% of a core per 100k events/s; owner unknown: %.3f%% of events\n", v(o, "cpu%_per_100k_events/s"), v(o, "owner_unknown%")
}

function sink(    best, bshare, i, rows, r, c) {
	printf "\nSink throughput: JetStream backlog (file storage) -> ClickHouse 18.16, sink as its own process\n"
	printf "  (events/s: consumer created -> last ack; the last, partial batch waits flush_interval = 1 s;\n"
	printf "   full batches: up to the ack before it. ceiling, in the same run: the same rows, built beforehand,\n"
	printf "   inserted back to back by the same client and the same INSERTs (chwriter), no NATS, no decoding;\n"
	printf "   share = full-batch events/s / ceiling, the drain figure in parentheses. CPU s/M events: the sink\n"
	printf "   process; ClickHouse: the server during the sink run / during the ceiling)\n"
	printf "  %-15s %10s %13s %10s %14s %13s %11s %17s\n", "batch.max_rows", "events/s", "full batches", "ceiling", "share", "peak RSS MiB", "CPU s/M ev", "ClickHouse s/M ev"
	best = 0; bshare = 0
	for (i = 1; i <= n; i++) {
		if (names[i] !~ /^BenchmarkSinkThroughput\//) continue
		rows = names[i]; sub(/.*max_rows=/, "", rows)
		r = v(names[i], "events/s_full_batches"); if (r != "?" && r > best) best = r
		c = v(names[i], "share%_full_batches"); if (c != "?" && c > bshare) bshare = c
		printf "  %-15s %10s %13s %10s %6s (%4s) %13s %11s %8s / %-8s\n", rows, f("%.0f", v(names[i], "events/s")), f("%.0f", r),
			f("%.0f", v(names[i], "events/s_ceiling")), f("%.0f%%", c), f("%.0f%%", v(names[i], "share%")),
			f("%.0f", v(names[i], "peak_rss_MiB")), f("%.2f", v(names[i], "cpu_s/Mevents")),
			f("%.2f", v(names[i], "ch_cpu_s/Mevents")), f("%.2f", v(names[i], "ceiling_ch_cpu_s/Mevents"))
	}
	printf "  target >= %d events/s: %s; sink >= %d%% of the ceiling: %s\n", target, (best >= target ? "met" : "NOT MET"), starget, (bshare >= starget ? "met" : "NOT MET")
}

function dropstorm(    s) {
	s = "BenchmarkDropStorm"
	printf "\nDrop storm (a SYN flood to one port that nftables drops on its way in, 1024 source ports; tracer BenchmarkDropStorm)\n"
	printf "  %s drops/s counted, equal to the nft rule counter; kfree_skb program %s ns a run, %s%% of a core;\n", f("%.0f", v(s, "drops/s")), f("%.0f", v(s, "bpf_ns/run")), f("%.1f", v(s, "bpf_cpu_%"))
	printf "  meanwhile %s ring-buffer records, %s ring drops, %s drops counted without their key\n", v(s, "ring_records"), v(s, "ring_drops"), v(s, "keyless")
}

function micro(    i) {
	printf "\nMicro-benchmarks\n"
	printf "  %-22s %10s %10s %10s %12s\n", "benchmark", "ns/op", "MB/s", "B/op", "allocs/op"
	for (i = 1; i <= n; i++) {
		if (names[i] != "BenchmarkDecode" && names[i] != "BenchmarkEncoderAdd") continue
		printf "  %-22s %10s %10s %10s %12s\n", names[i], v(names[i], "ns/op"), v(names[i], "MB/s"), v(names[i], "B/op"), v(names[i], "allocs/op")
	}
}

# detectors: the replicas name the detectors (a new one shows up by itself);
# its package is the name without underscores (conn_leak -> connleak).
function detectors(    i, r, d, p, core, all, hc) {
	printf "\nDetectors: one replica per detector (framework + consumer group on JetStream + the detector, default\n"
	printf "  config), %s healthy hosts x %s conn/s, %s s of their traffic; events/s: first publish -> last batch\n", rhosts, rconns, rseconds
	printf "  handled; per core-second: events / CPU s of the replica process (its publisher included: conservative);\n"
	printf "  the nats-server process apart (its cores in the last column). Observe, HotPath: the detector alone on one\n"
	printf "  core (a busy healthy host; its worst case). hosts/core: hosts x realtime / cores of the replica, the fleet\n"
	printf "  one core keeps up with (what counts for detectors whose input is a snapshot per host now and then).\n"
	printf "  %-17s %11s %13s %14s %8s %9s %10s %11s %11s %12s\n", "detector", "events/s", "events/core-s", "target/core", "ev/batch", "realtime", "hosts/core", "Observe/s", "HotPath/s", "server cores"
	all = 1
	for (i = 1; i <= n; i++) {
		if (names[i] !~ /^BenchmarkReplica\//) continue
		r = names[i]; d = r; sub(/.*\//, "", d)
		p = d; gsub(/_/, "", p)
		core = v(r, "events/cpu_s")
		if (core == "?" || core < dtarget) all = 0
		hc = (v(r, "cpus") == "?" || v(r, "cpus") == 0 || v(r, "x_realtime") == "?") ? "?" : v(r, "hosts") * v(r, "x_realtime") / v(r, "cpus")
		printf "  %-17s %11s %13s %14s %8s %9s %10s %11s %11s %12s\n", d, f("%.0f", v(r, "events/s")), f("%.0f", core),
			(core == "?" ? "?" : core >= dtarget ? "met" : "NOT MET"), f("%.0f", v(r, "events/batch")), f("%.1fx", v(r, "x_realtime")), f("%.0f", hc),
			f("%.0f", v(p "/BenchmarkObserve", "events/s")), f("%.0f", v(p "/BenchmarkHotPath", "events/s")), f("%.2f", v(r, "server_cpus"))
	}
	printf "  target >= %d events/s per core, each detector: %s\n", dtarget, (all ? "met" : "NOT MET")
}

# latency: the detectors it reports p50_ms_<detector> for (sorted), else
# the replicas (all "?").
function latency(    L, i, j, k, u, d, dets, nd, mx) {
	L = "BenchmarkAlertLatency"
	for (k in m) {
		split(k, u, " ")
		if (u[1] != L || u[2] !~ /^p50_ms_/) continue
		d = u[2]; sub(/^p50_ms_/, "", d)
		for (j = ++nd; j > 1 && dets[j - 1] > d; j--) dets[j] = dets[j - 1]
		dets[j] = d
	}
	if (nd == 0) for (i = 1; i <= n; i++) if (names[i] ~ /^BenchmarkReplica\//) { d = names[i]; sub(/.*\//, "", d); dets[++nd] = d }
	printf "\nAlert latency: kernel event -> alert on netpulse.alerts.<detector>.> (real probe, NATS and detector,\n"
	printf "  after the condition became true under the test settings; tests/e2e BenchmarkAlertLatency)\n"
	if (!(L in seen)) printf "  ./tests/e2e reported no BenchmarkAlertLatency: every figure is ?\n"
	printf "  background load: %s probe events/s\n", f("%.0f", v(L, "events/s"))
	if (nd == 0) return
	printf "  %-17s %9s %9s %9s %14s\n", "detector", "p50 ms", "p99 ms", "max ms", "max < " ltarget " ms"
	for (i = 1; i <= nd; i++) {
		mx = v(L, "max_ms_" dets[i])
		printf "  %-17s %9s %9s %9s %14s\n", dets[i], f("%.0f", v(L, "p50_ms_" dets[i])), f("%.0f", v(L, "p99_ms_" dets[i])), f("%.0f", mx),
			(mx == "?" ? "?" : mx < ltarget ? "met" : "NOT MET")
	}
}

END {
	printf "\n=== netpulse benchmarks: %s ===\n", host
	if (stepped("probe")) probe(); else printf "\nProbe overhead: not run (STEPS)\n"
	printf "  %s\n", rss
	if (stepped("sink")) sink(); else printf "\nSink throughput: not run (STEPS)\n"
	if (stepped("probe")) { micro(); dropstorm() }
	if (stepped("detectors")) detectors(); else printf "\nDetectors: not run (STEPS)\n"
	if (stepped("latency")) latency(); else printf "\nAlert latency: not run (STEPS)\n"
}' rss="$rss_line" host="$(hostname), $(nproc) cores, kernel $(uname -r), $(go env GOVERSION)" "$raw"
