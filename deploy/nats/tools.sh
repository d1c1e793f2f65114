#!/usr/bin/env bash
# tools.sh: build bin/nats-server (from its Go module) and the nats CLI
# bin/nats (natscli v0.5.1) once, for make run and make run-cluster.
# Exit status: 0 both there; 2 nats-server could not be built; 3 only the
# CLI could not (make run works without it).
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
say() { printf '\033[1mnats tools:\033[0m %s\n' "$*" >&2; }
if [[ ! -x $root/bin/nats-server ]]; then
  say "building nats-server from its Go module (once)"
  (cd "$root/lib" && go build -o ../bin/nats-server github.com/nats-io/nats-server/v2) || exit 2
fi
if [[ ! -x $root/bin/nats ]]; then
  say "building the nats CLI (once)"
  (cd /tmp && GOWORK=off GOBIN="$root/bin" go install github.com/nats-io/natscli/nats@v0.5.1) || exit 3
fi
