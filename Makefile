# Bulwark: the two commands a newcomer needs are `make run` and `make test`.
SHELL := /bin/bash
CARGO ?= cargo
PG_URL ?= postgres://postgres@127.0.0.1:5432/test

.PHONY: run test lint fmt check-services build release bench bench-http bench-queue clean

## run: build the release binary and start the demo on the embedded defaults (SQLite, local queue)
run: release
	./target/release/bulwark demo

## test: formatting, lints, and the whole test suite (needs PostgreSQL on 127.0.0.1:5432)
test: check-services lint
	$(CARGO) test --workspace --all-targets

lint:
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --workspace --all-targets -- -D warnings

fmt:
	$(CARGO) fmt --all

## check-services: fail (never skip) when a service the tests need is unreachable
check-services:
	@pg_isready -q -h 127.0.0.1 -p 5432 || { echo "error: PostgreSQL is not reachable on 127.0.0.1:5432 (start it: pg_ctlcluster --skip-systemctl-redirect \$$(ls /etc/postgresql) main start)"; exit 1; }
	@psql "$(PG_URL)" -qtAc 'select 1' >/dev/null || { echo "error: cannot connect to $(PG_URL)"; exit 1; }

build:
	$(CARGO) build --workspace

release:
	$(CARGO) build --release --bin bulwark

## bench: HTTP latency/throughput and local-queue jobs/s (see docs/benchmarks.md)
bench: release
	./scripts/bench.sh

clean:
	$(CARGO) clean
