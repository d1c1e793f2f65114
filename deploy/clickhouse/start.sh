#!/usr/bin/env bash
# start.sh DIR [TCP_PORT]: run netpulse's ClickHouse server in the foreground.
#
# Renders config.xml.tmpl and users.xml (next to this script) into DIR, keeps
# every path of the server under DIR, listens on 127.0.0.1:TCP_PORT (native
# protocol, default 9000) only, and execs the server: Ctrl-C or SIGTERM stop
# it cleanly, and starting again on the same DIR reuses its data.
#
# As one server of a cluster (replicated tables, ON CLUSTER DDL, Distributed
# tables), it also renders cluster.xml.tmpl into DIR/config.d/cluster.xml
# from these variables, all required once NETPULSE_CH_CLUSTER is set:
#   NETPULSE_CH_CLUSTER           the cluster's name, e.g. netpulse
#   NETPULSE_CH_SHARDS            its shards, space-separated, each a
#                                 comma-separated list of replicas' host:port
#                                 (native ports), this server's 127.0.0.1:TCP_PORT
#                                 among them: "127.0.0.1:9001 127.0.0.1:9002,127.0.0.1:9003"
#   NETPULSE_CH_ZOOKEEPER         ZooKeeper servers, comma-separated host:port
#   NETPULSE_CH_SHARD             this server's {shard} macro, e.g. 2
#   NETPULSE_CH_REPLICA           its {replica} macro, unique in the cluster
#   NETPULSE_CH_INTERSERVER_PORT  its replication port (127.0.0.1 only)
# and optionally
#   NETPULSE_CH_SECURE_PORT       this server's secure native port (tcp_port_secure,
#                                 which config.d/tls.xml from tls.xml.tmpl opens): then
#                                 NETPULSE_CH_SHARDS lists the replicas' secure ports,
#                                 marked <secure>1</secure>, so Distributed tables and a
#                                 sink with clickhouse.tls.enabled reach the shards over TLS
# Without NETPULSE_CH_CLUSTER an existing config.d/cluster.xml is left as it
# is: a cluster server restarts with just DIR and TCP_PORT.
#
# Exit status: 64 bad usage, 69 no ClickHouse server binary installed
# (deploy/clickhouse/install.sh installs one); otherwise the server's own.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)

usage() {
	echo "usage: $0 DIR [TCP_PORT]" >&2
	exit 64
}

