# rollcall — `make run` serves on 127.0.0.1:6001 (in-memory store);
# `make test` installs whatever the tests need that is missing, then runs
# every test. Nothing here assumes a service is already running.

SHELL := /bin/bash
CARGO ?= cargo
# apt-get needs root; use sudo when we are not root and it exists.
SUDO := $(if $(filter 0,$(shell id -u)),,sudo)
E2E := tests/e2e
# Where cargo puts binaries (honours CARGO_TARGET_DIR).
TARGET_DIR := $(or $(CARGO_TARGET_DIR),$(CURDIR)/target)

.PHONY: run build demo redis redis-cluster redis-cluster-stop test test-rust test-e2e lint deps deps-system deps-node clean bench bench-full bench-build bench-wait bench-cluster bench-deps soak fuzz fuzz-long fuzz-build fuzz-deps mutants mutants-deps

run:
	$(CARGO) run --release -- serve

build:
	$(CARGO) build --release

# A server on the in-memory store and a simulated meeting against it; the
# server stays up afterwards so the dashboard can be looked at (Ctrl-C
# stops it, DEMO_KEEP=0 stops it when the meeting is final). Shorter:
# `make demo DEMO_MINUTES=1 DEMO_PREP=10s`. See scripts/demo.sh.
demo: build
	ROLLCALL_BIN=$(TARGET_DIR)/release/rollcall scripts/demo.sh

# A local Redis from redis.conf on 127.0.0.1:6379, in the foreground
# (Ctrl-C stops it cleanly, fsyncing the AOF); data in ./.redis-data/.
# Then: ROLLCALL_REDIS_URL=redis://127.0.0.1:6379 make run. (On a host
# where Debian's redis-server service already holds 6379, stop it first.)
redis:
	@command -v redis-server >/dev/null || { $(SUDO) apt-get update -qq && $(SUDO) DEBIAN_FRONTEND=noninteractive apt-get install -y -qq redis-server; }
	mkdir -p .redis-data
	redis-server redis.conf --dir $(CURDIR)/.redis-data --daemonize no

# A local Redis Cluster (3 masters + 3 replicas from redis.conf on
# 127.0.0.1:7000-7005, data in ./.redis-cluster/), in the background; it
# prints the ROLLCALL_REDIS_CLUSTER line to use. `make redis-cluster-stop`.
redis-cluster:
	@command -v redis-server >/dev/null && command -v redis-cli >/dev/null || { $(SUDO) apt-get update -qq && $(SUDO) DEBIAN_FRONTEND=noninteractive apt-get install -y -qq redis-server redis-tools; }
	scripts/redis_cluster.sh

redis-cluster-stop:
	scripts/redis_cluster.sh stop

test: deps lint test-rust test-e2e

lint:
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --all-targets --quiet -- -D warnings

test-rust:
	$(CARGO) test --all-targets

test-e2e: deps-node
	$(CARGO) build --quiet
	cd $(E2E) && ROLLCALL_BIN=$(TARGET_DIR)/debug/rollcall node --test --test-concurrency=1

deps: deps-system deps-node

# Debian packages the tests use: Chromium for the dashboard test, Node.js
# for the real pusher-js / Laravel Echo / LiveKit SDK clients, redis-server
# for the Redis store and multi-node tests (they start their own), redis-cli
# (redis-tools; redis-server depends on it, checked anyway) for the Redis
# Cluster tests, which create their cluster with `redis-cli --cluster create`.
deps-system:
	@missing=""; \
	command -v chromium >/dev/null || missing="$$missing chromium"; \
	command -v node >/dev/null || missing="$$missing nodejs npm"; \
	command -v redis-server >/dev/null || missing="$$missing redis-server"; \
	command -v redis-cli >/dev/null || missing="$$missing redis-tools"; \
	if [ -n "$$missing" ]; then \
		echo "installing:$$missing"; \
		$(SUDO) apt-get update -qq && $(SUDO) DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing; \
	fi

