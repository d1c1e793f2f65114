#!/usr/bin/env bash
# Installs the Debian packages netpulse needs to build, regenerate and test:
# clang 14 + libbpf headers (eBPF), protoc (event contract), ClickHouse,
# ZooKeeper (a ClickHouse cluster's replication, for its tests and
# `make run-cluster`), and the ground-truth tools the tests and benchmarks
# compare against; Prometheus and Alertmanager (their tests scrape and
# notify for real; nothing is started as a service); systemd for systemd-analyze, which checks the units of
# deploy/systemd (nothing is started).
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# Debian's zookeeper package is the jars and a JRE, with no service (that
# is zookeeperd): nothing starts; deploy/zookeeper/start.sh runs netpulse's own.
pkgs=(clang-14 llvm libbpf-dev bpftool protobuf-compiler bpftrace nftables libbpf-tools iproute2 prometheus prometheus-alertmanager zookeeper systemd)
missing=()
for p in "${pkgs[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
if [ ${#missing[@]} -eq 0 ]; then
  echo "deps: build and test tools present"
else
  echo "deps: installing ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -q
  apt-get install -y -q "${missing[@]}"
fi
# ClickHouse through its own script: it keeps the packaged system service
# from starting (netpulse runs its own server, on loopback, per run or test).
bash "$here/clickhouse/install.sh"
# Debian 12's 6.1 kernel BTF: the probe's CO-RE relocations are checked
# against it (tracer TestCORECompat), whatever kernel runs the tests.
bash "$here/btf/fetch-6.1.sh"
