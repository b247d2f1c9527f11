# The two quick-start commands (`make dev`, `make test`) do all the set-up on a
# fresh machine: the virtual environment in .venv (with the [train] extra: torch,
# transformers, peft, from pip's cache after the first time) and the control-plane binaries,
# built from pinned Go modules into ~/.cache/kubetune (minutes, once).

PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-$(shell cat pyproject.toml | sha256sum | cut -c1-12)

.PHONY: dev dev-status dev-down test lint typecheck unit binaries crds lock clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev,train]'
	rm -f $(VENV)/.installed-* && touch $@

binaries:
	bash tests/cluster/build.sh >/dev/null

dev: $(STAMP)
	$(BIN)/kubetune dev up

dev-status: $(STAMP)
	$(BIN)/kubetune dev status

dev-down: $(STAMP)
	$(BIN)/kubetune dev down

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: $(STAMP)
	$(BIN)/mypy

crds: $(STAMP)
	$(BIN)/kubetune crds

# The constraints files the Dockerfile installs with (after a dependency change).
lock: $(STAMP)
	$(BIN)/python -m tests.lockfiles

# Unit tests only: no control plane, seconds.
unit: $(STAMP)
	$(BIN)/pytest -m "not cluster and not e2e"

# The whole suite: lint, types, unit, cluster and end-to-end tests.
test: $(STAMP) binaries lint typecheck
	$(BIN)/pytest

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
