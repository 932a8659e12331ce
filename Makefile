# The README's two commands are `make run` and `make test`; everything else here serves them.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

# Debian packages the integration tests need (real DNS servers, signer, validating resolver).
SYSTEM_TOOLS    := nsd unbound ldns-signzone ldns-keygen
SYSTEM_PACKAGES := nsd unbound ldnsutils bind9-utils

.PHONY: run test lint typecheck unit fuzz system-deps clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $(STAMP)

## Run the relay on its embedded defaults: 127.0.0.1:2525, ./spool, DNS from /etc/resolv.conf.
run: $(STAMP)
	$(BIN)/dane-relay serve

## The whole suite: lint, type checks, unit and integration tests.
test: $(STAMP) system-deps lint typecheck
	$(BIN)/pytest -q

lint: $(STAMP)
	$(BIN)/ruff check relay tlsa tests
	$(BIN)/ruff format --check relay tlsa tests

typecheck: $(STAMP)
	$(BIN)/mypy

## A short coverage-guided fuzz pass over every harness in tests/fuzz (CI runs it after `test`).
FUZZ_SECONDS ?= 30
fuzz: $(STAMP)
	$(BIN)/python tests/fuzz/run.py --seconds $(FUZZ_SECONDS)

unit: $(STAMP)
	$(BIN)/pytest -q tests/unit

## Installs the Debian packages the integration tests use when one is missing
## (needs root, as on CI; otherwise it says what to install and fails).
system-deps:
	@missing=""; for t in $(SYSTEM_TOOLS); do command -v $$t >/dev/null 2>&1 || PATH="$$PATH:/usr/sbin" command -v $$t >/dev/null 2>&1 || missing="$$missing $$t"; done; \
	if [ -n "$$missing" ]; then \
	  echo "installing Debian packages for:$$missing"; \
	  if [ "$$(id -u)" != 0 ]; then echo "run as root, or: apt-get install $(SYSTEM_PACKAGES)"; exit 1; fi; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $(SYSTEM_PACKAGES) >/dev/null; \
	fi

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache .mypy_cache .ruff_cache
