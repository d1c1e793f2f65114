#!/usr/bin/env bash
# Part of `make bench`: the probe's resident memory with ~100k live sockets.
# Seven helper processes each hold 7,200 loopback connections (both ends,
# 14,400 sockets: the hard RLIMIT_NOFILE here is 20,000); the probe runs
# against a throwaway nats-server. Two probes in turn:
#   - "live": started first, it learns the sockets from their events;
#   - "restart": started while the sockets exist, it reads them all at
#     start (sock_diag seed) and owners from /proc.
# For each it prints the resident memory (VmRSS) and its peak (VmHWM) from
# /proc/<pid>/status once its table holds every socket. Prints one summary
# line; exits non-zero, with the probe's log, if a probe died or never got
# there. PROBE=<binary> measures another build (default bin/netpulse-probe).
set -euo pipefail
cd "$(dirname "$0")/.."
work=$(mktemp -d)
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
holders=7 per_holder=7200
want=$((holders * per_holder * 2))
pids=()
cleanup() { exec 7>&- 2>/dev/null || true; kill "${pids[@]}" 2>/dev/null || true; wait 2>/dev/null || true; rm -rf "$work"; }
trap cleanup EXIT
die() { # message, probe log (optional)
	echo "bench-rss: $1" >&2
	[[ -n ${2:-} && -f $2 ]] && { echo "--- last lines of $2:" >&2; grep -v '^gc ' "$2" | tail -20 >&2; }
	exit 1
}
alive() { kill -0 "$1" 2>/dev/null && ! grep -q '^State:.*zombie' "/proc/$1/status" 2>/dev/null; }
# wait_for: pid, log, what (for the message), seconds, test command...
# Polls the test until it holds; dies if the probe dies, fails on timeout.
wait_for() {
	local pid=$1 log=$2 what=$3 deadline=$((SECONDS + $4))
	shift 4
	until "$@"; do
		alive "$pid" || die "the probe died while waiting for $what" "$log"
		((SECONDS < deadline)) || return 1
		sleep 0.2
	done
}
# The socket count of the last stats line.
table_sockets() { grep 'probe stats' "$1" | tail -1 | tr ' ' '\n' | sed -n 's/^sockets=//p'; }
table_full() { local n; n=$(table_sockets "$1"); [[ -n $n ]] && ((n >= want)); }
status_kib() { sed -n "s/^$2:[[:space:]]*\([0-9]*\) kB/\1/p" "/proc/$1/status"; }

bin/nats-server -js -sd "$work/js" -a 127.0.0.1 -p "$port" >"$work/nats.log" 2>&1 & pids+=($!)
start_probe() { # log file; sets probe
	"${PROBE:-bin/netpulse-probe}" --nats.url="nats://127.0.0.1:$port" --host=bench-rss --stats.interval=1s \
		--tracer.socket_map_entries=262144 >"$1" 2>&1 &
	probe=$!
	pids+=($probe)
}
# measure: name, log. Once the table holds every socket: one more stats
# interval for what follows the burst (acks, batches released), then read.
measure() {
	local log=$2 n note=""
	# Lost events (ring buffer full: counted) leave the table short: report
	# what it holds after a while rather than nothing.
	wait_for "$probe" "$log" "a table of $want sockets" 60 table_full "$log" || note="TABLE INCOMPLETE after 60s, "
	n=$(grep -c 'probe stats' "$log")
	wait_for "$probe" "$log" "the next stats line" 10 eval '(( $(grep -c "probe stats" "$log") > n ))' ||
		die "no stats line for 10s" "$log"
	alive "$probe" || die "the probe died" "$log"
	local rss hwm
	rss=$(status_kib "$probe" VmRSS) hwm=$(status_kib "$probe" VmHWM)
	line=$(grep 'probe stats' "$log" | tail -1)
	get() { tr ' ' '\n' <<<"$line" | sed -n "s/^$1=//p"; }
	result+="$1: RSS $((rss >> 10)) MiB, peak $((hwm >> 10)) MiB (${note}$(get sockets) sockets; kernel map evictions $(get kernel_map_evictions), table evictions $(get socket_table_evictions), ringbuf drops $(get ringbuf_drops), owner unknown $(get owner_unknown)); "
}
result=""

start_probe "$work/live.log"
wait_for "$probe" "$work/live.log" "\"probe running\"" 30 grep -q "probe running" "$work/live.log" ||
	die "no \"probe running\" within 30s" "$work/live.log"
cat >"$work/hold.py" <<'PY'
import socket, sys, resource
resource.setrlimit(resource.RLIMIT_NOFILE, (20000, 20000))
ls = socket.socket(); ls.bind(("127.0.0.1", 0)); ls.listen(4096)
held = []
for i in range(int(sys.argv[1])):
    c = socket.create_connection(ls.getsockname()); s, _ = ls.accept(); held += [c, s]
print("ready", flush=True)
sys.stdin.read()
PY
mkfifo "$work/hold"
for i in $(seq $holders); do python3 "$work/hold.py" $per_holder <"$work/hold" >"$work/hold$i.log" 2>&1 & pids+=($!); done
exec 7>"$work/hold"
holders_ready() { [[ $(cat "$work"/hold*.log | grep -c ready) -eq $holders ]]; }
wait_for "$probe" "$work/live.log" "$holders ready socket holders" 120 holders_ready ||
	die "the socket holders were not ready within 120s: $(cat "$work"/hold*.log)"
measure "live, $want sockets opened after the probe" "$work/live.log"

kill -TERM "$probe"
wait "$probe" || die "the first probe exited with status $? when stopped" "$work/live.log"
start_probe "$work/restart.log"
wait_for "$probe" "$work/restart.log" "the seed" 60 grep -q "existing sockets read" "$work/restart.log" ||
	die "the restarted probe did not read the existing sockets within 60s" "$work/restart.log"
measure "restart, the same sockets read at start" "$work/restart.log"
echo "probe memory with ~100k live sockets: ${result%; }"
