#!/usr/bin/env bash
# `make run`: the whole netpulse pipeline on this machine, as root.
#
# Starts a real NATS server with JetStream (built from the nats-server Go
# module) and a real ClickHouse server (installed from Debian's packages when
# missing), both on loopback with their data under .run/, then the detector,
# the sink and the probe. Ctrl-C stops everything in reverse order; running
# it again reuses the data.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)
state="$root/.run"
nats_port=4222
ch_port=9000
metrics_ports=(9431 9432 9433) # /metrics of the probe, the detector, the sink (their defaults)

log() { printf '\033[1mmake run:\033[0m %s\n' "$*" >&2; }
die() { log "$*"; exit 1; }

[[ $EUID -eq 0 ]] || die "the probe loads eBPF programs: run as root (sudo make run)"
for p in $nats_port $ch_port "${metrics_ports[@]}"; do
  if (exec 3<>/dev/tcp/127.0.0.1/$p) 2>/dev/null; then
    die "127.0.0.1:$p is already in use; stop what listens there (ss -ltnp 'sport = :$p') and retry"
  fi
done

bash deploy/clickhouse/install.sh
if [[ ! -x bin/nats-server ]]; then
  log "building nats-server from its Go module (once)"
  (cd lib && go build -o ../bin/nats-server github.com/nats-io/nats-server/v2)
fi
if [[ ! -x bin/nats ]]; then
  log "building the nats CLI (once; for 'bin/nats sub')"
  (cd /tmp && GOWORK=off GOBIN="$root/bin" go install github.com/nats-io/natscli/nats@v0.5.1) ||
    log "could not build the nats CLI; everything else works without it"
fi
mkdir -p "$state/nats" "$state/clickhouse" "$state/logs"

# Every child runs in a session of its own (setsid), so a Ctrl-C reaches only
# this script, which then stops them in order.
pids=()
cleanup() {
  trap - INT TERM EXIT
  log "stopping"
  # Reverse order: the probe flushes to NATS, the sink to ClickHouse, then the servers go.
  for ((i = ${#pids[@]} - 1; i >= 0; i--)); do
    kill -TERM "${pids[i]}" 2>/dev/null || true
    wait "${pids[i]}" 2>/dev/null || true
  done
  log "stopped; data kept under .run/"
  exit 0
}
trap cleanup INT TERM EXIT

wait_port() { # name port pid
  for _ in $(seq 1 300); do
    (exec 3<>/dev/tcp/127.0.0.1/$2) 2>/dev/null && return 0
    kill -0 "$3" 2>/dev/null || die "$1 exited; see .run/logs/$1.log"
    sleep 0.1
  done
  die "$1 did not listen on 127.0.0.1:$2 within 30 s; see .run/logs/$1.log"
}

setsid bash deploy/clickhouse/start.sh "$state/clickhouse" $ch_port >"$state/logs/clickhouse.log" 2>&1 &
pids+=($!)
wait_port clickhouse $ch_port "${pids[-1]}"
setsid bin/nats-server -a 127.0.0.1 -p $nats_port -js -sd "$state/nats" >"$state/logs/nats.log" 2>&1 &
pids+=($!)
wait_port nats $nats_port "${pids[-1]}"
log "NATS nats://127.0.0.1:$nats_port and ClickHouse 127.0.0.1:$ch_port are up (logs in .run/logs/)"

setsid bin/netpulse-detector 2> >(tee "$state/logs/detector.log" >&2) &
pids+=($!)
setsid bin/netpulse-sink 2> >(tee "$state/logs/sink.log" >&2) &
pids+=($!)
setsid bin/netpulse-probe 2> >(tee "$state/logs/probe.log" >&2) &
pids+=($!)

ch_client=$(command -v clickhouse-client || echo "clickhouse client")
cat >&2 <<MSG

  netpulse is running. Every TCP state change on this host becomes a row within about 2 s.

  Watch the raw event stream and probe health:
    bin/nats --server nats://127.0.0.1:$nats_port stream info NETPULSE_EVENTS
    bin/nats --server nats://127.0.0.1:$nats_port sub 'netpulse.events.*.stats'
  Alerts:
    bin/nats --server nats://127.0.0.1:$nats_port sub 'netpulse.alerts.>'
  netpulse's own health (Prometheus format; /readyz says what a service waits for):
    curl -s 127.0.0.1:${metrics_ports[0]}/metrics | grep '^netpulse_probe_events'
    curl -s 127.0.0.1:${metrics_ports[2]}/readyz
  First SQL query:
    $ch_client --port $ch_port --query "SELECT new_state, count() FROM netpulse.tcp_events WHERE time > now() - 300 GROUP BY new_state ORDER BY count() DESC"

  Ctrl-C stops everything.

MSG
# Any service that exits ends the run (and the trap stops the rest).
wait -n "${pids[@]}" || true
log "a service exited; stopping the rest (see .run/logs/)"
