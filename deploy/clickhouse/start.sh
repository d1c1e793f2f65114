#!/usr/bin/env bash
# start.sh DIR [TCP_PORT]: run netpulse's ClickHouse server in the foreground.
#
# Renders config.xml.tmpl and users.xml (next to this script) into DIR, keeps
# every path of the server under DIR, listens on 127.0.0.1:TCP_PORT (native
# protocol, default 9000) only, and execs the server: Ctrl-C or SIGTERM stop
# it cleanly, and starting again on the same DIR reuses its data.
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

echo "start.sh: ${server[*]} on 127.0.0.1:$port (native), data and logs under $dir" >&2
exec "${server[@]}" --config-file="$dir/config.xml"
