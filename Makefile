# pymesh: `make demo` runs the sample mesh, `make test` runs every check.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
DEMO_STAMP := $(VENV)/.installed-demo
# -qq: errors only (setuptools' notes about editable installs are not the user's business).
PIP_INSTALL := $(BIN)/pip install -qq
# chromium: the product page is checked in a real browser (Playwright drives Debian's build).
APT_TEST_PACKAGES := curl iproute2 iptables openssl chromium fonts-dejavu-core redis-server prometheus
APT_BENCH_PACKAGES := wrk hey nginx-light nghttp2-client
# The container tests: a private Docker engine, compose, and a base image made without a registry.
APT_DOCKER_PACKAGES := docker.io docker-compose debootstrap

.PHONY: all demo test lint typecheck unit bench bench-mesh bench-bookinfo bench-workers bench-pilot clean apt-test apt-bench proto web apt-docker test-docker

all: test

# Debian splits venv out of python3: install python3-venv when it is missing (as root).
$(BIN)/python:
	@$(PYTHON) -m venv $(VENV) 2>/dev/null || { \
	  rm -rf $(VENV); \
	  if [ "$$(id -u)" = 0 ]; then apt-get update -qq && \
	    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3-venv; \
	  else echo "python3 -m venv failed: install python3-venv"; exit 1; fi; \
	  $(PYTHON) -m venv $(VENV); }
	$(BIN)/pip install -qq --upgrade pip

# `make demo` installs the mesh and its sample apps only; `make test` adds the test tools.
$(DEMO_STAMP): pyproject.toml | $(BIN)/python
	$(PIP_INSTALL) -e .
	touch $@

$(STAMP): pyproject.toml | $(BIN)/python
	$(PIP_INSTALL) -e '.[test]'
	touch $@ $(DEMO_STAMP)

# DEMO_ARGS: options of `pymesh demo` (--run-dir, --control-address, --fresh, ...).
demo: $(DEMO_STAMP) web
	$(BIN)/pymesh demo $(DEMO_ARGS)

# The service graph page's drawing library (Cytoscape.js + its dagre layout), from npm at the
# versions mixer/web/package-lock.json pins; never committed.
WEB_STAMP := mixer/web/node_modules/.installed
web: $(WEB_STAMP)
$(WEB_STAMP): mixer/web/package.json mixer/web/package-lock.json
	@command -v npm >/dev/null 2>&1 || { \
	  if [ "$$(id -u)" = 0 ]; then apt-get update -qq && \
	    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq npm; \
	  else echo "npm not found: install nodejs and npm"; exit 1; fi; }
	npm ci --prefix mixer/web --no-audit --no-fund --loglevel=error
	touch $@

# The tests talk to real peers: install the Debian tools they call when they are missing.
apt-test:
	@missing=""; for p in $(APT_TEST_PACKAGES); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
	  if [ "$$(id -u)" = 0 ]; then apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing; \
	  else echo "missing Debian packages:$$missing (run as root to install them)"; fi; fi

apt-docker:
	@missing=""; for p in $(APT_DOCKER_PACKAGES); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
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

unit: $(STAMP) apt-test web
	$(BIN)/pytest -n 2 --dist loadgroup --durations=15 -q -m "not docker"

# docker/docker-compose.yml on a real engine: up to ~12 minutes from a clean machine (the
# image is built from a debootstrapped Debian), under 2 with a developer's cache.
test-docker: $(STAMP) apt-test apt-docker
	$(BIN)/pytest -q --durations=5 -m docker

test: lint typecheck unit

# Regenerate the checked-in Python modules of pymesh/proto/*.proto (tests keep them in sync).
proto: $(STAMP)
	$(BIN)/python scripts/gen_protos.py

bench: $(STAMP) apt-bench
	$(BIN)/python -m benchmarks.proxy

# Plots need matplotlib, which only the benchmarks use.
BENCH_STAMP := $(VENV)/.installed-bench
$(BENCH_STAMP): pyproject.toml | $(STAMP)
	$(PIP_INSTALL) -e '.[test,bench]'
	touch $@

# Istio's two-sidecar benchmark, Envoy pair and pymesh pair both configured by pilot
# (BENCH_ARGS: --quick, --rates, --duration, --reps, --concurrency, ...).
bench-mesh: $(BENCH_STAMP) apt-bench
	$(BIN)/python -m benchmarks.two_sidecars $(BENCH_ARGS)

# Bookinfo's page through the ingress gateway, Envoy and pymesh as every proxy, pilot-configured
# (BENCH_ARGS: --quick, --rates, --duration, --reps, ...).
bench-bookinfo: $(BENCH_STAMP) apt-bench
	$(BIN)/python -m benchmarks.bookinfo $(BENCH_ARGS)

# pymesh proxy --concurrency 2 against 1, Envoy's 2 against 1 beside it.
bench-workers: $(BENCH_STAMP) apt-bench
	$(BIN)/python -m benchmarks.workers $(BENCH_ARGS)

# Pilot converging N simulated sidecars after a VirtualService change (1000 and 5000).
bench-pilot: $(BENCH_STAMP)
	$(BIN)/python -m benchmarks.pilot --clients 1000 --clients 5000 $(BENCH_ARGS)

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache .hypothesis
