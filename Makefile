# ringmesh: make help lists the targets.
GO       ?= go
PYTHON   ?= /usr/bin/python3
BIN      := bin/ringmesh
FUZZTIME ?= 20s
PKGS     := ./...
GLOO     ?= bench/gloo_allreduce.py

SIMS     ?= 100000
CHAOS    ?= 10m
CHAOS_HOSTS ?= 5
CHAOS_SIZE ?= 4096
CHAOS_PARTS ?= 1

.PHONY: help build install test test-deps test-go test-python lint tidy demo bench fuzz sim chaos clean

help: ## list the targets
	@grep -hE '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-12s %s\n", $$1, $$2}'

# The VCS revision for ringmesh --version, where go build records none
# (GOFLAGS=-buildvcs=false, or a tarball without .git).
REV      := $(shell git rev-parse --short=12 HEAD 2>/dev/null)
REVISION := $(REV)$(if $(REV),$(shell git diff --quiet HEAD 2>/dev/null || echo +dirty))

PREFIX   ?= /usr/local

install: build ## install bin/ringmesh into PREFIX/bin (default /usr/local/bin)
	install -D -m 0755 $(BIN) $(DESTDIR)$(PREFIX)/bin/ringmesh

build: ## build bin/ringmesh
	$(GO) build -ldflags "-X github.com/ringmesh/ringmesh/internal/buildinfo.Revision=$(REVISION)" -o $(BIN) ./cmd/ringmesh

test: test-deps build test-go test-python ## run every test (Go with -race, then the Python client); installs what they need (root) or says how

# test-deps installs the packages the tests need (as root, with apt-get)
# or stops with the command to run; RINGMESH_SKIP_DEPS=1 skips the check
# (the lab tests then skip, the torch tests fail).
test-deps:
	@[ "$${RINGMESH_SKIP_DEPS:-0}" = 1 ] || PYTHON=$(PYTHON) scripts/test-deps.sh

# node/rounds is pure single-goroutine code: its simulation runs without
# -race (the race detector slows it tenfold and has nothing to find there).
test-go:
	RINGMESH_BIN=$(CURDIR)/$(BIN) $(GO) test -race -count=1 -timeout 20m $$($(GO) list $(PKGS) | grep -v /node/rounds$$)
	@$(GO) test -count=1 -v ./node/rounds > .rounds-test.log 2>&1; rc=$$?; \
		grep -E '^(sim:|--- FAIL|FAIL|ok)|seed|replay|_test.go' .rounds-test.log; rm -f .rounds-test.log; exit $$rc

test-python: build
	@if [ -d python/tests ] && ls python/tests/test_*.py >/dev/null 2>&1; then \
		RINGMESH_BIN=$(CURDIR)/$(BIN) PYTHONPATH=python $(PYTHON) -m unittest discover -v -s python/tests -t python; \
	else echo "no python tests yet"; fi

lint: ## go vet and staticcheck
	$(GO) vet $(PKGS)
	$(GO) tool staticcheck $(PKGS)

tidy: ## fail if go mod tidy changes go.mod or go.sum
	cp go.mod /tmp/ringmesh-go.mod.bak; cp go.sum /tmp/ringmesh-go.sum.bak
	$(GO) mod tidy
	@diff -q go.mod /tmp/ringmesh-go.mod.bak && diff -q go.sum /tmp/ringmesh-go.sum.bak || (echo "go.mod/go.sum not tidy"; exit 1)

demo: build ## run the demo: local nodes train, one is killed and rejoins
	./$(BIN) demo

bench: build ## print the benchmark lines (gloo baseline, all-reduce, recovery, mixed-speed training, lab); see BENCHMARKS.md
	@if [ -f $(GLOO) ] && $(PYTHON) -c 'import torch' 2>/dev/null; then \
		$(PYTHON) $(GLOO) 2 64 10 2>/dev/null; $(PYTHON) $(GLOO) 4 64 10 2>/dev/null; \
	else echo "gloo baseline skipped: needs $(GLOO) and python3-torch"; fi
	@for n in 2 4; do for d in float32 bfloat16; do \
		./$(BIN) bench allreduce --local $$n --size 64MiB --iters 10 --dtype $$d 2>/dev/null || exit 1; \
	done; done
	@./$(BIN) bench recovery --local 4 --size 64MiB --kills 10 2>/dev/null
	@./$(BIN) bench train --local 4 --speeds 1,1,2,4 2>/dev/null
	@RINGMESH_BIN=$(CURDIR)/$(BIN) $(GO) test -run '^$$' -bench 'Lab(Gloo|AllReduce|AllReduceMixed)$$' -benchtime 1x ./cmd/ringmesh/ | grep -E 'Benchmark|gloo n=|lab mixed|SKIP|skip' || true

fuzz: ## run each fuzz target for FUZZTIME
	@for pkg in $$($(GO) list $(PKGS)); do \
		for f in $$($(GO) test -list '^Fuzz' $$pkg 2>/dev/null | grep '^Fuzz'); do \
			echo "fuzz $$pkg $$f"; $(GO) test -run '^$$' -fuzz "^$$f$$" -fuzztime $(FUZZTIME) $$pkg || exit 1; \
		done; \
	done

sim: ## run SIMS (100000) seeded fault schedules of the round protocol
	@$(GO) test -count=1 -v -timeout 60m -run 'TestSimulation$$' ./node/rounds -sim.schedules=$(SIMS) > .sim.log 2>&1; rc=$$?; \
		grep -E '^(sim:|--- FAIL|FAIL|ok)|seed|replay' .sim.log; rm -f .sim.log; exit $$rc

chaos: build ## inject CHAOS (10m) of kills, isolations and splits into CHAOS_HOSTS (5) nodes in a namespace lab (root); CHAOS_SIZE elements per round (4096; 2097152 takes direct lanes), CHAOS_PARTS parts (1)
	@RINGMESH_BIN=$(CURDIR)/$(BIN) RINGMESH_KEEP_LOGS=$(CURDIR)/.chaos-logs $(GO) test -count=1 -v -timeout 90m -run 'TestLabChaos$$' ./cmd/ringmesh -chaos.for=$(CHAOS) -chaos.hosts=$(CHAOS_HOSTS) -chaos.size=$(CHAOS_SIZE) -chaos.parts=$(CHAOS_PARTS) > .chaos.log 2>&1; rc=$$?; \
		grep -E '^(--- |FAIL|ok|PASS)|chaos_test.go|rounds_test.go|netlab: skipping' .chaos.log; \
		if [ $$rc != 0 ]; then echo "full log: .chaos.log, node logs: .chaos-logs/"; else rm -f .chaos.log; fi; exit $$rc

clean: ## remove build outputs
	rm -rf bin demo-out
