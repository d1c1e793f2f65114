#!/usr/bin/env bash
# Part of `make bench`: the probe's resident memory with ~100k live sockets.
# Seven helper processes each hold 7,200 loopback connections (both ends,
# 14,400 sockets: the hard RLIMIT_NOFILE here is 20,000); the probe runs
# against a throwaway nats-server and reports rss and its socket counts in
# its stats. Prints one summary line.
set -euo pipefail
cd "$(dirname "$0")/.."
work=$(mktemp -d)
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
pids=()
cleanup() { exec 7>&- 2>/dev/null || true; kill "${pids[@]}" 2>/dev/null || true; wait 2>/dev/null || true; rm -rf "$work"; }
trap cleanup EXIT
bin/nats-server -js -sd "$work/js" -a 127.0.0.1 -p "$port" >"$work/nats.log" 2>&1 & pids+=($!)
bin/netpulse-probe --nats.url="nats://127.0.0.1:$port" --host=bench-rss --stats.interval=2s \
	--tracer.socket_map_entries=262144 >"$work/probe.log" 2>&1 & pids+=($!)
for _ in $(seq 50); do grep -q "probe running" "$work/probe.log" && break; sleep 0.2; done
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
for i in 1 2 3 4 5 6 7; do python3 "$work/hold.py" 7200 <"$work/hold" >"$work/hold$i.log" 2>&1 & pids+=($!); done
exec 7>"$work/hold"
for _ in $(seq 600); do [[ $(cat "$work"/hold*.log | grep -c ready) -eq 7 ]] && break; sleep 0.2; done
sleep 5 # two stats intervals after the last socket
line=$(grep "probe stats" "$work/probe.log" | tail -1)
get() { tr ' ' '\n' <<<"$line" | sed -n "s/^$1=//p"; }
echo "probe with $(get sockets) live sockets in its table: RSS $(get rss_mib) MiB; kernel map evictions $(get kernel_map_evictions), table evictions $(get socket_table_evictions), owner unknown $(get owner_unknown)"