deps-node:
	@if [ ! -d $(E2E)/node_modules ] || [ $(E2E)/package-lock.json -nt $(E2E)/node_modules/.package-lock.json ]; then \
		cd $(E2E) && npm ci --no-audit --no-fund --loglevel=error; \
	fi

clean:
	$(CARGO) clean
	rm -rf $(E2E)/node_modules

# ---- benchmarks (loopback only, bounded; see BENCHMARKS.md) ----
# `make bench`: short sizes of every scenario (a few minutes);
# `make bench-full`: the issue's sizes. Both start their own servers
# (rollcall, the bare tokio-tungstenite server, the Socket.IO peer, Redis).
# `make bench-wait` (WAIT 1 on a replica) and `make bench-cluster` (B1 on
# 3 nodes: one Redis vs a Redis Cluster) compare Redis set-ups in one run.
BENCH_DIR := bench
BENCH_TARGET_DIR ?= $(CURDIR)/$(BENCH_DIR)/target
ROLLCALL_BIN ?= $(or $(CARGO_TARGET_DIR),$(CURDIR)/target)/release/rollcall
BENCH := $(BENCH_TARGET_DIR)/release/rollcall-bench
BENCH_RUN = $(BENCH) $(1) --server-bin $(ROLLCALL_BIN) --socketio-dir $(BENCH_DIR)/socketio
PEERS := --target rollcall,bare,socketio

bench-deps: deps-system
	@command -v redis-server >/dev/null || { $(SUDO) apt-get update -qq && $(SUDO) DEBIAN_FRONTEND=noninteractive apt-get install -y -qq redis-server; }
	@if [ ! -d $(BENCH_DIR)/socketio/node_modules ] || [ $(BENCH_DIR)/socketio/package-lock.json -nt $(BENCH_DIR)/socketio/node_modules/.package-lock.json ]; then \
		cd $(BENCH_DIR)/socketio && npm ci --no-audit --no-fund --loglevel=error; \
	fi

bench-build: bench-deps
	$(CARGO) build --release
	cd $(BENCH_DIR) && CARGO_TARGET_DIR=$(BENCH_TARGET_DIR) $(CARGO) build --release

bench: bench-build
	$(call BENCH_RUN,b1) $(PEERS) --rooms 20 --subscribers 30 --rate 200 --secs 10
	$(call BENCH_RUN,b1) $(PEERS) --store redis --rooms 20 --subscribers 30 --rate 200 --secs 10
	$(call BENCH_RUN,b2) $(PEERS) --sockets 5000 --hold-secs 5
	$(call BENCH_RUN,b3) $(PEERS) --subscribers 2000 --start-rate 10 --steps 5 --step-secs 3
	$(call BENCH_RUN,b4) $(PEERS) --secs 5 --max-requests 100000
	$(call BENCH_RUN,b4) $(PEERS) --store redis --secs 5 --max-requests 100000
	$(call BENCH_RUN,b5) --attendees 5000 --secs 5 --heartbeat-timeout 10s --idle-secs 3
	$(call BENCH_RUN,b5) --store redis --attendees 5000 --secs 5 --heartbeat-timeout 10s --idle-secs 3
	$(call BENCH_RUN,b6) --attendees 500 --join-secs 10 --reloads 50 --heartbeats 500
	$(call BENCH_RUN,b6) --store redis --attendees 500 --join-secs 10 --reloads 50 --heartbeats 500
	$(call BENCH_RUN,b7) --nodes 6 --rooms-per-node 4 --attendees 20 --dashboards 1 --updates-per-room 40 --rate 200

# The cost of acknowledging on a replica (ROLLCALL_REDIS_WAIT_REPLICAS): B4
# on a Redis master + replica, without and with WAIT 1.
bench-wait: bench-build
	ROLLCALL_BIN=$(ROLLCALL_BIN) BENCH=$(BENCH) scripts/bench_wait.sh

