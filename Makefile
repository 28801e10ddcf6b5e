# Glimpse: the two commands are `make run` and `make test`.
#
# Everything the project needs is installed from here: Debian packages
# (when missing and we are root), a virtualenv in .venv, and Consul, built
# once from its Go module into ~/.cache/glimpse (tools/build-consul.sh).

PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
DEBS := unbound nsd bind9-dnsutils dnsperf wrk prometheus
# `make run ZONES=2` runs the two-zone demo; `make run CLUSTER=1` runs each
# zone as SERVERS Consul servers and a client agent with Consul's defaults.
ZONES ?= 1
CLUSTER ?=
SERVERS ?= 3
PYTEST_ARGS ?=
# Run a Python script with GLIMPSE_CONSUL set to the cached (or just built)
# Consul: the tests, the demo and every benchmark.
WITH_CONSUL = consul_bin=$$(tools/build-consul.sh) && GLIMPSE_CONSUL=$$consul_bin $(PY)

.PHONY: run test consul deps debs venv bench-dns bench-http bench-providers bench-zones bench-fuzz bench-soak bench-unbound bench-scale lint clean

deps: debs venv

# Debian packages the tests and benchmarks use for real (unbound, NSD, dig,
# dnsperf, wrk, prometheus and promtool), and python3-venv when $(PYTHON)
# cannot make a virtualenv (Debian's python3 comes without ensurepip);
# installed only when one is missing.
debs:
	@missing=""; \
	for cmd in unbound nsd dig dnsperf wrk prometheus promtool; do command -v $$cmd >/dev/null 2>&1 || \
	  [ -x /usr/sbin/$$cmd ] || missing="$(DEBS)"; done; \
	$(PYTHON) -c "import ensurepip, venv" >/dev/null 2>&1 || missing="$$missing python3-venv"; \
	if [ -n "$$missing" ]; then \
	  if [ "$$(id -u)" = 0 ]; then \
	    echo "make: installing $$missing"; \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing >/dev/null; \
	  else \
	    echo "make: missing Debian packages; run: sudo apt-get install $$missing"; exit 1; \
	  fi; \
	fi

# A venv whose pip upgrade failed (offline) is made again next time rather
# than left half-made.
$(PY):
	$(PYTHON) -m venv $(VENV) || { rm -rf $(VENV); echo "make: $(PYTHON) -m venv failed; on Debian: apt-get install python3-venv"; exit 1; }
	$(PY) -m pip install -q --upgrade pip || { rm -rf $(VENV); exit 1; }

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

# DNS: Glimpse against unbound, NSD, stock twisted.names and Consul's DNS
# with dnsperf over UDP and TCP (qps, latency, CPU/query, Consul requests
# per 1,000 queries), change -> DNS visibility, RSS with 100,000 instances.
# BENCH_ARGS='--unrotated' adds Glimpse with rotation off beside it.
bench-dns: deps
	@$(WITH_CONSUL) -m bench.dns.run $(BENCH_ARGS)

# 1,000,000 malformed packets (and 200,000 messages over TCP) at a running
# Glimpse: 0 crashes, normal queries answered throughout.
bench-fuzz: deps
	@$(WITH_CONSUL) -m bench.fuzz.run $(BENCH_ARGS)

# HTTP: GET /v1/lookup on Glimpse vs Consul's /v1/health/service vs a trivial
# twisted.web resource (wrk); 1,000 SSE subscribers: Consul change -> last
# subscriber's event p50/p99, and the Consul requests made.
bench-http: deps
	@$(WITH_CONSUL) -m bench.http.run $(BENCH_ARGS)

# Soak: the full collection with 100,000 instances in the view under the
# reactor lag probe (before/after), then 10 minutes at the full DNS rate with
# 1,000 event-stream subscribers and one Consul change per second: RSS, open
# descriptors, the longest reactor stall and DNS p99 per minute, and whether
# anything grew without bound.  BENCH_ARGS='--minutes 3' for a short one.
bench-soak: deps
	@$(WITH_CONSUL) -m bench.soak.gc_stall
	@$(WITH_CONSUL) -m bench.soak.run $(BENCH_ARGS)

# unbound (etc/unbound/glimpse.conf as shipped) in front of a Glimpse that is
# stopped, changed in Consul meanwhile and restarted: seconds from Glimpse's
# new answer to unbound's, and what unbound served during the outage.
bench-unbound: deps
	@$(WITH_CONSUL) -m bench.unbound.recovery $(BENCH_ARGS)

# Fleet scale (#13): 10,000 jobs / 100,000 instances in a 3-server zone behind
# a default client agent; Glimpse's start-to-serving time, RSS, connections,
# Consul requests/s idle, with 10 changes/s and during an outage, change ->
# DNS p50/p99, and the servers' load next to plain blocking-query clients and
# Consul's DNS (docs/scale.md). BENCH_ARGS="--jobs 2000 --instances 20000".
bench-scale: deps
	@$(WITH_CONSUL) -m bench.scale.run $(BENCH_ARGS)
