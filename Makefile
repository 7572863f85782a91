# The two commands: `make up` (the local environment) and `make test` (every test).
# Both set everything up themselves: the virtualenv, the locked dependencies,
# and Debian's etcd-server and redis-server when they are missing.

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.keel-installed

.PHONY: up test lint typecheck unit engines bench bench-resilience lock clean protos

up: $(STAMP)
	@echo "==> starting keel up (Ctrl-C to stop)"
	$(BIN)/keel up

# Most tests wait on real processes (etcd, Redis, PostgreSQL, Chromium, keel
# children): four workers keep two cores busy. PYTEST_WORKERS=0 runs them in one.
PYTEST_WORKERS ?= 4

test: $(STAMP) engines lint typecheck
	$(BIN)/pytest -n $(PYTEST_WORKERS)

unit: $(STAMP)
	$(BIN)/pytest -m "not slow"

lint: $(STAMP)
	$(BIN)/ruff check src tests bench
	$(BIN)/ruff format --check src tests bench

typecheck: $(STAMP)
	$(BIN)/mypy

engines:
	@bash scripts/ensure-engines.sh

# Progress as it goes: a first install takes a minute or two.
$(STAMP): requirements.lock pyproject.toml
	@test -x $(BIN)/python || { echo "==> [1/3] creating the virtualenv $(VENV)"; $(PYTHON) -m venv $(VENV); }
	@echo "==> [2/3] installing $$(grep -c '==' requirements.lock) locked dependencies into $(VENV)"
	@$(BIN)/python -m pip install --disable-pip-version-check --progress-bar on -r requirements.lock
	@echo "==> [3/3] installing keel itself (editable)"
	@$(BIN)/python -m pip install --quiet --disable-pip-version-check --no-deps --no-build-isolation -e .
	@touch $@
	@echo "==> ready: $(BIN)/keel"

bench: $(STAMP)
	@bash scripts/ensure-engines.sh --bench
	for b in store locks locks_redis registry balance config resilience scheduler http_service \
	         grpc_channel grpc_server grpc_vs_http saga saga_barrier cli gateway events console; do \
	  test -f bench/$$b.py && $(BIN)/python bench/$$b.py || exit 1; \
	done

bench-resilience: $(STAMP) engines
	$(BIN)/python bench/resilience.py

# Regenerate the committed gRPC code of the test and example .proto files.
protos: $(STAMP)
	PYTHON=$(BIN)/python bash scripts/protos.sh

# Re-pin every dependency (run after changing pyproject.toml).
lock:
	rm -rf .lockenv && $(PYTHON) -m venv .lockenv
	.lockenv/bin/pip install --quiet --disable-pip-version-check hatchling editables -e '.[dev,bench]'
	.lockenv/bin/pip freeze --exclude-editable | grep -v '^keel' | grep -v '^#' | sort -f > requirements.lock
	rm -rf .lockenv

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
