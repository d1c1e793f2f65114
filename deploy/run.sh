#!/usr/bin/env bash
# `make run`: the whole netpulse pipeline on this machine, as root.
#
# Starts a real NATS server with JetStream (built from the nats-server Go
# module) and a real ClickHouse server (installed from Debian's packages when
# missing), both on loopback with their data under .run/, then the detector,
# the sink and the probe, and keeps them up: whatever exits is started again
# after a back-off (1 s, doubling to 30 s; back to 1 s after a minute up),
# so the probe keeps running whatever else dies. The console shows one line
# per thing that matters (started, ready, alert, exited/restarted, warnings
# and errors); full logs are in .run/logs/. Ctrl-C or SIGTERM stops
# everything in reverse order, each within stop_timeout (20 s) before
# SIGKILL; a second Ctrl-C kills everything at once. Running it again reuses
# the data. When Debian's prometheus-alertmanager is installed, an
# Alertmanager runs too (127.0.0.1:9093, no receivers: its UI and API show
# the alerts) and the detector forwards every alert to it.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)
# NETPULSE_RUN_* move the run (tests run it beside a user's): its data and
# logs, the netpulse binaries, and every port.
state="${NETPULSE_RUN_STATE:-$root/.run}"
bin="${NETPULSE_RUN_BIN:-$root/bin}"
nats_port=${NETPULSE_RUN_NATS_PORT:-4222}
ch_port=${NETPULSE_RUN_CLICKHOUSE_PORT:-9000}
# /metrics of the probe, the detector, the sink (their defaults)
read -r -a metrics_ports <<<"${NETPULSE_RUN_METRICS_PORTS:-9431 9432 9433}"
am_port=${NETPULSE_RUN_ALERTMANAGER_PORT:-9093}

log() { printf '\033[1mmake run:\033[0m %s\n' "$*" >&2; }
die() { log "$*"; exit 1; }

[[ $EUID -eq 0 ]] || die "the probe loads eBPF programs: run as root (sudo make run)"
for p in $nats_port $ch_port "${metrics_ports[@]}"; do
  if (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null; then
    die "127.0.0.1:$p is already in use; stop what listens there (ss -ltnp 'sport = :$p') and retry"
  fi
done

bash deploy/clickhouse/install.sh
tools=0
bash deploy/nats/tools.sh || tools=$?
case $tools in
0) ;;
3) log "could not build the nats CLI; everything else works without it" ;;
*) die "could not build nats-server" ;;
esac
mkdir -p "$state/nats" "$state/clickhouse" "$state/logs"

am_bin=$(command -v prometheus-alertmanager || command -v alertmanager || true)
if [[ -n $am_bin ]] && (exec 3<>"/dev/tcp/127.0.0.1/$am_port") 2>/dev/null; then
  log "127.0.0.1:$am_port is in use: running without Alertmanager"
  am_bin=
fi
detector_args=()
if [[ -n $am_bin ]]; then
  mkdir -p "$state/alertmanager"
  # Alerts are shown, not sent anywhere: add receivers here to try routes.
  cat >"$state/alertmanager/alertmanager.yml" <<'AM'
route:
  receiver: none
  group_by: [alertname, host]
receivers:
  - name: none
AM
  detector_args=("--alertmanager.url=http://127.0.0.1:$am_port")
fi

# Each service runs under a supervisor loop of its own: the service in a
# session of its own (setsid: a Ctrl-C reaches only this script), its
# output appended to .run/logs/<name>.log, and, when it exits while the run
# is not stopping, started again after a back-off.
stop_timeout=20
stopping="$state/stopping"
rm -f "$stopping"
mkdir -p "$state/pids"
sups=() # supervisor loops, in start order
# The services' /readyz ports: each (re)start is followed by "<name> ready".
declare -A ready_port=([probe]="${metrics_ports[0]}" [detector]="${metrics_ports[1]}" [sink]="${metrics_ports[2]}")

supervise() { # name cmd...
  local name=$1 backoff=1
  shift
  (
    trap '' INT # the script's trap does the stopping
    while [[ ! -e $stopping ]]; do
      local started=$SECONDS
      setsid "$@" >>"$state/logs/$name.log" 2>&1 &
      local pid=$!
      echo $pid >"$state/pids/$name"
      log "$name started (pid $pid)"
      if [[ -n ${ready_port[$name]:-} ]]; then ready "$name" "${ready_port[$name]}"; fi
      local status=0
      wait $pid 2>/dev/null || status=$? # no "Killed" line: the next one says it
      [[ -e $stopping ]] && break
      if ((SECONDS - started >= 60)); then backoff=1; fi
      log "$name exited (status $status); restarting in ${backoff}s (see .run/logs/$name.log)"
      sleep "$backoff"
      backoff=$((backoff * 2 > 30 ? 30 : backoff * 2))
    done
  ) &
  sups+=($!)
}

# console follows the services' logs and prints the lines that matter.
console() {
  # tail's pid goes to a file: killing it at the stop ends the filter too.
  {
    tail -q -n 0 -F "$state"/logs/{clickhouse,nats,detector,sink,probe}.log 2>/dev/null &
    echo $! >"$state/console.pid"
    wait
  } | grep --line-buffered -E 'level=(WARN|ERROR)|msg=alert |msg=("probe running"|consuming|running) ' |
    sed -u -E 's/^time=[^ ]+ //; s/^/  /' >&2 &
}

