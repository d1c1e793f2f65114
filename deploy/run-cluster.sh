#!/usr/bin/env bash
# `make run-cluster`: `make run` as it would run in production, on loopback.
#
# A 3-node NATS JetStream cluster (TLS on the client ports, one user per role
# from deploy/nats/accounts.sh, every stream and bucket R3), ZooKeeper and a
# ClickHouse 18.16 cluster of two shards, the second with two replicas (TLS on
# the secure native ports, the users of deploy/clickhouse/users.d), then the
# detector, two sinks sharing one durable, and the probe. The CA, certificates
# and passwords are made on the first run and kept under .run-cluster/ (with
# the data and logs); a second run reuses them all. Ctrl-C stops everything
# in reverse order.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)
state="$root/.run-cluster"
rel=.run-cluster # what the printout shows: commands run from the repository root
tls="$state/tls"
secrets="$state/secrets"

# Fixed ports, apart from make run's (4222, 9000) and the usual defaults.
nats_ports=(4231 4232 4233)
route_ports=(6231 6232 6233)
zk_port=2191
ch_names=(s1r1 s2r1 s2r2) # {replica} macros: shard 1 one replica, shard 2 two
ch_shard=(1 2 2)
ch_ports=(9101 9102 9103)        # plaintext native: admin as user default, loopback only
ch_secure_ports=(9441 9442 9443) # TLS native: the sinks, analysts, Distributed tables
ch_interserver_ports=(9111 9112 9113)
metrics_ports=(9531 9532 9533 9534) # /metrics of the probe, the detector, sink 1, sink 2
cluster=netpulse

log() { printf '\033[1mmake run-cluster:\033[0m %s\n' "$*" >&2; }
die() {
  log "$*"
  exit 1
}

port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

check_ports_free() {
  local p
  for p in "${nats_ports[@]}" "${route_ports[@]}" "$zk_port" "${ch_ports[@]}" "${ch_secure_ports[@]}" "${ch_interserver_ports[@]}" "${metrics_ports[@]}"; do
    if port_open "$p"; then
      die "127.0.0.1:$p is already in use; stop what listens there (ss -ltnp 'sport = :$p') and retry"
    fi
  done
}

# ensure_tools: what make run builds, plus the nats CLI, which here also
# hashes the NATS passwords (bcrypt).
ensure_tools() {
  command -v openssl >/dev/null || die "openssl is needed for the TLS certificates (apt-get install openssl)"
  bash deploy/clickhouse/install.sh
  local tools=0
  bash deploy/nats/tools.sh || tools=$?
  case $tools in
  0) ;;
  3) die "could not build the nats CLI; make run-cluster needs it to hash the NATS passwords" ;;
  *) die "could not build nats-server" ;;
  esac
}

# make_tls: a CA and one server certificate (127.0.0.1, ::1, localhost) that
# every NATS and ClickHouse server presents. RSA: 18.16's OpenSSL takes it.
make_tls() {
  [[ -f $tls/server.pem && -f $tls/server-key.pem && -f $tls/ca.pem ]] && return 0
  log "making a CA and the servers' certificate under $rel/tls (once)"
  mkdir -p "$tls"
  chmod 700 "$tls"
  (
    umask 077
    cd "$tls"
    openssl req -x509 -newkey rsa:2048 -nodes -days 3650 -subj "/CN=netpulse run-cluster CA" \
      -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign" \
      -keyout ca-key.pem -out ca.pem 2>/dev/null
    openssl req -newkey rsa:2048 -nodes -subj "/CN=netpulse run-cluster server" \
      -keyout server-key.pem -out server.csr 2>/dev/null
    printf '%s\n' "subjectAltName=IP:127.0.0.1,IP:::1,DNS:localhost" \
      "extendedKeyUsage=serverAuth,clientAuth" "keyUsage=critical,digitalSignature,keyEncipherment" >server.ext
    openssl x509 -req -in server.csr -CA ca.pem -CAkey ca-key.pem -CAcreateserial -days 825 \
      -extfile server.ext -out server.pem 2>/dev/null
    rm -f server.csr server.ext ca.srl
    chmod 644 ca.pem # the CA certificate is no secret
  )
}

# secret NAME: the path of secret NAME, a random password made on first use
# (mode 600; a second run reads the same one).
secret() {
  local f="$secrets/$1"
  if [[ ! -s $f ]]; then
    (umask 077 && openssl rand -hex 24 >"$f")
  fi
  printf '%s' "$f"
}