[[ $# -ge 1 && $# -le 2 && -n $1 ]] || usage
port=${2:-9000}
if ! [[ $port =~ ^[0-9]{1,5}$ ]] || ((port < 1 || port > 65535)); then
	echo "start.sh: TCP_PORT must be 1..65535, got '$port'" >&2
	exit 64
fi

# Debian's 18.16 ships /usr/sbin/clickhouse-server; current releases ship one
# `clickhouse` binary (clickhouse-server is a symlink to it, when installed).
server=()
for cand in clickhouse-server /usr/sbin/clickhouse-server /usr/bin/clickhouse-server; do
	if path=$(command -v "$cand"); then
		server=("$path")
		break
	fi
done
if [[ ${#server[@]} -eq 0 ]] && path=$(command -v clickhouse); then
	server=("$path" server)
fi
if [[ ${#server[@]} -eq 0 ]]; then
	echo "start.sh: no ClickHouse server binary (clickhouse-server or clickhouse) found; run deploy/clickhouse/install.sh" >&2
	exit 69
fi

# DIR is pasted into XML: refuse what would need escaping rather than escape it.
check_dir() {
	if [[ $1 == *[\&\<\>\"\'$'\n']* ]]; then
		echo "start.sh: DIR must not contain & < > \" ' or a newline: $1" >&2
		exit 64
	fi
}
check_dir "$1"
mkdir -p "$1"
dir=$(cd "$1" && pwd -P)
check_dir "$dir"
mkdir -p "$dir"/{data,tmp,user_files,format_schemas,log}

config=$(<"$here/config.xml.tmpl")
config=${config//@DIR@/"$dir"}
config=${config//@TCP_PORT@/"$port"}
printf '%s\n' "$config" >"$dir/config.xml"
cp "$here/users.xml" "$dir/users.xml"

bad_cluster() {
	echo "start.sh: $1" >&2
	exit 64
}
# host:port, host a name or IPv4 address (an IPv6 one would need brackets).
check_hostport() {
	local hp=$1 what=$2
	[[ $hp =~ ^[A-Za-z0-9.-]+:([0-9]{1,5})$ ]] && ((BASH_REMATCH[1] >= 1 && BASH_REMATCH[1] <= 65535)) ||
		bad_cluster "$what must be host:port, got '$hp'"
}
render_cluster() {
	local v
	for v in NETPULSE_CH_SHARDS NETPULSE_CH_ZOOKEEPER NETPULSE_CH_SHARD NETPULSE_CH_REPLICA NETPULSE_CH_INTERSERVER_PORT; do
		[[ -n ${!v:-} ]] || bad_cluster "NETPULSE_CH_CLUSTER is set, so $v must be too"
	done
	[[ $NETPULSE_CH_CLUSTER =~ ^[A-Za-z_][A-Za-z0-9_]*$ ]] ||
		bad_cluster "NETPULSE_CH_CLUSTER must be an identifier, got '$NETPULSE_CH_CLUSTER'"
	for v in NETPULSE_CH_SHARD NETPULSE_CH_REPLICA; do
		[[ ${!v} =~ ^[A-Za-z0-9_.-]+$ ]] || bad_cluster "$v must be letters, digits, _ . or -, got '${!v}'"
	done
	local ip=$NETPULSE_CH_INTERSERVER_PORT
	[[ $ip =~ ^[0-9]{1,5}$ ]] && ((ip >= 1 && ip <= 65535 && ip != port)) ||
		bad_cluster "NETPULSE_CH_INTERSERVER_PORT must be 1..65535 and not TCP_PORT, got '$ip'"

	# With TLS between the servers, remote_servers (and so the DDL worker's
	# match on this server) holds the secure ports.
	local self_port=$port secure=""
	if [[ -n ${NETPULSE_CH_SECURE_PORT:-} ]]; then
		self_port=$NETPULSE_CH_SECURE_PORT
		if ! [[ $self_port =~ ^[0-9]{1,5}$ ]] || ((self_port < 1 || self_port > 65535 || self_port == port || self_port == ip)); then
			bad_cluster "NETPULSE_CH_SECURE_PORT must be 1..65535 and neither TCP_PORT nor the interserver port, got '$self_port'"
		fi
		secure="<secure>1</secure>"
	fi

	local zk="" hp shard rep self=0
	local -a hps
	IFS=, read -ra hps <<<"$NETPULSE_CH_ZOOKEEPER"
	for hp in "${hps[@]}"; do
		check_hostport "$hp" "a NETPULSE_CH_ZOOKEEPER server"
		zk+="        <node><host>${hp%:*}</host><port>${hp##*:}</port></node>"$'\n'
	done
	local shards=""
	for shard in $NETPULSE_CH_SHARDS; do
		# Writes go to one replica (the sink, or a Distributed table), which
		# replicates them itself: the Distributed table must not write each.
		shards+="            <shard>"$'\n'"                <internal_replication>true</internal_replication>"$'\n'
		IFS=, read -ra hps <<<"$shard"
		for rep in "${hps[@]}"; do
			check_hostport "$rep" "a NETPULSE_CH_SHARDS replica"
			[[ $rep == "127.0.0.1:$self_port" ]] && self=1
			shards+="                <replica><host>${rep%:*}</host><port>${rep##*:}</port>$secure</replica>"$'\n'
		done
		shards+="            </shard>"$'\n'
	done
	# 18.16's DDL worker finds its own entries by host and tcp_port (with
	# <secure>, tcp_port_secure): a server missing from its cluster would hang
	# every ON CLUSTER query.
	((self)) || bad_cluster "NETPULSE_CH_SHARDS must list this server, 127.0.0.1:$self_port"

	local conf
	conf=$(<"$here/cluster.xml.tmpl")
	conf=${conf//@ZOOKEEPER_NODES@/"${zk%$'\n'}"}
	conf=${conf//@SHARDS@/"${shards%$'\n'}"}
	conf=${conf//@CLUSTER@/"$NETPULSE_CH_CLUSTER"}
	conf=${conf//@SHARD@/"$NETPULSE_CH_SHARD"}
	conf=${conf//@REPLICA@/"$NETPULSE_CH_REPLICA"}
	conf=${conf//@INTERSERVER_PORT@/"$ip"}
	mkdir -p "$dir/config.d"
	printf '%s\n' "$conf" >"$dir/config.d/cluster.xml"
	echo "start.sh: cluster $NETPULSE_CH_CLUSTER shard $NETPULSE_CH_SHARD replica $NETPULSE_CH_REPLICA, interserver 127.0.0.1:$ip, ZooKeeper $NETPULSE_CH_ZOOKEEPER" >&2
}
if [[ -n ${NETPULSE_CH_CLUSTER:-} ]]; then
	render_cluster
fi

echo "start.sh: ${server[*]} on 127.0.0.1:$port (native), data and logs under $dir" >&2
exec "${server[@]}" --config-file="$dir/config.xml"