# B1 on 3 rollcall nodes over three Redis back ends, one after the other in
# one run, twice alternating (same sizes, scaled down: ~3 min on 2 cores): one Redis, a 3+3
# Redis Cluster (ROLLCALL_REDIS_CLUSTER, WAIT 1), one Redis + a replica
# with ROLLCALL_REDIS_WAIT_REPLICAS=1. Webhooks and subscribers spread over
# the nodes; all Redis processes from redis.conf on free ephemeral ports.
# Needs redis-server and redis-cli, not the Socket.IO peer.
BENCH_CLUSTER_FLAGS ?= --rooms 100 --subscribers 10 --rate 200 --secs 15 --ingest-secs 5 --rounds 2
bench-cluster: deps-system
	$(CARGO) build --release
	cd $(BENCH_DIR) && CARGO_TARGET_DIR=$(BENCH_TARGET_DIR) $(CARGO) build --release
	$(BENCH) b1-cluster --server-bin $(ROLLCALL_BIN) $(BENCH_CLUSTER_FLAGS)

bench-full: bench-build
	$(call BENCH_RUN,b1) $(PEERS) --rooms 100 --subscribers 30 --rate 1000 --secs 30
	$(call BENCH_RUN,b1) $(PEERS) --store redis --rooms 100 --subscribers 30 --rate 1000 --secs 30
	$(call BENCH_RUN,b2) $(PEERS) --sockets 100000 --hold-secs 60
	$(call BENCH_RUN,b3) $(PEERS) --subscribers 10000 --start-rate 1 --steps 10 --step-secs 10
	$(call BENCH_RUN,b4) $(PEERS) --secs 20 --max-requests 600000
	$(call BENCH_RUN,b4) $(PEERS) --store redis --secs 20 --max-requests 400000
	$(call BENCH_RUN,b5) --attendees 50000 --secs 30 --heartbeat-timeout 30s --idle-secs 5
	$(call BENCH_RUN,b5) --store redis --attendees 50000 --secs 30 --heartbeat-timeout 30s --idle-secs 5
	$(call BENCH_RUN,b6) --attendees 2000 --join-secs 60 --reloads 200 --heartbeats 2000
	$(call BENCH_RUN,b6) --store redis --attendees 2000 --join-secs 60 --reloads 200 --heartbeats 2000
	$(call BENCH_RUN,b7) --nodes 6 --rooms-per-node 50 --attendees 20 --dashboards 1 --updates-per-room 40 --rate 500

# ---- soak (loopback only, bounded; see BENCHMARKS.md, "Soak") ----
# `make soak`: 10 minutes of B1-like load with 10 %/min churn, heartbeats
# and hostile clients against one rollcall it starts; server RSS, fds, CPU
# and latency sampled every 5 s, samples in $(SOAK_CSV). A short run:
# `make soak SOAK_SECS=90`; on Redis: `make soak SOAK_FLAGS="--store redis"`.
SOAK_SECS ?= 600
SOAK_FLAGS ?=
SOAK_CSV ?= $(BENCH_TARGET_DIR)/soak.csv

soak:
	$(if $(findstring redis,$(SOAK_FLAGS)),@command -v redis-server >/dev/null || { $(SUDO) apt-get update -qq && $(SUDO) DEBIAN_FRONTEND=noninteractive apt-get install -y -qq redis-server; })
	$(CARGO) build --release
	cd $(BENCH_DIR) && CARGO_TARGET_DIR=$(BENCH_TARGET_DIR) $(CARGO) build --release
	$(BENCH) soak --server-bin $(ROLLCALL_BIN) --secs $(SOAK_SECS) --csv $(SOAK_CSV) $(SOAK_FLAGS)

