# Slicehub: everything a person repeats is a target here.
#   make run    the whole platform on this machine (PostgreSQL, Consul, Nomad, gateway, a warm slice)
#   make test   unit and integration tests against the real parts
#   make bench  benchmarks, with baselines measured in the same run
SHELL := /bin/bash
export CHECKPOINT_DISABLE := 1
export PATH := $(CURDIR)/bin:$(PATH)
GO ?= go
STATE_DIR ?= $(CURDIR)/.slicehub
# Integration test packages each start their own agents; two at once is all
# two cores carry.
TEST_PARALLEL ?= 2
TEST_TIMEOUT ?= 30m

.PHONY: all tools build image run test test-short bench fmt lint vet clean

all: build

## tools: Debian packages and the nomad/consul agents (idempotent)
tools:
	@bash ops/tools.sh

## build: the gateway, the ops CLI and the reference slice into ./bin
build:
	$(GO) build -o bin/slicehub ./cmd/slicehub
	$(GO) build -o bin/slicectl ./cmd/slicectl
	CGO_ENABLED=0 $(GO) build -trimpath -o bin/slice ./cmd/slice

## image: the slice image, built offline (mmdebstrap base + Dockerfile)
image:
	@bash ops/image.sh

## run: the embedded default platform; Ctrl-C stops everything it started
run: tools build
	@if docker info >/dev/null 2>&1; then bash ops/image.sh >/dev/null; fi
	bin/slicehub dev --state-dir "$(STATE_DIR)"

## test: unit tests and integration tests against real agents
test: tools build
	@if docker info >/dev/null 2>&1; then bash ops/image.sh >/dev/null; else echo "test: Docker is not running; the docker-driver tests will FAIL" >&2; fi
	$(GO) vet ./...
	$(GO) test -p $(TEST_PARALLEL) -timeout $(TEST_TIMEOUT) -count=1 ./...

## test-short: the fast tests only: starts no agent (testsupport.Main starts no stack under -short and
## skips, with the reason, every test that needs one) and must finish within 3 minutes
test-short:
	$(GO) test -short -count=1 -timeout 3m ./...

## bench: benchmarks (see README for what each reports); writes docs/reports/bench-YYYY-MM-DD.md with charts.
## PostgreSQL runs with production settings under -bench (testsupport), and the report says so, read from the server.
## (the go test output goes to test-artifacts/bench/bench.txt, BenchmarkProxyComparison adds proxy.json there,
## and ops/benchreport assembles the report from both)
bench: tools build
	@if docker info >/dev/null 2>&1; then bash ops/image.sh >/dev/null; fi
	@mkdir -p test-artifacts/bench && rm -f test-artifacts/bench/proxy.json test-artifacts/bench/postgres-*.json
	@# The report is written even when a benchmark fails (it lists the failures); make still fails then.
	set -o pipefail; status=0; \
	$(GO) test -run '^$$' -bench . -benchtime 3s -timeout 30m ./... 2>&1 | tee test-artifacts/bench/bench.txt || status=$$?; \
	$(GO) run ./ops/benchreport -in test-artifacts/bench -out docs/reports && exit $$status

fmt:
	gofmt -w $$(git ls-files '*.go')

## lint: vet, gofmt, and the exhaustive analyzer (pinned in ops/lint/go.mod, built into ./bin) over the switches on
## the domain's enums: a switch on a slice state, an admin action or an error kind must name every value (a default
## does not count), so a new state or action shows every switch that must learn it. EXHAUSTIVE_PKGS are the packages
## checked; the rest join as their switches are made exhaustive (the README says which).
EXHAUSTIVE_PKGS ?= . ./admin/... ./ops/... ./cmd/... ./password/... ./scheduler/... ./postgres/... ./billing/... ./telemetry/... ./gateway/...
EXHAUSTIVE_ENUMS := slicehub\.(SliceState|AdminAction|ActionInput|Kind)
lint: vet
	@out=$$(gofmt -l $$(git ls-files '*.go')); if [ -n "$$out" ]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi
	@$(GO) build -C ops/lint -o $(CURDIR)/bin/exhaustive github.com/nishanths/exhaustive/cmd/exhaustive
	@out=$$(bin/exhaustive $(EXHAUSTIVE_PKGS) 2>&1); status=$$?; \
	bad=$$(echo "$$out" | grep -E 'missing cases in switch of type $(EXHAUSTIVE_ENUMS):'); \
	if [ -n "$$bad" ]; then echo "switches that miss a case:"; echo "$$bad"; exit 1; fi; \
	if [ $$status -ne 0 ] && ! echo "$$out" | grep -q 'missing cases in switch'; then echo "$$out"; exit 1; fi

vet:
	$(GO) vet ./...

clean:
	rm -rf bin/slicehub bin/slicectl bin/slice

## chaos: every fault scenario under load against the real platform (make test runs a short version); writes docs/reports/chaos-YYYY-MM-DD.md
.PHONY: chaos
chaos: tools build
	@if docker info >/dev/null 2>&1; then bash ops/image.sh >/dev/null; else echo "chaos: Docker is not running; the scenarios need it" >&2; exit 1; fi
	SLICEHUB_CHAOS=1 $(GO) test -count=1 -timeout 40m -run TestChaos -v ./chaos/

## load: 500 users sign up through the gateway and use their own slice (HTTP + socket.io) for 3 minutes;
## slices are mock_driver allocations served by one `slice farm` process (package slice/farm).
## Writes docs/reports/load-YYYY-MM-DD.md. Knobs (environment): SLICEHUB_LOAD_USERS, SLICEHUB_LOAD_DURATION,
## SLICEHUB_LOAD_THINK, SLICEHUB_LOAD_ACK_EVERY, SLICEHUB_LOAD_WARM, SLICEHUB_LOAD_INFLIGHT.
.PHONY: load
load: tools
	SLICEHUB_LOAD=1 $(GO) test -count=1 -timeout 60m -run TestLoad -v ./loadtest/

