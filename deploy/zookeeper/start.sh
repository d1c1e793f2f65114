#!/usr/bin/env bash
# start.sh DIR PORT: run netpulse's standalone ZooKeeper in the foreground.
#
# Renders zoo.cfg.tmpl (next to this script) into DIR, keeps every file of
# the server under DIR, listens on 127.0.0.1:PORT only (no AdminServer),
# and execs the JVM: Ctrl-C or SIGTERM stop it, and starting again on the
# same DIR reuses its data. It logs to stderr.
#
# It serves once `srvr` (echo srvr | nc 127.0.0.1 PORT) answers with a
# "Mode:" line. ruok answers imok before that, while sessions' handshakes
# are still dropped, and a ClickHouse 18.16 server whose first ZooKeeper
# connection fails segfaults (its DDL worker): start ClickHouse after srvr.
#
# It runs the jars of Debian's zookeeper package directly rather than its
# zkServer.sh, which reads /etc/zookeeper and writes /var/log/zookeeper.
# That package ships no service, so nothing else runs a ZooKeeper here.
#
# Exit status: 64 bad usage, 69 no ZooKeeper or Java installed
# (deploy/deps.sh installs both); otherwise the server's own.
#
# ZK_HEAP (default 256m) sets the JVM's heap.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)

usage() {
	echo "usage: $0 DIR PORT" >&2
	exit 64
}

[[ $# -eq 2 && -n $1 ]] || usage
port=$2
if ! [[ $port =~ ^[0-9]{1,5}$ ]] || ((port < 1 || port > 65535)); then
	echo "start.sh: PORT must be 1..65535, got '$port'" >&2
	exit 64
fi
heap=${ZK_HEAP:-256m}
if ! [[ $heap =~ ^[0-9]+[kmg]?$ ]]; then
	echo "start.sh: ZK_HEAP must be like 256m, got '$heap'" >&2
	exit 64
fi

# Debian's layout: zookeeper.jar's manifest lists its dependencies
# (/usr/share/java/*.jar), except an SLF4J binding; slf4j-simple logs to
# stderr without a config file.
java=$(command -v java || true)
jars=/usr/share/java
missing=()
[[ -n $java ]] || missing+=(java)
for jar in zookeeper.jar zookeeper-jute.jar slf4j-api.jar slf4j-simple.jar; do
	[[ -f $jars/$jar ]] || missing+=("$jars/$jar")
done
if [[ ${#missing[@]} -gt 0 ]]; then
	echo "start.sh: ZooKeeper cannot run, missing: ${missing[*]}; run deploy/deps.sh (Debian's zookeeper package)" >&2
	exit 69
fi

# DIR goes into a Java properties file: refuse what would need escaping.
check_dir() {
	if [[ $1 == *[\\$'\n']* ]]; then
		echo "start.sh: DIR must not contain a backslash or a newline: $1" >&2
		exit 64
	fi
}
check_dir "$1"
mkdir -p "$1"
dir=$(cd "$1" && pwd -P)
check_dir "$dir"
mkdir -p "$dir"/{data,datalog}

config=$(<"$here/zoo.cfg.tmpl")
config=${config//@DIR@/"$dir"}
config=${config//@PORT@/"$port"}
printf '%s\n' "$config" >"$dir/zoo.cfg"

echo "start.sh: ZooKeeper $(dpkg-query -W -f='${Version}' zookeeper 2>/dev/null || echo '(unknown version)') on 127.0.0.1:$port, data under $dir" >&2
# QuorumPeerMain (Debian's ZOOMAIN) runs the standalone server when zoo.cfg
# lists no peers, and unlike ZooKeeperServerMain it also runs the autopurge.
# The JVM's JMX stays off: no extra port.
exec "$java" -Xms32m -Xmx"$heap" -XX:+UseSerialGC \
	-Dorg.slf4j.simpleLogger.showDateTime=true \
	-Dorg.slf4j.simpleLogger.dateTimeFormat=yyyy-MM-dd\'T\'HH:mm:ss.SSS \
	-cp "$jars/zookeeper.jar:$jars/slf4j-simple.jar" \
	org.apache.zookeeper.server.quorum.QuorumPeerMain "$dir/zoo.cfg"