sha256_of() { tr -d '\n' <"$1" | sha256sum | cut -d' ' -f1; }
bcrypt_of() { PASSWORD=$(<"$1") bin/nats server passwd --cost 11; }

# The probe's host token: its host name with what a subject cannot hold
# replaced, as the probe does (host_replacement "_"); given as --host too.
host_token() {
  local h
  h=$(hostname)
  h=${h//[.*> $'\t']/_}
  [[ $h =~ ^[A-Za-z0-9_-]+$ ]] || die "host name '$h' is not a NATS subject token; set a simpler one"
  printf '%s' "$h"
}

# render_nats: accounts.conf from the role passwords and one server config
# per node from deploy/nats/server.conf.tmpl plus its cluster block.
render_nats() {
  local dir="$state/nats" i p routes="" route_pw
  mkdir -p "$dir"
  chmod 700 "$dir"
  route_pw=$(<"$(secret nats-route.pw)")
  (
    umask 077
    bash deploy/nats/accounts.sh \
      --probe "$host=password:$(bcrypt_of "$(secret nats-probe.pw)")" \
      --detector "password:$(bcrypt_of "$(secret nats-detector.pw)")" \
      --sink "password:$(bcrypt_of "$(secret nats-sink.pw)")" \
      --viewer "password:$(bcrypt_of "$(secret nats-viewer.pw)")" >"$dir/accounts.conf"
  )
  for p in "${route_ports[@]}"; do
    routes+="nats-route://route:$route_pw@127.0.0.1:$p, "
  done
  local tmpl conf
  tmpl=$(<deploy/nats/server.conf.tmpl)
  for i in 0 1 2; do
    conf=${tmpl//@NAME@/"n$((i + 1))"}
    conf=${conf//@LISTEN@/"127.0.0.1:${nats_ports[i]}"}
    conf=${conf//@CERT_FILE@/"$tls/server.pem"}
    conf=${conf//@KEY_FILE@/"$tls/server-key.pem"}
    conf=${conf//@CA_FILE@/"$tls/ca.pem"}
    conf=${conf//@STORE_DIR@/"$dir/n$((i + 1))"}
    # Routes stay on loopback without TLS, but need the route password.
    (umask 077 && printf '%s\n\ncluster {\n  name: netpulse-run-cluster\n  listen: 127.0.0.1:%s\n  authorization { user: route, password: "%s" }\n  routes: [%s]\n}\n' \
      "$conf" "${route_ports[i]}" "$route_pw" "${routes%, }" >"$dir/n$((i + 1)).conf")
  done
}

# render_clickhouse DIR SECURE_PORT: config.d/tls.xml from tls.xml.tmpl, the
# CA that servers check each other with (Distributed tables connect over
# TLS), and users.d/netpulse.xml with the passwords' SHA-256.
render_clickhouse() {
  local dir=$1 sp=$2 conf
  mkdir -p "$dir/config.d" "$dir/users.d"
  conf=$(<deploy/clickhouse/tls.xml.tmpl)
  conf=${conf//@TCP_PORT_SECURE@/"$sp"}
  conf=${conf//@CERT_FILE@/"$tls/server.pem"}
  conf=${conf//@KEY_FILE@/"$tls/server-key.pem"}
  conf=${conf//@CA_FILE@/"$tls/ca.pem"}
  conf=${conf//@VERIFICATION_MODE@/none}
  printf '%s\n' "$conf" >"$dir/config.d/tls.xml"
  cat >"$dir/config.d/tls-client.xml" <<XML
<?xml version="1.0"?>
<!-- This server as a TLS client of the others (Distributed tables): trust the run's CA only. -->
<yandex>
    <openSSL>
        <client>
            <caConfig>$tls/ca.pem</caConfig>
            <loadDefaultCAFile>false</loadDefaultCAFile>
            <verificationMode>strict</verificationMode>
            <disableProtocols>sslv2,sslv3,tlsv1,tlsv1_1</disableProtocols>
            <invalidCertificateHandler><name>RejectCertificateHandler</name></invalidCertificateHandler>
        </client>
    </openSSL>
</yandex>
XML
  conf=$(<deploy/clickhouse/users.d/netpulse.xml.tmpl)
  conf=${conf//@SINK_PASSWORD_SHA256@/"$(sha256_of "$(secret ch-sink.pw)")"}
  conf=${conf//@ANALYST_PASSWORD_SHA256@/"$(sha256_of "$(secret ch-analyst.pw)")"}
  printf '%s\n' "$conf" >"$dir/users.d/netpulse.xml"
}

# analyst_client_config: clickhouse-client's config for the analyst: user,
# password and the CA for --secure (18.16's client reads them from a file).
analyst_client_config() {
  local f="$secrets/clickhouse-client-analyst.xml"
  (umask 077 && cat >"$f" <<XML
<?xml version="1.0"?>
<config>
    <user>netpulse_analyst</user>
    <password>$(<"$(secret ch-analyst.pw)")</password>
    <openSSL>
        <client>
            <caConfig>$tls/ca.pem</caConfig>
            <loadDefaultCAFile>false</loadDefaultCAFile>
            <verificationMode>strict</verificationMode>
            <invalidCertificateHandler><name>RejectCertificateHandler</name></invalidCertificateHandler>
        </client>
    </openSSL>
</config>
XML
  )
}

# Every child runs in a session of its own (setsid), so a Ctrl-C reaches only
# this script, which then stops them in order.
pids=() names=()
cleanup() {
  trap - INT TERM EXIT
  log "stopping"
  # Reverse order: the probe flushes to NATS, the sinks to ClickHouse, then the
  # servers go. The servers of one cluster stop together: a ClickHouse server
  # takes seconds to stop, and one by one they would each wait for the next.
  local i j k g
  for ((i = ${#pids[@]} - 1; i >= 0; i = j)); do
    g=$(group_of "${names[i]}")
    for ((j = i; j >= 0; j--)); do
      [[ $(group_of "${names[j]}") == "$g" ]] || break
      kill -TERM "${pids[j]}" 2>/dev/null || true
    done
    for ((k = i; k > j; k--)); do
      wait "${pids[k]}" 2>/dev/null || true
    done
  done
  log "stopped; data and secrets kept under $rel/"
  exit 0
}

# group_of NAME: clickhouse-s1r1 and nats-n2 belong to a cluster; a service is its own.
group_of() {
  case $1 in
  clickhouse-* | nats-*) printf '%s' "${1%%-*}" ;;
  *) printf '%s' "$1" ;;
  esac
}

started() { # name pid
  names+=("$1")
  pids+=("$2")
}

wait_port() { # name port pid
  local _
  for _ in $(seq 1 600); do
    port_open "$2" && return 0
    kill -0 "$3" 2>/dev/null || die "$1 exited; see $rel/logs/$1.log"
    sleep 0.1
  done
  die "$1 did not listen on 127.0.0.1:$2 within 60 s; see $rel/logs/$1.log"
}

# zk_serving: ZooKeeper answers srvr with its Mode (ruok says imok earlier,
# while it still drops sessions, and 18.16's DDL worker segfaults on that).
zk_serving() {
  local reply
  reply=$( (exec 3<>"/dev/tcp/127.0.0.1/$zk_port" && printf srvr >&3 && timeout 2 cat <&3) 2>/dev/null) || return 1
  [[ $reply == *$'\nMode: '* ]]
}

start_zookeeper() {
  setsid bash deploy/zookeeper/start.sh "$state/zookeeper" "$zk_port" >"$state/logs/zookeeper.log" 2>&1 &
  started zookeeper $!
  local _
  for _ in $(seq 1 600); do
    zk_serving && return 0
    kill -0 "${pids[-1]}" 2>/dev/null || die "zookeeper exited; see $rel/logs/zookeeper.log"
    sleep 0.1
  done
  die "zookeeper did not serve on 127.0.0.1:$zk_port within 60 s; see $rel/logs/zookeeper.log"
}

start_clickhouse() {
  local i shards="" name
  # "127.0.0.1:9441 127.0.0.1:9442,127.0.0.1:9443": shards by space, replicas by comma.
  for i in "${!ch_names[@]}"; do
    if ((i > 0)); then
      if [[ ${ch_shard[i]} == "${ch_shard[i - 1]}" ]]; then shards+=","; else shards+=" "; fi
    fi
    shards+="127.0.0.1:${ch_secure_ports[i]}"
  done
  for i in "${!ch_names[@]}"; do
    name=${ch_names[i]}
    render_clickhouse "$state/clickhouse/$name" "${ch_secure_ports[i]}"
    NETPULSE_CH_CLUSTER=$cluster NETPULSE_CH_SHARDS=$shards NETPULSE_CH_ZOOKEEPER="127.0.0.1:$zk_port" \
      NETPULSE_CH_SHARD=${ch_shard[i]} NETPULSE_CH_REPLICA=$name \
      NETPULSE_CH_INTERSERVER_PORT=${ch_interserver_ports[i]} NETPULSE_CH_SECURE_PORT=${ch_secure_ports[i]} \
      setsid bash deploy/clickhouse/start.sh "$state/clickhouse/$name" "${ch_ports[i]}" \
      >"$state/logs/clickhouse-$name.log" 2>&1 &
    started "clickhouse-$name" $!
  done
  for i in "${!ch_names[@]}"; do
    wait_port "clickhouse-${ch_names[i]}" "${ch_secure_ports[i]}" "${pids[-3 + i]}"
  done
  # Ready when each lists the whole cluster and has a ZooKeeper session.
  local _ q="SELECT (SELECT count() FROM system.clusters WHERE cluster = '$cluster') = ${#ch_names[@]} AND (SELECT count() FROM system.zookeeper WHERE path = '/') > 0"
  for i in "${!ch_names[@]}"; do
    for _ in $(seq 1 300); do
      [[ $(clickhouse-client --port "${ch_ports[i]}" --query "$q" 2>/dev/null) == 1 ]] && continue 2
      sleep 0.2
    done
    die "clickhouse-${ch_names[i]} did not join cluster $cluster within 60 s; see $rel/logs/clickhouse-${ch_names[i]}.log"
  done
}

nats_urls() {
  local p out=""
  for p in "${nats_ports[@]}"; do out+="tls://127.0.0.1:$p,"; done
  printf '%s' "${out%,}"
}

# viewer ARGS...: the nats CLI as the viewer, as the printout shows it.
viewer() {
  NATS_PASSWORD=$(<"$secrets/nats-viewer.pw") bin/nats --server "$(nats_urls)" --tlsca "$tls/ca.pem" \
    --user netpulse-viewer --inbox-prefix _INBOX.netpulse-viewer "$@"
}

start_nats() {
  local i
  for i in 0 1 2; do
    setsid bin/nats-server -c "$state/nats/n$((i + 1)).conf" >"$state/logs/nats-n$((i + 1)).log" 2>&1 &
    started "nats-n$((i + 1))" $!
  done
  for i in 0 1 2; do
    wait_port "nats-n$((i + 1))" "${nats_ports[i]}" "${pids[-3 + i]}"
  done
  # JetStream answers once the cluster has elected its meta leader (stream
  # names: what the viewer may ask; account info would be refused it).
  local _
  for _ in $(seq 1 300); do
    viewer --timeout 2s stream ls --names >/dev/null 2>&1 && return 0
    sleep 0.2
  done
  die "the NATS cluster's JetStream did not answer within 60 s; see $rel/logs/nats-n*.log"
}

# nats_flags ROLE USER: the nats.* keys of a service.
nats_flags() {
  printf '%s\n' "--nats.url=$(nats_urls)" "--nats.tls.ca_file=$tls/ca.pem" "--nats.user=$2" \
    "--nats.password_file=$secrets/nats-$1.pw" "--nats.inbox_prefix=_INBOX.$2"
}

start_services() {
  local -a det sink probe
  mapfile -t det < <(nats_flags detector netpulse-detector)
  det+=(--stream.replicas=3 --alerts_stream.replicas=3 --deadletter_stream.replicas=3)
  mapfile -t sink < <(nats_flags sink netpulse-sink)
  local addrs
  addrs=$(printf '127.0.0.1:%s,' "${ch_secure_ports[@]}")
  sink+=(--stream.replicas=3 --alerts_stream.replicas=3 "--clickhouse.addr=${addrs%,}" "--clickhouse.cluster=$cluster"
    --clickhouse.tls.enabled=true "--clickhouse.tls.ca_file=$tls/ca.pem"
    --clickhouse.username=netpulse_sink "--clickhouse.password_file=$secrets/ch-sink.pw")
  mapfile -t probe < <(nats_flags probe "netpulse-probe-$host")
  probe+=("--host=$host" --stream.replicas=3)

  setsid bin/netpulse-detector "${det[@]}" "--metrics.addr=127.0.0.1:${metrics_ports[1]}" 2> >(tee "$state/logs/detector.log" >&2) &
  started detector $!
  local n
  for n in 1 2; do
    setsid bin/netpulse-sink "${sink[@]}" "--metrics.addr=127.0.0.1:${metrics_ports[n + 1]}" 2> >(tee "$state/logs/sink-$n.log" >&2) &
    started "sink-$n" $!
  done
  setsid bin/netpulse-probe "${probe[@]}" "--metrics.addr=127.0.0.1:${metrics_ports[0]}" 2> >(tee "$state/logs/probe.log" >&2) &
  started probe $!
}

print_where_to_look() {
  local ch_client
  ch_client=$(command -v clickhouse-client || echo "clickhouse client")
  local v
  v="NATS_PASSWORD=\$(cat $rel/secrets/nats-viewer.pw) bin/nats --server $(nats_urls) --tlsca $rel/tls/ca.pem --user netpulse-viewer --inbox-prefix _INBOX.netpulse-viewer"
  local c="$ch_client --config-file $rel/secrets/clickhouse-client-analyst.xml --secure --host 127.0.0.1"
  cat >&2 <<MSG

  netpulse is running on a NATS cluster (tls://127.0.0.1:${nats_ports[0]},${nats_ports[1]},${nats_ports[2]}, R3) and a
  ClickHouse cluster '$cluster' (shard 1: 127.0.0.1:${ch_secure_ports[0]}; shard 2: 127.0.0.1:${ch_secure_ports[1]}, ${ch_secure_ports[2]}; TLS),
  with two sinks sharing one durable. Started in $((SECONDS - t0)) s. Secrets in $rel/secrets/, CA in $rel/tls/ca.pem,
  logs in $rel/logs/. Every TCP state change on this host becomes a row within about 2 s.

  As the viewer (NATS), the stream, the sinks' shared consumer, the alerts:
    $v stream info NETPULSE_EVENTS
    $v consumer info NETPULSE_EVENTS netpulse-sink
    $v sub 'netpulse.alerts.>'
  As the analyst (ClickHouse, read-only), through the Distributed tables:
    $c --port ${ch_secure_ports[0]} --query "SELECT new_state, count() FROM netpulse.tcp_events WHERE time > now() - 300 GROUP BY new_state ORDER BY count() DESC"
  Rows on each server (shard 1; shard 2's two replicas):
    for p in ${ch_secure_ports[*]}; do $c --port \$p --query "SELECT \$p, count() FROM netpulse.tcp_events_local"; done

  Ctrl-C stops everything.

MSG
}

main() {
  [[ $EUID -eq 0 ]] || die "the probe loads eBPF programs: run as root (sudo make run-cluster)"
  check_ports_free
  ensure_tools
  t0=$SECONDS
  mkdir -p "$state/logs" "$state/clickhouse" "$secrets"
  chmod 700 "$secrets"
  host=$(host_token)
  make_tls
  render_nats
  analyst_client_config
  trap cleanup INT TERM EXIT

  start_zookeeper
  start_clickhouse
  log "ZooKeeper 127.0.0.1:$zk_port and ClickHouse cluster $cluster (${ch_secure_ports[*]}) are up"
  start_nats
  log "NATS cluster $(nats_urls) is up"
  start_services
  print_where_to_look

  # A sink may die while another runs (they share the stream): the run goes
  # on. Anything else that exits ends the run (and the trap stops the rest).
  local died i status
  while true; do
    status=0
    wait -n -p died "${pids[@]}" || status=$?
    for i in "${!pids[@]}"; do
      [[ ${pids[i]} == "$died" ]] || continue
      if [[ ${names[i]} == sink-* ]] && live_sinks; then
        log "${names[i]} exited (status $status); the other sink keeps storing (see $rel/logs/${names[i]}.log)"
        unset 'pids[i]' 'names[i]'
        pids=("${pids[@]}") names=("${names[@]}")
        continue 2
      fi
      log "${names[i]} exited (status $status); stopping the rest (see $rel/logs/)"
      break 2
    done
    break
  done
}

live_sinks() {
  local i
  for i in "${!pids[@]}"; do
    [[ ${names[i]} == sink-* && ${pids[i]} != "$died" ]] && kill -0 "${pids[i]}" 2>/dev/null && return 0
  done
  return 1
}

main "$@"