## capacity: real docker slices with the stand-in's typical weight profile (modelled) until a memory budget, Nomad refusing placement, or the CPU;
## writes docs/reports/capacity-YYYY-MM-DD.md with its charts (CAPACITY_BUDGET_MB, CAPACITY_PROFILE, CAPACITY_MAX_SLICES, CAPACITY_DURATION: no new slice after it;
## CAPACITY_CHROMIUM=host: Chromium bind-mounted from the host, modelling overlay2, report capacity-chromium-host-YYYY-MM-DD.md)
.PHONY: capacity
CAPACITY_BUDGET_MB ?= 16384
CAPACITY_PROFILE ?= typical
CAPACITY_MAX_SLICES ?= 1000
CAPACITY_DURATION ?= 0s
CAPACITY_CHROMIUM ?= image
capacity: tools
	SLICEHUB_CAPACITY=1 SLICEHUB_CAPACITY_REPORT=1 SLICEHUB_CAPACITY_BUDGET_MB=$(CAPACITY_BUDGET_MB) SLICEHUB_CAPACITY_PROFILE=$(CAPACITY_PROFILE) \
		SLICEHUB_CAPACITY_MAX_SLICES=$(CAPACITY_MAX_SLICES) SLICEHUB_CAPACITY_DURATION=$(CAPACITY_DURATION) \
		SLICEHUB_CAPACITY_CHROMIUM=$(CAPACITY_CHROMIUM) $(GO) test -count=1 -timeout 120m -run TestCapacity -v ./jobs/

## signups: SIGNUPS_USERS (50) users sign up at once against the real gateway with min_warm SIGNUPS_WARM (10), real docker
## slices on the stand-in's SIGNUPS_PROFILE (typical) weight (modelled) and admission caps on (SIGNUPS_DISPATCHES 3,
## SIGNUPS_PAIRINGS 4, SIGNUPS_IMPORTS 2); claim → QR percentiles, queue waits, host memory peak; aborts under 1.5 GiB
## MemAvailable; SIGNUPS_GATEWAY_ARGS adds gateway flags (e.g. the slices' reservations, which bound what Nomad places).
## Writes docs/reports/signups-YYYY-MM-DD.md. Run it on a quiet machine.
.PHONY: signups
SIGNUPS_USERS ?= 50
SIGNUPS_WARM ?= 10
SIGNUPS_PROFILE ?= typical
SIGNUPS_DISPATCHES ?= 3
SIGNUPS_PAIRINGS ?= 4
SIGNUPS_IMPORTS ?= 2
SIGNUPS_GATEWAY_ARGS ?=
signups: tools build
	@if docker info >/dev/null 2>&1; then bash ops/image.sh >/dev/null; else echo "signups: Docker is not running; the slices need it" >&2; exit 1; fi
	SLICEHUB_SIGNUPS=1 SLICEHUB_SIGNUPS_REPORT=1 SLICEHUB_SIGNUPS_USERS=$(SIGNUPS_USERS) SLICEHUB_SIGNUPS_WARM=$(SIGNUPS_WARM) \
		SLICEHUB_SIGNUPS_PROFILE=$(SIGNUPS_PROFILE) SLICEHUB_SIGNUPS_DISPATCHES=$(SIGNUPS_DISPATCHES) \
		SLICEHUB_SIGNUPS_PAIRINGS=$(SIGNUPS_PAIRINGS) SLICEHUB_SIGNUPS_IMPORTS=$(SIGNUPS_IMPORTS) \
		SLICEHUB_SIGNUPS_GATEWAY_ARGS="$(SIGNUPS_GATEWAY_ARGS)" \
		$(GO) test -count=1 -timeout 60m -run TestSignups -v ./signups/

## scale: 1,000 then 5,000 mock_driver slices across two Nomad clients; writes docs/reports/scale-YYYY-MM-DD.md
## (SLICEHUB_SCALE_SIZES=1000,5000 sets the sizes; SCALE_NODE_MEMORY_MB each client's advertised memory: a mock slice
## reserves 10 MB, so the host's own memory would cap the run below 5,000; SCALE_NODE_MEMORY_MB= keeps the host's)
.PHONY: scale
SCALE_NODE_MEMORY_MB ?= 65536
scale: tools
	SLICEHUB_SCALE=1 SLICEHUB_SCALE_NODE_MEMORY_MB=$(SCALE_NODE_MEMORY_MB) $(GO) test -count=1 -timeout 60m -run TestScale -v ./scheduler/scaletest/

## soak: SOAK_SLICES real docker slices with the SOAK_PROFILE weight profile (modelled) and the governor on with the
## profile's own budget, for SOAK_DURATION, a phone message to each now and then; memory and governor restarts read
## every 10 s. Writes docs/reports/soak-YYYY-MM-DD.md (jobs/soak_test.go says what fails the run).
.PHONY: soak
SOAK_SLICES ?= 2
SOAK_PROFILE ?= heavy
SOAK_DURATION ?= 1h
soak: tools
	@if docker info >/dev/null 2>&1; then bash ops/image.sh >/dev/null; else echo "soak: Docker is not running; the slices need it" >&2; exit 1; fi
	SLICEHUB_SOAK=1 SLICEHUB_SOAK_REPORT=1 SLICEHUB_SOAK_SLICES=$(SOAK_SLICES) SLICEHUB_SOAK_PROFILE=$(SOAK_PROFILE) \
		SLICEHUB_SOAK_DURATION=$(SOAK_DURATION) $(GO) test -count=1 -timeout 150m -run TestSoak -v ./jobs/
