#!/usr/bin/env bash
# `make bench`: netpulse's performance figures on this machine, as root.
#
#   1. probe overhead: loopback connection rate with no tracing, with the
#      full probe (-> embedded JetStream) and with libbpf-tools tcpstates,
#      interleaved rounds; and whether every kernel event reached JetStream
#   2. sink throughput: a 3M-event JetStream backlog into ClickHouse 18.16,
#      for a few batch.max_rows; events/s and the sink's peak RSS
#   3. the micro-benchmarks of the probe's hot path (decode, batch encode)
#
# All are Go benchmarks (go test -run '^$' -bench ...) reporting their
# figures with b.ReportMetric; this script runs them and prints a summary.
# Raw output: .cache/bench/<time>.txt. About 2 minutes.
#
# Knobs (environment): ROUNDS (default 5) and ROUND (4s) for the overhead
# benchmark; MAX_ROWS (100000,200000,500000) for the sink.
set -euo pipefail
cd "$(dirname "$0")/.."

ROUNDS=${ROUNDS:-5}
ROUND=${ROUND:-4s}
MAX_ROWS=${MAX_ROWS:-100000,200000,500000}
SINK_TARGET=300000 # events/s

log() { printf '\033[1mmake bench:\033[0m %s\n' "$*" >&2; }
die() { log "$*"; exit 1; }

[[ $EUID -eq 0 ]] || die "the probe loads eBPF programs: run as root (sudo make bench)"
command -v tcpstates >/dev/null || die "tcpstates not found: make deps (installs libbpf-tools)"
command -v unshare >/dev/null || die "unshare not found (util-linux)"
bash deploy/clickhouse/install.sh >/dev/null || die "no ClickHouse server: make deps"
# Another tracer of TCP state changes (a `make run` probe, tcpstates, ...)
# would tax every mode, the baseline too.
if command -v bpftool >/dev/null && others=$(bpftool perf show 2>/dev/null | grep inet_sock_set_state); then
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

bench "micro-benchmarks" -bench . -benchmem \
	./services/probe/internal/batch/ ./services/probe/internal/tracer/
bench "probe overhead: $ROUNDS rounds of $ROUND per mode" -bench '^BenchmarkOverhead$' -benchtime "${ROUNDS}x" \
	./services/probe/internal/probe/ -args -bench.round="$ROUND"
bench "sink throughput: batch.max_rows $MAX_ROWS" -bench '^BenchmarkSinkThroughput$' -benchtime 1x \
	./services/sink/internal/sink/ -args -bench.max_rows="$MAX_ROWS"

log "probe memory with ~100k live sockets"
make build >/dev/null
[[ -x bin/nats-server ]] || (cd lib && go build -o ../bin/nats-server github.com/nats-io/nats-server/v2)
rss_line=$(bash deploy/bench-rss.sh) || die "probe memory benchmark failed"
echo "$rss_line" | tee -a "$raw"

# Summary. A result line is: name iterations (value unit)...; m["name unit"]
# holds the value, names without the -GOMAXPROCS suffix.
awk -v target=$SINK_TARGET -v rounds="$ROUNDS" -v round="$ROUND" '
/^Benchmark/ && NF > 3 {
	name = $1; sub(/-[0-9]+$/, "", name)
	names[++n] = name
	for (i = 3; i < NF; i += 2) m[name " " $(i + 1)] = $i
}
/ round [0-9]+ conn\/s:/ { line = $0; sub(/.*round/, "round", line); sub(/; probe events.*/, "", line); per[++np] = line }
function v(name, unit) { return (name " " unit) in m ? m[name " " unit] : "?" }
END {
	o = "BenchmarkOverhead"
	printf "\n=== netpulse benchmarks: %s ===\n", host
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

	printf "  %s\n", rss
	printf "\nSink throughput: JetStream backlog (file storage) -> ClickHouse 18.16, sink as its own process\n"
	printf "  (events/s: consumer created -> last ack; the last, partial batch waits flush_interval = 1 s,\n"
	printf "   the next column stops at the ack before it; the last adds the process start)\n"
	printf "  %-15s %10s %18s %15s %13s %15s\n", "batch.max_rows", "events/s", "full batches only", "incl. startup", "peak RSS MiB", "CPU s/M events"
	best = 0
	for (i = 1; i <= n; i++) {
		if (names[i] !~ /^BenchmarkSinkThroughput\//) continue
		rows = names[i]; sub(/.*max_rows=/, "", rows)
		r = v(names[i], "events/s"); if (r > best) best = r
		printf "  %-15s %10.0f %18.0f %15.0f %13.0f %15.2f\n", rows, r, v(names[i], "events/s_full_batches"), v(names[i], "events/s_with_startup"), v(names[i], "peak_rss_MiB"), v(names[i], "cpu_s/Mevents")
	}
	printf "  target >= %d events/s: %s\n", target, (best >= target ? "met" : "NOT MET")

	printf "\nMicro-benchmarks\n"
	printf "  %-22s %10s %10s %10s %12s\n", "benchmark", "ns/op", "MB/s", "B/op", "allocs/op"
	for (i = 1; i <= n; i++) {
		if (names[i] != "BenchmarkDecode" && names[i] != "BenchmarkEncoderAdd") continue
		printf "  %-22s %10s %10s %10s %12s\n", names[i], v(names[i], "ns/op"), v(names[i], "MB/s"), v(names[i], "B/op"), v(names[i], "allocs/op")
	}
}' rss="$rss_line" host="$(hostname), $(nproc) cores, kernel $(uname -r), $(go env GOVERSION)" "$raw"
