# tipstream: every target runs from a fresh clone; `make test` and `make demo` set up what is missing.
SHELL := /bin/bash
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
# The extras `make setup` installs: the dev tools and the optional MLflow client, so the
# MLflow test runs in CI (.ci/run); `make setup EXTRAS=dev` for a venv without it.
EXTRAS ?= dev,mlflow
comma := ,
STAMP := $(VENV)/.installed-$(subst $(comma),-,$(EXTRAS))

.PHONY: setup browser services services-down status cluster cluster-down migrate worker test test-unit test-integration \
        lint typecheck schemas demo bench chaos evaluate clean

setup: $(STAMP)  ## virtual environment with the project and its dev tools

$(STAMP): pyproject.toml
	@command -v $(PYTHON) >/dev/null || { echo "need $(PYTHON)"; exit 1; }
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[$(EXTRAS)]'
	@touch $(STAMP)

# TIPSTREAM_EXTERNAL_POSTGRES=1 / TIPSTREAM_EXTERNAL_KAFKA=1: use the servers of
# TIPSTREAM_DATABASE_URL / TIPSTREAM_KAFKA_URL as they are (only checked); see infra/*.sh.
browser:  ## Debian's headless chromium + chromedriver for the console's browser tests (apt-get where missing)
	infra/chromium.sh

services:  ## start a local Kafka (KRaft) and PostgreSQL, or check external ones; idempotent
	infra/postgres.sh start
	infra/kafka.sh start

services-down:  ## stop exactly what `make services` started
	-infra/kafka.sh stop
	-infra/postgres.sh stop

status:  ## what runs: the services, the three-broker cluster, the SASL_SSL broker
	-infra/kafka.sh status
	-infra/postgres.sh status
	-@infra/kafka-cluster.sh status
	-@infra/kafka-secure.sh status

cluster:  ## three-broker KRaft cluster (RF 3, min.insync.replicas 2) on 19092-19094
	infra/kafka-cluster.sh start

cluster-down:  ## stop the three-broker cluster
	infra/kafka-cluster.sh stop

# Local development and test targets sign model state with the public development key unless
# TIPSTREAM_REGISTRY_KEY is set (a set key always wins). Nothing else has a default key:
# `tipstream worker`, `train` and `models` refuse to start without one (docs/RELIABILITY.md).
worker test test-unit test-integration demo bench chaos: export TIPSTREAM_DEV_MODE ?= 1

migrate: setup services  ## apply database migrations
	$(BIN)/tipstream db migrate

worker: migrate  ## run one worker in the foreground
	$(BIN)/tipstream worker

test: setup services browser  ## the whole suite against the real services
	$(BIN)/pytest -q

test-unit: setup
	$(BIN)/pytest -q tests/unit

test-integration: setup services browser
	$(BIN)/pytest -q tests/integration

lint: setup  ## ruff (rules and formatting) and the import contracts of pyproject.toml
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/lint-imports

typecheck: setup
	$(BIN)/mypy

schemas: setup  ## regenerate the JSON Schema files producers validate against
	$(BIN)/python -m schemas.export

demo: setup services  ## the main job: replay real matches through the pipeline and summarise
	$(BIN)/python -m streams.cli.demo

# make bench writes the figures of record; BENCH_ARGS='--events 2000' for a quick look.
BENCH_ARGS ?= --sweep 250,500,1000,2000,4000,8000 --plot docs/img/latency.png --json docs/results/bench-$(shell date +%F).json
bench: setup services  ## side-by-side throughput and latency benchmark; prints the BENCH line last
	$(BIN)/python -m tests.bench $(BENCH_ARGS)

chaos: setup services  ## the eight fault scenarios against the real services; prints the CHAOS line last
	$(BIN)/python -m tests.chaos $(CHAOS_ARGS)

evaluate: setup  ## offline prequential quality evaluation on the shared data
	$(BIN)/tipstream evaluate

clean: services-down
	rm -rf .local reports
