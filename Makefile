# Two commands do all set-up on a fresh machine: `make run` and `make test`.
# Both install the exact versions in the lock files, every file checked against its hash
# (requirements.lock: the gateway; requirements-test.lock: the gateway and its tests/linters).
# `make lock` is the one way to regenerate them (README, "Dependencies").
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
TSTAMP := $(VENV)/.installed-test
# pip-installs the locked set, then the project itself without touching its dependencies; the
# build backend (setuptools) comes from the lock too, not fetched unpinned by build isolation.
PIP_LOCKED = $(BIN)/pip install -q --disable-pip-version-check --require-hashes -r
PIP_SELF   = $(BIN)/pip install -q --disable-pip-version-check --no-deps --no-build-isolation -e .
UV_VERSION := 0.13.8
UV_COMPILE  = $(BIN)/uv pip compile --quiet --universal --python-version 3.11 --generate-hashes \
              --custom-compile-command 'make lock' $(LOCK_FLAGS)

.PHONY: run test lint bench bench-peers lock lock-upgrade clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

$(STAMP): requirements.lock pyproject.toml | $(BIN)/python
	$(PIP_LOCKED) requirements.lock
	$(PIP_SELF)
	touch $@

$(TSTAMP): requirements-test.lock pyproject.toml | $(BIN)/python
	$(PIP_LOCKED) requirements-test.lock
	$(PIP_SELF)
	touch $@ $(STAMP)

run: $(STAMP)
	$(BIN)/image-gateway serve

lint: $(TSTAMP)
	$(BIN)/ruff check src tests bench
	$(BIN)/mypy
	$(BIN)/lint-imports

test: $(TSTAMP) lint
	command -v chromium >/dev/null || (apt-get update && apt-get install -y chromium)  # the browser tests (Debian's)
	command -v redis-server >/dev/null || (apt-get update && apt-get install -y redis-server)  # the scale-out tests (Debian's)
	command -v npm >/dev/null || (apt-get update && apt-get install -y nodejs npm)  # the JavaScript client tests
	[ tests/clients/node/node_modules/.package-lock.json -nt tests/clients/node/package-lock.json ] || npm ci --prefix tests/clients/node --no-audit --no-fund --loglevel=error
	$(BIN)/pytest -n auto --dist loadfile

bench: $(TSTAMP)
	$(BIN)/python bench/run.py

bench-peers: $(TSTAMP)
	$(BIN)/python bench/run.py --peers

# Regenerate both lock files from pyproject.toml (dependencies, the test extra, the build backend),
# keeping the pinned versions that still fit; `make lock-upgrade` moves everything to the newest.
# The test lock is constrained by the runtime lock, so `make run` gets the versions `make test` ran.
lock: | $(BIN)/python
	$(BIN)/pip install -q --disable-pip-version-check uv==$(UV_VERSION)
	$(BIN)/python -c 'import tomllib; print(*tomllib.load(open("pyproject.toml", "rb"))["build-system"]["requires"], sep="\n")' > $(VENV)/build-system.in
	$(UV_COMPILE) pyproject.toml $(VENV)/build-system.in -o requirements.lock
	$(UV_COMPILE) pyproject.toml $(VENV)/build-system.in --extra test -c requirements.lock -o requirements-test.lock

lock-upgrade:
	$(MAKE) lock LOCK_FLAGS=--upgrade

clean:
	rm -rf $(VENV) data .pytest_cache .mypy_cache .ruff_cache
