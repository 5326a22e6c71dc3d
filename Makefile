# rollcall — `make run` serves on 127.0.0.1:6001 (in-memory store);
# `make test` installs whatever the tests need that is missing, then runs
# every test. Nothing here assumes a service is already running.

SHELL := /bin/bash
CARGO ?= cargo
# apt-get needs root; use sudo when we are not root and it exists.
SUDO := $(if $(filter 0,$(shell id -u)),,sudo)
E2E := tests/e2e

.PHONY: run build test test-rust test-e2e lint deps deps-system deps-node clean

run:
	$(CARGO) run --release -- serve

build:
	$(CARGO) build --release

test: deps lint test-rust test-e2e

lint:
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --all-targets --quiet -- -D warnings

test-rust:
	$(CARGO) test --all-targets

test-e2e: deps-node
	$(CARGO) build --quiet
	cd $(E2E) && ROLLCALL_BIN=$(CURDIR)/target/debug/rollcall node --test --test-concurrency=1

deps: deps-system deps-node

# Debian packages the tests use: Chromium for the dashboard test, Node.js
# for the real pusher-js / Laravel Echo / LiveKit SDK clients.
deps-system:
	@missing=""; \
	command -v chromium >/dev/null || missing="$$missing chromium"; \
	command -v node >/dev/null || missing="$$missing nodejs npm"; \
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