# ---- fuzzing (libFuzzer through cargo-fuzz on stable; see FUZZING.md) ----
# `make fuzz`: every target for FUZZ_SECS seconds (exits non-zero on the
# first crash, leaving the input in fuzz/artifacts/<target>/);
# `make fuzz-long`: FUZZ_RUNS executions per target, one after another,
# logs in fuzz/logs/. `make fuzz FUZZ_TARGETS=schedule` runs one.
FUZZ_DIR := fuzz
FUZZ_SECS ?= 25
FUZZ_RUNS ?= 10000000
# No sanitizer (they need nightly); -a keeps debug assertions and overflow
# checks on in the optimised build, so an overflow is a crash too.
FUZZ_BUILD_FLAGS := --sanitizer none -a
# A parser that needs 10 s or 2 GiB for a few KiB of input is a bug too.
FUZZ_LIBFUZZER_FLAGS := -timeout=10 -rss_limit_mb=2048 -max_len=4096 -print_final_stats=1
# Configured naming patterns are a few dozen bytes, and each input of
# naming_patterns compiles two regexes: 256 bytes keep it to what a
# configuration looks like (and ~1.7k exec/s instead of a few hundred).
FUZZ_MAX_LEN_naming_patterns := 256
# Every [[bin]] of fuzz/Cargo.toml, in file order.
FUZZ_TARGETS ?= $(shell sed -n '/^\[\[bin\]\]/{n;s/^name = "\(.*\)"$$/\1/p}' $(FUZZ_DIR)/Cargo.toml)

fuzz-deps:
	@command -v c++ >/dev/null || { $(SUDO) apt-get update -qq && $(SUDO) DEBIAN_FRONTEND=noninteractive apt-get install -y -qq g++; }
	@$(CARGO) fuzz --version >/dev/null 2>&1 || $(CARGO) install cargo-fuzz --locked

fuzz-build: fuzz-deps
	cd $(FUZZ_DIR) && $(CARGO) fuzz build $(FUZZ_BUILD_FLAGS)

fuzz: fuzz-build
	@set -e; for t in $(FUZZ_TARGETS); do \
		echo "== fuzz $$t: $(FUZZ_SECS) s"; \
		mkdir -p $(FUZZ_DIR)/corpus/$$t; \
		(cd $(FUZZ_DIR) && $(CARGO) fuzz run $(FUZZ_BUILD_FLAGS) $$t corpus/$$t seeds/$$t -- \
			$(FUZZ_LIBFUZZER_FLAGS) $$(case $$t in naming_patterns) echo -max_len=$(FUZZ_MAX_LEN_naming_patterns);; esac) \
			-max_total_time=$(FUZZ_SECS) 2>&1 | tail -n 30; exit $${PIPESTATUS[0]}); \
	done

fuzz-long: fuzz-build
	@set -e; mkdir -p $(FUZZ_DIR)/logs; for t in $(FUZZ_TARGETS); do \
		echo "== fuzz $$t: $(FUZZ_RUNS) runs, log in $(FUZZ_DIR)/logs/$$t.log"; \
		mkdir -p $(FUZZ_DIR)/corpus/$$t; \
		(cd $(FUZZ_DIR) && $(CARGO) fuzz run $(FUZZ_BUILD_FLAGS) $$t corpus/$$t seeds/$$t -- \
			$(FUZZ_LIBFUZZER_FLAGS) $$(case $$t in naming_patterns) echo -max_len=$(FUZZ_MAX_LEN_naming_patterns);; esac) \
			-runs=$(FUZZ_RUNS) > logs/$$t.log 2>&1) \
			|| { tail -n 40 $(FUZZ_DIR)/logs/$$t.log; exit 1; }; \
		grep -E '^#[0-9]+ *DONE|stat::number_of_executed_units|stat::average_exec_per_sec' $(FUZZ_DIR)/logs/$$t.log; \
	done

# ---- mutation testing (see MUTANTS.md) ----
# `make mutants`: cargo-mutants over the pure engine (src/engine/, library
# tests only; config in .cargo/mutants.toml), one mutant at a time (the
# machine has other work). Results in mutants.out/ (git-ignored):
# caught.txt, missed.txt, timeout.txt, unviable.txt. A missed mutant is a
# gap in the tests unless MUTANTS.md explains why it is equivalent.
mutants-deps:
	@$(CARGO) mutants --version >/dev/null 2>&1 || $(CARGO) install cargo-mutants --locked

mutants: mutants-deps
	$(CARGO) mutants -j 1
