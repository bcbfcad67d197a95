# ketenstroom — `make help` lists the targets. People and CI use the same ones.
SHELL := /bin/bash
.DEFAULT_GOAL := help
PYTHON ?= python3
VENV ?= .venv
QUIX_VENV ?= .venv-quix
PY := $(VENV)/bin/python
KS := $(VENV)/bin/ketenstroom
PYTEST_ARGS ?=

.PHONY: help install lock up up-monitoring down status demo test test-unit lint promtool monitoring-tools secrets clean browser site bench-publish bench-process bench-sink bench-extract bench-release bench-soak bench-dedup

help: ## Show this help
	@awk 'BEGIN {FS = ":.*## "} /^[a-zA-Z_-]+:.*## / {printf "  \033[36m%-12s\033[0m %s\n", $$1, $$2}' $(MAKEFILE_LIST)

# The whole dependency tree is pinned in requirements.lock (pip-compile from pyproject.toml's ranges):
# installs are the same everywhere; ketenstroom itself goes on top, editable, without resolving again.
$(VENV)/.installed: pyproject.toml requirements.lock
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -r requirements.lock
	$(PY) -m pip install --quiet --no-deps -e .
	touch $@

install: $(VENV)/.installed ## Create .venv and install the locked dependencies and ketenstroom (editable)

lock: install ## Refresh requirements.lock from pyproject.toml (LOCK_ARGS=--upgrade to take newer versions)
	$(VENV)/bin/pip-compile --quiet --extra dev --strip-extras --no-emit-index-url --no-emit-find-links \
		--output-file requirements.lock $(LOCK_ARGS) pyproject.toml

up: install ## Fetch (first time) and start Kafka, Apicurio Registry and s3proxy on loopback
	$(KS) infra up

up-monitoring: install monitoring-tools ## The stack plus Prometheus (127.0.0.1:9690) and Alertmanager (:9691) scraping every component and broker
	$(KS) infra up --with-monitoring

down: ## Stop the local stack (only what it started)
	@if [ -x $(KS) ]; then $(KS) infra down; else echo "nothing installed, nothing to stop"; fi

status: install ## Show each service, its port, pid and health
	$(KS) infra status

demo: up ## Run the pipeline: generate, publish, process, sink, seal, release, site; print how to open the dashboard
	$(KS) demo

promtool: ## Install Debian's prometheus (it ships promtool, which tests ops/prometheus/) when missing
	@command -v promtool >/dev/null || { \
		SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
		$$SUDO apt-get update -qq && $$SUDO apt-get install -y -qq --no-install-recommends prometheus; }

monitoring-tools: promtool ## Install Debian's prometheus and prometheus-alertmanager (infra up --with-monitoring, the live monitoring test) when missing
	@command -v prometheus-alertmanager >/dev/null || command -v alertmanager >/dev/null || { \
		SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
		$$SUDO apt-get update -qq && $$SUDO apt-get install -y -qq --no-install-recommends prometheus-alertmanager; \
		$$SUDO systemctl disable --now prometheus-alertmanager >/dev/null 2>&1 || true; }
# (Debian's own alertmanager service would listen on 9093, Kafka's controller port: the stack runs its own)

# Debian's headless Chromium and its driver for the dashboard's browser tests (Playwright's own browser
# download cannot work offline); installed only when missing, as root through apt.
browser: ## Install Debian's chromium and chromium-driver when missing (browser tests)
	@if command -v chromium >/dev/null && command -v chromedriver >/dev/null; then echo "chromium: $$(chromium --version)"; \
	else apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver >/dev/null && chromium --version; fi

site: install ## Build the dashboard from the releases into var/site and print how to open it
	$(KS) site build --out var/site

test: install browser monitoring-tools ## Unit, browser and integration tests against the real stack (started by the test fixtures)
	$(KS) infra fetch
	$(KS) infra reserve-ports
	$(PY) -m pytest $(PYTEST_ARGS)

test-unit: install promtool ## Unit tests only: no services needed
	$(PY) -m pytest tests/unit $(PYTEST_ARGS)

lint: install secrets ## ruff (rules and format), mypy --strict and the secrets scan; CI runs it before the tests
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy

secrets: install ## Scan the tracked tree for keys, passwords and tokens (detect-secrets; test fixtures carry `pragma: allowlist secret`)
	git ls-files -z | xargs -0 $(VENV)/bin/detect-secrets-hook

clean: ## Remove the virtualenvs and local output (not the download cache, not the stack's data)
	rm -rf $(VENV) $(QUIX_VENV) var .pytest_cache

bench-publish: install ## Benchmark publish against a hand-written producer and raw production (stack started if needed)
	$(PY) -m bench.publish_bench

# quixstreams pins confluent-kafka, pydantic and pydantic-settings below ketenstroom's own pins, so the
# Quix baseline gets a venv of its own: quixstreams with its dependencies, fastavro for the transform,
# and ketenstroom itself without dependencies (the transform needs nothing quixstreams lacks).
$(QUIX_VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(QUIX_VENV)
	$(QUIX_VENV)/bin/python -m pip install --quiet --upgrade pip
	$(QUIX_VENV)/bin/python -m pip install --quiet 'quixstreams>=3.28,<4' 'fastavro>=1.13,<2'
	$(QUIX_VENV)/bin/python -m pip install --quiet --no-deps -e .
	touch $@

bench-process: install $(QUIX_VENV)/.installed ## Benchmark the exactly-once processor against Quix Streams, the bare transform and a raw passthrough
	$(PY) -m bench.process_bench

bench-sink: install ## Benchmark the sink against a hand-written sink and pyarrow writes; peak RSS of one 5M-event period
	$(PY) -m bench.sink_bench

bench-dedup: install ## Benchmark the processor's dedup state: bytes and time per id, restore as history grows past the horizon
	$(PY) -m bench.dedup_bench

bench-extract: install ## Benchmark a research extract (100k cases) against a hand-written DuckDB query over the same files
	$(PY) -m bench.extract_bench

bench-soak: install ## Ten minutes of 1,000 events/s through publish -> process -> sink on the 3-node cluster (SOAK_RATE, SOAK_MINUTES); last line lost/duplicated/p99/RSS growth
	$(PY) -m bench.soak_bench

bench-release: install ## Benchmark one period's release from a 1M-event revision against DuckDB's bare group-bys
	$(PY) -m bench.release_bench
