# Bulwark: the two commands a newcomer needs are `make run` and `make test`.
SHELL := /bin/bash
CARGO ?= cargo
PG_URL ?= postgres://postgres@127.0.0.1:5432/test

.PHONY: train-model run test lint fmt check-services build release bench bench-http bench-queue bench-amqp bench-amqp-pinned bench-celery clean runtime model

## run: build the release binary and start the demo on the embedded defaults (SQLite, local queue)
run: release runtime model
	./target/release/bulwark demo

## test: formatting, lints, and the whole test suite (needs PostgreSQL on 127.0.0.1:5432,
## the ONNX Runtime library and the sentiment model: `runtime` and `model` fetch them)
test: check-services runtime model lint
	$(CARGO) test --workspace --all-targets --no-fail-fast

ORT_VERSION := 1.31.1
ORT_LIB := ml-models/cache/onnxruntime/libonnxruntime.so.$(ORT_VERSION)
MODEL_NAME := sentiment-minilm-sst2
MODEL_DIR := ml-models/cache/$(MODEL_NAME)
SHARED_MODEL_DIR := ../shared/models/$(MODEL_NAME)

## runtime: fetch the ONNX Runtime shared library from the PyPI wheel (once; later runs do nothing)
runtime:
	@test -f $(ORT_LIB) || { \
		pip download --quiet --no-deps onnxruntime==$(ORT_VERSION) -d ml-models/cache/wheels && \
		python3 -c 'import glob, pathlib, sys, zipfile; \
			wheel = sorted(glob.glob("ml-models/cache/wheels/onnxruntime-$(ORT_VERSION)-*.whl"))[-1]; \
			target = pathlib.Path(sys.argv[1]); target.parent.mkdir(parents=True, exist_ok=True); \
			partial = target.with_name(target.name + ".part"); \
			partial.write_bytes(zipfile.ZipFile(wheel).read("onnxruntime/capi/" + target.name)); \
			partial.replace(target)' $(ORT_LIB) && \
		echo "fetched $(ORT_LIB)"; \
	}

## model: copy the sentiment model into ml-models/cache (once; later runs do nothing)
model:
	@test -f $(MODEL_DIR)/model.onnx || { \
		if [ -d $(SHARED_MODEL_DIR) ]; then \
			rm -rf $(MODEL_DIR).part && mkdir -p $(MODEL_DIR).part && \
			cp $(SHARED_MODEL_DIR)/* $(MODEL_DIR).part/ && chmod u+w $(MODEL_DIR).part/* && \
			rm -rf $(MODEL_DIR) && mv $(MODEL_DIR).part $(MODEL_DIR) && \
			echo "copied $(MODEL_NAME) into $(MODEL_DIR)"; \
		elif [ -n "$(SST2_DIR)" ]; then \
			$(MAKE) train-model; \
		else \
			echo "error: $(SHARED_MODEL_DIR) does not exist; build $(MODEL_NAME) with the training recipe: make model SST2_DIR=<folder with train.txt and dev.txt>"; \
			exit 1; \
		fi; \
	}

## train-model: build the model with ml-models/train/ (needs SST2_DIR; installs torch from PyPI, several GB)
TRAIN_VENV := ml-models/cache/train-venv
train-model:
	@test -n "$(SST2_DIR)" || { echo "error: set SST2_DIR to a folder holding train.txt and dev.txt"; exit 1; }
	test -x $(TRAIN_VENV)/bin/python || python3 -m venv $(TRAIN_VENV)
	$(TRAIN_VENV)/bin/pip install -q -r ml-models/train/requirements.txt
	HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 $(TRAIN_VENV)/bin/python ml-models/train/train_sentiment.py --train $(SST2_DIR)/train.txt \
		--dev $(SST2_DIR)/dev.txt --out $(MODEL_DIR).part
	rm -rf $(MODEL_DIR) && mv $(MODEL_DIR).part $(MODEL_DIR)

lint:
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --workspace --all-targets -- -D warnings

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

## bench: HTTP latency/throughput and local-queue jobs/s (see docs/benchmarks.md)
bench: release runtime model
	./scripts/bench.sh

## bench-amqp: broker ceiling (raw lapin) vs end-to-end sentiment jobs over RabbitMQ, results in
## PostgreSQL (AMQP_URL and DATABASE_URL default to the local services)
bench-amqp: release runtime model check-services
	AMQP_URL=$${AMQP_URL:-amqp://guest:guest@127.0.0.1:5672/%2f} \
	DATABASE_URL=$${DATABASE_URL:-$(PG_URL)} \
	BULWARK_LOG=warn ./target/release/bulwark bench amqp --jobs $${JOBS:-2000}

## bench-amqp-pinned: the same with PostgreSQL and RabbitMQ pinned to core 0 and the node to the
## other cores, so the in-process and end-to-end phases get the same CPU (needs root)
bench-amqp-pinned: release runtime model check-services
	DATABASE_URL=$${DATABASE_URL:-$(PG_URL)} ./scripts/bench-amqp-pinned.sh

## bench-celery: the same job as a Celery pipeline (RabbitMQ + PostgreSQL + onnxruntime, one
## committed row per job) and `bench amqp`, back to back in one run, with their ratios
bench-celery: release runtime model check-services
	./scripts/bench-celery.sh

clean:
	$(CARGO) clean
