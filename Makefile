# netpulse: the two commands a newcomer needs are `make run` and `make test`.
SHELL := /bin/bash
GO    ?= go
BIN   := bin
UNIT  := ./lib/... ./services/probe/... ./services/sink/... ./services/detector/... ./deploy/deploytest/...
E2E   := ./tests/e2e/...
PKGS  := $(UNIT) $(E2E)
# Pinned code generators: clang 14 (Debian 12) for eBPF, protoc 3.21 for the event contract.
CLANG   ?= clang-14
PROTOC  ?= protoc
GENPATHS := services/probe/internal/tracer/tcpstate_bpfel.go services/probe/internal/tracer/tcpstate_bpfel.o lib/eventpb/event.pb.go lib/eventpb/event_vtproto.pb.go

.PHONY: all build run run-cluster test bench generate check-generate deps vet fmt clean

all: build

# --version: the checkout's description and commit (go build stamps none
# in a workspace).
VERSION ?= $(shell git describe --always --dirty --tags 2>/dev/null || echo devel)
COMMIT  ?= $(shell git rev-parse HEAD 2>/dev/null || echo unknown)
LDFLAGS := -X github.com/netpulse/netpulse/lib/version.Version=$(VERSION) -X github.com/netpulse/netpulse/lib/version.Commit=$(COMMIT)

build:
	@mkdir -p $(BIN)
	$(GO) build -ldflags '$(LDFLAGS)' -o $(BIN)/netpulse-probe ./services/probe/cmd/probe
	$(GO) build -ldflags '$(LDFLAGS)' -o $(BIN)/netpulse-sink ./services/sink/cmd/sink
	$(GO) build -ldflags '$(LDFLAGS)' -o $(BIN)/netpulse-detector ./services/detector/cmd/detector

# The whole pipeline on this machine, as root: NATS, ClickHouse, probe, detector, sink.
run: build
	@bash deploy/run.sh

# The same on loopback clusters, secured: 3 NATS nodes (TLS, a user per role,
# R3), ClickHouse 2 shards x (1, 2) replicas with ZooKeeper (TLS, shipped users),
# two sinks. State and secrets under .run-cluster/ (README "The two commands").
run-cluster: build
	@bash deploy/run-cluster.sh

# Every test; the privileged ones too when run as root.
# The probe sees every socket on the host, so test packages run one at a
# time (-p 1), the end-to-end tests last: another package's traffic is never
# in a test's view. (In parallel it saved seconds and made kernel tests flaky.)
test: vet
	$(GO) test -p 1 -count=1 -timeout 30m $(UNIT)
	$(GO) test -p 1 -count=1 -timeout 30m $(E2E)

# Throughput and overhead figures (see README "Performance").
bench:
	@bash deploy/bench.sh

# Installs what building, generating and testing need (Debian 12, as root).
deps:
	@bash deploy/deps.sh

generate:
	@$(CLANG) --version | head -1 | grep -q 'clang version 14\.' || { echo "make generate needs clang 14 (got: $$($(CLANG) --version | head -1))"; exit 1; }
	@$(PROTOC) --version | grep -q 'libprotoc 3\.21\.' || { echo "make generate needs protoc 3.21 (got: $$($(PROTOC) --version))"; exit 1; }
	$(MAKE) -C bpf generate
	@mkdir -p .cache/protoc-plugins
	cd lib && $(GO) build -o ../.cache/protoc-plugins/protoc-gen-go google.golang.org/protobuf/cmd/protoc-gen-go
	cd lib && $(GO) build -o ../.cache/protoc-plugins/protoc-gen-go-vtproto github.com/planetscale/vtprotobuf/cmd/protoc-gen-go-vtproto
	cd lib/eventpb && $(PROTOC) \
		--plugin=protoc-gen-go=../../.cache/protoc-plugins/protoc-gen-go \
		--plugin=protoc-gen-go-vtproto=../../.cache/protoc-plugins/protoc-gen-go-vtproto \
		--go_out=. --go_opt=paths=source_relative \
		--go-vtproto_out=. --go-vtproto_opt=paths=source_relative,features=marshal+unmarshal+unmarshal_unsafe+size+pool,pool=github.com/netpulse/netpulse/lib/eventpb.Batch,pool=github.com/netpulse/netpulse/lib/eventpb.Event,pool=github.com/netpulse/netpulse/lib/eventpb.Connection \
		event.proto

# CI: regenerating must not change what is committed.
check-generate: generate
	@if [ -n "$$(git status --porcelain -- $(GENPATHS))" ]; then \
		echo "generated files differ from the committed ones; run 'make generate' and commit:"; \
		git status --porcelain -- $(GENPATHS); git diff --stat -- $(GENPATHS); exit 1; fi
	@echo "generated files are up to date"

vet:
	$(GO) vet $(PKGS)
	@out=$$(gofmt -l lib services deploy/deploytest | grep -v '_bpfel\.go$$'); if [ -n "$$out" ]; then echo "gofmt needed: $$out"; exit 1; fi

clean:
	rm -rf $(BIN) .cache