signal_all() { # signal: every service's current process
  local f
  for f in "$state"/pids/*; do
    if [[ -e $f ]]; then kill "-$1" "$(<"$f")" 2>/dev/null || true; fi
  done
}

stop_one() { # name: TERM, then KILL after stop_timeout
  local f="$state/pids/$1" pid
  [[ -e $f ]] || return 0
  pid=$(<"$f")
  kill -TERM "$pid" 2>/dev/null || return 0
  for ((i = 0; i < stop_timeout * 10; i++)); do
    kill -0 "$pid" 2>/dev/null || return 0
    sleep 0.1
  done
  log "$1 did not stop within ${stop_timeout}s; killing it"
  kill -KILL "$pid" 2>/dev/null || true
}

cleanup() {
  trap - TERM EXIT
  trap 'log "second signal: killing everything"; signal_all KILL; exit 1' INT
  touch "$stopping"
  log "stopping (each service within ${stop_timeout}s; Ctrl-C again kills everything)"
  # Reverse order: the probe flushes to NATS, the sink to ClickHouse, then the servers go.
  for name in probe sink detector alertmanager nats clickhouse; do
    stop_one "$name"
  done
  wait "${sups[@]}" 2>/dev/null || true
  if [[ -e $state/console.pid ]]; then kill "$(<"$state/console.pid")" 2>/dev/null || true; fi
  rm -f "$stopping" "$state"/pids/* "$state/console.pid"
  jobs -p | xargs -r kill 2>/dev/null || true # the last waits (sleep, readiness polls)
  log "stopped; data kept under .run/"
  exit 0
}
trap cleanup INT TERM EXIT

wait_port() { # name port
  for _ in $(seq 1 300); do
    (exec 3<>"/dev/tcp/127.0.0.1/$2") 2>/dev/null && return 0
    sleep 0.1
  done
  die "$1 did not listen on 127.0.0.1:$2 within 30 s; see .run/logs/$1.log"
}

# ready waits (in the background) for a service's /readyz and says so once.
ready() { # name port
  (
    for _ in $(seq 1 600); do
      [[ -e $stopping ]] && exit 0
      if [[ $(curl -s "http://127.0.0.1:$2/readyz" 2>/dev/null) == ready ]]; then
        log "$1 ready"
        exit 0
      fi
      sleep 0.2
    done
    log "$1 not ready after 2 min: curl 127.0.0.1:$2/readyz says what it waits for"
  ) &
}

for f in clickhouse nats alertmanager detector sink probe; do : >"$state/logs/$f.log"; done
console
supervise clickhouse bash deploy/clickhouse/start.sh "$state/clickhouse" "$ch_port"
wait_port clickhouse "$ch_port"
supervise nats bin/nats-server -a 127.0.0.1 -p "$nats_port" -js -sd "$state/nats"
wait_port nats "$nats_port"
log "NATS nats://127.0.0.1:$nats_port and ClickHouse 127.0.0.1:$ch_port are up (logs in .run/logs/)"

am_hint="    (apt-get install prometheus-alertmanager, and make run forwards alerts to one)"
if [[ -n $am_bin ]]; then
  supervise alertmanager "$am_bin" --config.file="$state/alertmanager/alertmanager.yml" \
    --storage.path="$state/alertmanager/data" --web.listen-address=127.0.0.1:"$am_port" --cluster.listen-address=
  wait_port alertmanager "$am_port"
  am_hint="    Alertmanager: http://127.0.0.1:$am_port (curl -s 127.0.0.1:$am_port/api/v2/alerts)"
fi
nats_url=nats://127.0.0.1:"$nats_port"
supervise detector "$bin/netpulse-detector" --nats.url="$nats_url" --metrics.addr=127.0.0.1:"${metrics_ports[1]}" "${detector_args[@]}"
supervise sink "$bin/netpulse-sink" --nats.url="$nats_url" --metrics.addr=127.0.0.1:"${metrics_ports[2]}" --clickhouse.addr=127.0.0.1:"$ch_port"
supervise probe "$bin/netpulse-probe" --nats.url="$nats_url" --metrics.addr=127.0.0.1:"${metrics_ports[0]}"

ch_client=$(command -v clickhouse-client || echo "clickhouse client")
cat >&2 <<MSG

  netpulse is running. Every TCP state change on this host becomes a row within about 2 s.

  Watch the raw event stream and probe health:
    bin/nats --server nats://127.0.0.1:$nats_port stream info NETPULSE_EVENTS
    bin/nats --server nats://127.0.0.1:$nats_port sub 'netpulse.events.*.stats'
  Alerts:
    bin/nats --server nats://127.0.0.1:$nats_port sub 'netpulse.alerts.>'
$am_hint
  netpulse's own health (Prometheus format; /readyz says what a service waits for):
    curl -s 127.0.0.1:${metrics_ports[0]}/metrics | grep '^netpulse_probe_events'
    curl -s 127.0.0.1:${metrics_ports[2]}/readyz
  First SQL query:
    $ch_client --port $ch_port --query "SELECT new_state, count() FROM netpulse.tcp_events WHERE time > now() - 300 GROUP BY new_state ORDER BY count() DESC"
  Full logs: .run/logs/. Ctrl-C stops everything.

MSG
# Until a signal: the supervisors keep every service up.
while true; do sleep 3600 & wait $! || true; done
