#!/usr/bin/env bash
# install.sh: make sure a ClickHouse server and client are installed.
#
# Idempotent: when a server binary is already there it only says so.
# Otherwise (as root) it installs Debian's clickhouse-server and
# clickhouse-client, non-interactively. netpulse runs its own server with
# start.sh, so the packaged system service is neither started by the install
# nor enabled at boot: it would take port 9000 and /var/lib/clickhouse.
set -euo pipefail

find_server() {
	local cand
	for cand in clickhouse-server /usr/sbin/clickhouse-server /usr/bin/clickhouse-server clickhouse; do
		if command -v "$cand"; then
			return 0
		fi
	done
	return 1
}

if path=$(find_server); then
	echo "install.sh: ClickHouse server already installed: $path"
	exit 0
fi

if [[ $(id -u) -ne 0 ]]; then
	echo "install.sh: no ClickHouse server found; run as root to install clickhouse-server and clickhouse-client with apt-get" >&2
	exit 1
fi

# policy-rc.d answering 101 is Debian's way to keep a package's postinst from
# starting its service. Leave an existing policy in place.
policy=/usr/sbin/policy-rc.d
if [[ ! -e $policy ]]; then
	printf '#!/bin/sh\nexit 101\n' >"$policy"
	chmod +x "$policy"
	trap 'rm -f "$policy"' EXIT
fi

export DEBIAN_FRONTEND=noninteractive
echo "install.sh: apt-get update"
apt-get update -q
echo "install.sh: apt-get install -y clickhouse-server clickhouse-client"
apt-get install -y -q clickhouse-server clickhouse-client

if [[ -d /run/systemd/system ]] && command -v systemctl >/dev/null; then
	echo "install.sh: systemctl disable clickhouse-server (netpulse starts its own server)"
	systemctl disable clickhouse-server >/dev/null 2>&1 || true
elif command -v update-rc.d >/dev/null && [[ -x /etc/init.d/clickhouse-server ]]; then
	echo "install.sh: update-rc.d clickhouse-server disable (netpulse starts its own server)"
	update-rc.d clickhouse-server disable >/dev/null 2>&1 || true
fi

path=$(find_server) || {
	echo "install.sh: apt-get succeeded but no ClickHouse server binary was found" >&2
	exit 1
}
echo "install.sh: installed ClickHouse server: $path ($(dpkg-query -W -f='${Version}' clickhouse-server 2>/dev/null || echo unknown version))"
