#!/usr/bin/env bash
# Installs the Debian packages netpulse needs to build, regenerate and test:
# clang 14 + libbpf headers (eBPF), protoc (event contract), ClickHouse,
# and the ground-truth tools the tests and benchmarks compare against.
set -euo pipefail
pkgs=(clang-14 llvm libbpf-dev bpftool protobuf-compiler bpftrace nftables libbpf-tools iproute2
      clickhouse-server clickhouse-client)
missing=()
for p in "${pkgs[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
if [ ${#missing[@]} -eq 0 ]; then
  echo "deps: all present"
  exit 0
fi
echo "deps: installing ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
apt-get update -q
apt-get install -y -q --no-install-recommends "${missing[@]}"
