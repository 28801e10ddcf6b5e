# Glimpse: the two commands are `make run` and `make test`.
#
# Everything the project needs is installed from here: Debian packages
# (when missing and we are root), a virtualenv in .venv, and Consul, built
# once from its Go module into ~/.cache/glimpse (tools/build-consul.sh).

PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
DEBS := unbound bind9-dnsutils dnsperf wrk
# `make run ZONES=2` runs the two-zone demo; `make run CLUSTER=1` runs each
# zone as SERVERS Consul servers and a client agent with Consul's defaults.
ZONES ?= 1
CLUSTER ?=
SERVERS ?= 3
PYTEST_ARGS ?=
# Run a Python script with GLIMPSE_CONSUL set to the cached (or just built)
# Consul: the tests, the demo and every benchmark.
WITH_CONSUL = consul_bin=$$(tools/build-consul.sh) && GLIMPSE_CONSUL=$$consul_bin $(PY)

.PHONY: run test consul deps debs venv bench-dns bench-http bench-providers bench-zones bench-fuzz bench-scale lint clean

deps: debs venv

# Debian packages the tests and benchmarks use for real (unbound, dig,
# dnsperf, wrk); installed only when one is missing.
debs:
	@missing=""; \
	for cmd in unbound dig dnsperf wrk; do command -v $$cmd >/dev/null 2>&1 || \
	  [ -x /usr/sbin/$$cmd ] || missing=1; done; \
	if [ -n "$$missing" ]; then \
	  if [ "$$(id -u)" = 0 ]; then \
	    echo "make: installing $(DEBS)"; \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $(DEBS) >/dev/null; \
	  else \
	    echo "make: missing Debian packages; run: sudo apt-get install $(DEBS)"; exit 1; \
	  fi; \
	fi

$(PY):
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip

$(VENV)/.installed: $(PY) setup.cfg pyproject.toml
	$(PY) -m pip install -q --no-deps -e . --config-settings editable_mode=compat
	touch $@

# Every time: whatever requirements-test.txt names and the venv lacks (about
# a second when nothing is missing), so an older .venv is brought up to date.
venv: $(VENV)/.installed
	@$(PY) -m pip install -q -r requirements-test.txt

consul:
	@tools/build-consul.sh

test: deps lint
	@$(WITH_CONSUL) -m pytest $(PYTEST_ARGS)

run: deps
	@$(WITH_CONSUL) -m glimpse.dev.demo --zones $(ZONES) \
	  $(if $(filter-out 0,$(CLUSTER)),--cluster --servers $(SERVERS))

# ruff (the rule set is in pyproject.toml) and mypy (strict on the pure
# modules): both must be clean for make test to run the suite.
lint: venv
	$(VENV)/bin/ruff check glimpse tests bench twisted
	$(VENV)/bin/mypy

clean:
	rm -rf $(VENV) .pytest_cache .run build *.egg-info

# Zone isolation: ams lookup p99 before and during an outage of fra.
bench-zones: deps
	@$(WITH_CONSUL) -m bench.zones.bench_zones $(BENCH_ARGS)

# Provider acknowledgement: 50 instances x 3 ports, and a 1-instance change,
# p50/p99 against the same registrations sent straight to Consul.
bench-providers: deps
	@$(WITH_CONSUL) -m bench.providers.bench_providers $(BENCH_ARGS)

# DNS: Glimpse against unbound, stock twisted.names and Consul's DNS with
# dnsperf (qps, latency, CPU/query, Consul requests per 1,000 queries),
# change -> DNS visibility, RSS with 100,000 instances.
bench-dns: deps
	@$(WITH_CONSUL) -m bench.dns.run $(BENCH_ARGS)

# 1,000,000 malformed packets at a running Glimpse: 0 crashes, normal
# queries answered throughout.
bench-fuzz: deps
	@$(WITH_CONSUL) -m bench.fuzz.run $(BENCH_ARGS)

# HTTP: GET /v1/lookup on Glimpse vs Consul's /v1/health/service vs a trivial
# twisted.web resource (wrk); 1,000 SSE subscribers: Consul change -> last
# subscriber's event p50/p99, and the Consul requests made.
bench-http: deps
	@$(WITH_CONSUL) -m bench.http.run $(BENCH_ARGS)

# Fleet scale (#13): 10,000 jobs / 100,000 instances in a 3-server zone behind
# a default client agent; Glimpse's start-to-serving time, RSS, connections,
# Consul requests/s idle, with 10 changes/s and during an outage, change ->
# DNS p50/p99, and the servers' load next to plain blocking-query clients and
# Consul's DNS (docs/scale.md). BENCH_ARGS="--jobs 2000 --instances 20000".
bench-scale: deps
	@$(WITH_CONSUL) -m bench.scale.run $(BENCH_ARGS)
