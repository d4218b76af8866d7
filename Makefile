# fedstream: the two commands a new user needs are `make demo` and `make test`; both set up
# what they need (project virtualenv, Maven artifacts) and are idempotent.
SHELL := /bin/bash
PYTHON ?= python3.11
VENV := .venv
PY := $(VENV)/bin/python
LIB := infra/local/.lib
STACK := infra/local/stack.sh

.PHONY: help setup venv jars scripts browser dashboard demo test test-unit lint stack-up stack-down stack-status bench clean lock \
	terraform-tools provision fuzz chaos learning-sweep

help:
	@echo "make demo          set up, start the local broker, run fedstream end to end"
	@echo "make test          set up, run every test (unit, job, integration)"
	@echo "make lint          ruff + mypy"
	@echo "make dashboard     the live dashboard of a running job (fedstream dashboard)"
	@echo "make stack-up      start the local Kafka broker and Flink cluster (stack-down, stack-status)"
	@echo "make bench         run the benchmarks, write bench/results/"
	@echo "make learning-sweep simulated fleets of 10-500 devices: protocols, sweep, outage"
	@echo "make fuzz          10,000 generated bad records through the real job (make test runs 1,500)"
	@echo "make provision     topics, SCRAM users and ACLs on the local stack (Terraform)"
	@echo "make chaos         20 faults over 10,000 updates on 3 brokers + Flink, checked by an oracle"

setup: venv jars scripts

# The console scripts `fedstream` and `fedstream-simulator` ([project.scripts] of
# pyproject.toml and edge/pyproject.toml), written into .venv/bin like an install would.
scripts: $(VENV)/bin/fedstream
$(VENV)/bin/fedstream: $(VENV)/.installed pyproject.toml edge/pyproject.toml jobs/fedstream/jobs/console_scripts.py
	$(PY) -m fedstream.jobs.console_scripts

# The virtualenv is rebuilt when the lock file changes. The .pth puts the source folders of
# the `fedstream` namespace on sys.path (the repo is used in place, like an editable install).
venv: $(VENV)/.installed
$(VENV)/.installed: requirements/lock.txt requirements/constraints.txt
	@command -v $(PYTHON) >/dev/null || { echo "$(PYTHON) not found: fedstream needs Python 3.11"; exit 1; }
	@echo "== python virtualenv in $(VENV) (first run downloads torch, several GB; later runs are instant)"
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -c requirements/constraints.txt -r requirements/lock.txt
	printf '%s\n' "$(CURDIR)/schemas" "$(CURDIR)/pipelines" "$(CURDIR)/jobs" "$(CURDIR)/edge" \
	  > "$$($(PY) -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')/fedstream-dev.pth"
	$(PY) -m pip check
	touch $@

# Kafka broker + tools, the Flink Kafka connector and avro-tools, from Maven Central; then
# the job's own small jar (jobs/java: Kafka key serializer and partitioner) beside them.
KEYS_JAR := $(LIB)/flink/fedstream-flink-keys.jar
jars: $(LIB)/.resolved $(KEYS_JAR)
$(LIB)/.resolved: infra/local/pom.xml
	@command -v mvn >/dev/null || { echo "mvn not found: install Maven (and Java 17)"; exit 1; }
	@echo "== resolving Kafka, the Flink Kafka connector and avro-tools from Maven Central"
	cd infra/local && mvn -q -B package
	touch $@
$(KEYS_JAR): $(LIB)/.resolved jobs/java/pom.xml $(wildcard jobs/java/src/main/java/io/fedstream/flink/*.java)
	@echo "== building fedstream-flink-keys (jobs/java) into $(LIB)/flink"
	cd jobs/java && mvn -q -B package
	touch $@

# Re-resolve the pins from requirements/direct.txt (then commit requirements/lock.txt).
lock: venv
	$(PY) -m pip install -q -c requirements/constraints.txt -r requirements/direct.txt
	$(PY) -m pip freeze --exclude-editable | grep -v '^-e' > requirements/lock.txt

# Terraform (or OpenTofu, built once from the Go module proxy when no terraform >= 1.11 is on
# PATH: ~8 min) and the mongey/kafka provider (~1 min), cached outside the repository
# (~/.cache/fedstream/terraform); instant once built.
terraform-tools:
	@infra/terraform/tools.sh ensure >/dev/null

# Provision the running local stack (make stack-up): topics, one SCRAM user per role,
# ACLs. infra/terraform/provision.sh plan|destroy for the rest.
provision: terraform-tools
	infra/terraform/provision.sh apply

demo: setup terraform-tools
	$(PY) -m fedstream.jobs.demo

test: setup terraform-tools browser
	$(PY) -m pytest $(PYTEST_ARGS)

# Debian's chromium, for the dashboard's rendering test (headless; no browser download).
# apt-get only when it is missing: instant afterwards.
browser:
	@command -v chromium >/dev/null || { \
	  echo "== installing chromium (Debian package) for the dashboard test"; \
	  SUDO=$$([ "$$(id -u)" = 0 ] || echo sudo); \
	  $$SUDO apt-get update -q && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -q chromium; }

test-unit: setup terraform-tools
	$(PY) -m pytest tests/unit $(PYTEST_ARGS)

# The fuzz campaign: the job tier's fuzz test at full size (about 10-15 min on 2 cores).
fuzz: setup
	FEDSTREAM_FUZZ_COUNT=$${FEDSTREAM_FUZZ_COUNT:-10000} $(PY) -m pytest tests/job/test_job_tier_fuzz.py -v $(PYTEST_ARGS)

# The chaos campaign: 3 brokers, a JobManager and 2 TaskManagers of its own (ports from
# FEDSTREAM_KAFKA_PORT / FEDSTREAM_FLINK_REST_PORT / FEDSTREAM_FLINK_RPC_PORT), 20 faults over
# 10,000 updates, bench/results/chaos.json + chaos.md (make test runs a 4-fault version).
chaos: setup terraform-tools
	$(PY) -m bench.chaos $(CHAOS_ARGS)

# Learning efficiency on simulated fleets (bench.fleet_sim: the real aggregation core on a
# virtual clock), 3 seeds: bench/results/learning_sim.json + .md, docs/bench-learning-sim-*.png.
learning-sweep: setup
	$(PY) -m bench.learning_sweep $(LEARNING_ARGS)

lint: venv
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy $(wildcard schemas/fedstream pipelines/fedstream jobs/fedstream edge/fedstream) tests bench

# The dashboard of the job `make demo` or `fedstream run` runs (metrics.prometheus_port).
dashboard: setup
	$(VENV)/bin/fedstream dashboard $(DASHBOARD_ARGS)

stack-up: setup
	$(STACK) up
stack-down:
	$(STACK) down
stack-status:
	$(STACK) status

bench: setup
	$(PY) -m bench

clean:
	-$(STACK) down
	rm -rf infra/local/.run
