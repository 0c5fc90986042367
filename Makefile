# pymesh: `make demo` runs the sample mesh, `make test` runs every check.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
APT_TEST_PACKAGES := curl iproute2 iptables openssl
APT_BENCH_PACKAGES := wrk hey nginx-light

.PHONY: all demo test lint typecheck unit bench clean apt-test apt-bench proto

all: test

# Debian splits venv out of python3: install python3-venv when it is missing (as root).
$(BIN)/python:
	@$(PYTHON) -m venv $(VENV) 2>/dev/null || { \
	  rm -rf $(VENV); \
	  if [ "$$(id -u)" = 0 ]; then apt-get update -qq && \
	    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3-venv; \
	  else echo "python3 -m venv failed: install python3-venv"; exit 1; fi; \
	  $(PYTHON) -m venv $(VENV); }
	$(BIN)/pip install --quiet --upgrade pip

$(STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/pip install --quiet -e '.[test]'
	touch $@

demo: $(STAMP)
	$(BIN)/pymesh demo

# The tests talk to real peers: install the Debian tools they call when they are missing.
apt-test:
	@missing=""; for p in $(APT_TEST_PACKAGES); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
	  if [ "$$(id -u)" = 0 ]; then apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing; \
	  else echo "missing Debian packages:$$missing (run as root to install them)"; fi; fi

apt-bench:
	@missing=""; for p in $(APT_BENCH_PACKAGES); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing; fi

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: $(STAMP)
	$(BIN)/mypy

unit: $(STAMP) apt-test
	$(BIN)/pytest -n 2 --dist loadgroup --durations=15 -q

test: lint typecheck unit

# Regenerate the checked-in Python modules of pymesh/proto/*.proto (tests keep them in sync).
proto: $(STAMP)
	$(BIN)/python scripts/gen_protos.py

bench: $(STAMP) apt-bench
	$(BIN)/python -m benchmarks.proxy

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache .hypothesis
