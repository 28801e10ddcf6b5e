"""
``/metrics`` on a live Glimpse over a real Consul: what Prometheus scrapes
after DNS queries, HTTP lookups and a provider apply.
"""

import re
import urllib.request

import pytest
from prometheus_client.parser import text_string_to_metric_families
from twisted.internet.task import Clock
from twisted.names import dns

from glimpse.dev.registrations import register
from glimpse.dev.twistd import start_glimpse
from glimpse.dns.wire import DNSStats
from glimpse.http import GlimpseCollector, make_registry
from glimpse.metrics import LagProbe
from glimpse.testing import EmptyTopology

from support import ask, wait_until

ZONE = "glimpse.test"


@pytest.fixture(scope="module")
def glimpse(consul, tmp_path_factory):
    """
    A Glimpse over a Consul with one job.
    """
    register(consul.url, "web", "web-1", "http", 8080, "127.0.12.1")
    g = start_glimpse(consul.url, ZONE, workdir=str(tmp_path_factory.mktemp("glimpse")))
    wait_until(lambda: g.get("/v1/lookup/http.web.prod.shop.ams")[0] == 200, what="the view")
    yield g
    g.stop()


def scrape(glimpse):
    """
    ``{(sample name, frozenset(labels)): value}`` of one scrape.
    """
    with urllib.request.urlopen(glimpse.url + "/metrics", timeout=10) as r:
        assert r.headers["Content-Type"].startswith("text/plain")
        text = r.read().decode()
    return {(s.name, frozenset(s.labels.items())): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def sample(samples, name, **labels):
    return samples.get((name, frozenset(labels.items())), 0.0)


def test_metrics_count_dns_http_consul_and_the_view(glimpse):
    """
    After DNS queries and HTTP lookups, a scrape shows DNS responses by
    qtype and rcode, fast-path hits, the DNS latency histogram (every
    response, both paths), HTTP latency by route, Consul requests
    by endpoint, the watches, each zone's view age, the subscribers and
    the reactor's lag.
    """
    name = f"http.web.prod.shop.ams.{ZONE}"
    for _ in range(3):
        ask(glimpse.dns, name, dns.SRV)
    ask(glimpse.dns, f"nope.web.prod.shop.ams.{ZONE}", dns.SRV)
    glimpse.get("/v1/lookup/http.web.prod.shop.ams")
    samples = scrape(glimpse)
    assert sample(samples, "glimpse_dns_responses_total", qtype="SRV", rcode="NOERROR") >= 3
    assert sample(samples, "glimpse_dns_responses_total", qtype="SRV", rcode="NXDOMAIN") >= 1
    assert sample(samples, "glimpse_dns_fast_hits_total") >= 1
    # Every response is timed, on whichever path answered it.
    responses = sum(v for (n, _), v in samples.items() if n == "glimpse_dns_responses_total")
    assert sample(samples, "glimpse_dns_response_duration_seconds_count") == responses
    assert sample(samples, "glimpse_dns_response_duration_seconds_bucket", le="+Inf") == responses
    assert 0 < sample(samples, "glimpse_dns_response_duration_seconds_sum") < responses
    assert sample(samples, "glimpse_http_request_duration_seconds_count", route="lookup",
                  method="GET", code="200") >= 1
    assert sample(samples, "glimpse_consul_requests_total", endpoint="health/service") >= 1
    assert sample(samples, "glimpse_watches") >= 2
    assert sample(samples, "glimpse_view_age_seconds", zone="ams") == 0
    assert sample(samples, "glimpse_zone_serving", zone="ams") == 1
    assert ("glimpse_subscribers", frozenset()) in samples
    assert ("glimpse_reactor_lag_seconds_count", frozenset()) in samples
    assert sample(samples, "glimpse_gc_frozen_objects") > 10000
    assert ("glimpse_gc_pause_seconds_count", frozenset({("generation", "2")})) in samples


def test_provider_applies_are_counted(glimpse):
    """
    Each provider apply shows in glimpse_provider_applies_total.
    """
    state = {"instances": [{"product": "shop", "env": "prod", "job": "metrics",
                            "instance": "m-1", "address": "127.0.12.9",
                            "ports": {"http": 8080}}]}
    status, body = glimpse.put("/v1/providers/metrics-test", state)
    assert status == 200, body
    applies = [v for (n, _), v in scrape(glimpse).items()
               if n == "glimpse_provider_applies_total"]
    assert sum(applies) >= 1


def test_collector_reads_plain_counters():
    """
    The collector turns the DNS server's plain counters into labelled
    Prometheus counters (qtype and rcode names), on its own registry.
    """
    stats = DNSStats()
    stats.responses[(dns.A, 0)] += 2
    stats.responses[(dns.AAAA, 3)] += 1
    stats.fast_hits = 5

    registry, _ = make_registry(GlimpseCollector(EmptyTopology(), Clock(), dns_stats=stats))
    assert registry.get_sample_value("glimpse_dns_responses_total",
                                     {"qtype": "A", "rcode": "NOERROR"}) == 2
    assert registry.get_sample_value("glimpse_dns_responses_total",
                                     {"qtype": "AAAA", "rcode": "NXDOMAIN"}) == 1
    assert registry.get_sample_value("glimpse_dns_fast_hits_total") == 5
    assert re.match(r"^\d", str(registry.get_sample_value("glimpse_watches")))


def test_reactor_stalls_show_in_the_lag_histogram():
    """
    A timer is due every 0.1 s: on time it counts as no lag; when the
    event loop stalls (here, 0.35 s pass at once) the probe that ran late
    counts the stall, which a scrape shows in seconds.
    """
    clock = Clock()
    lag = LagProbe(clock)
    lag.startService()
    for _ in range(10):
        clock.advance(0.1)
    clock.advance(0.45)  # the probe due 0.1 s in runs 0.35 s late
    registry, _ = make_registry(GlimpseCollector(EmptyTopology(), clock, lag=lag))
    value = registry.get_sample_value
    assert value("glimpse_reactor_lag_seconds_count") == 11
    assert value("glimpse_reactor_lag_seconds_bucket", {"le": "0.001"}) == 10
    assert value("glimpse_reactor_lag_seconds_bucket", {"le": "0.25"}) == 10
    assert value("glimpse_reactor_lag_seconds_bucket", {"le": "1.0"}) == 11
    assert abs(value("glimpse_reactor_lag_seconds_sum") - 0.35) < 1e-6
    lag.stopService()
    assert not clock.getDelayedCalls()


def test_longest_stall_of_the_last_minute_is_a_gauge():
    """
    The histogram says how often the reactor stalled; the gauge says how
    long the worst stall of the last 60 s was: a 0.35 s stall shows until
    a minute has passed without one as long, and then the longest since.
    """
    clock = Clock()
    lag = LagProbe(clock)
    lag.startService()
    registry, _ = make_registry(GlimpseCollector(EmptyTopology(), clock, lag=lag))

    def longest():
        return registry.get_sample_value("glimpse_reactor_lag_max_seconds")

    assert longest() == 0
    clock.advance(0.1)
    clock.advance(0.45)  # the probe due 0.2 s in runs 0.35 s late
    for _ in range(50):
        clock.advance(0.1)
    clock.advance(0.15)  # a later, shorter stall: 0.05 s
    assert abs(longest() - 0.35) < 1e-6
    for _ in range(560):
        clock.advance(0.1)
    # 60 s after the 0.35 s stall: the 0.05 s one, 5.2 s later, is the longest.
    assert abs(longest() - 0.05) < 1e-6
    for _ in range(100):
        clock.advance(0.1)
    assert longest() == 0
    lag.stopService()
