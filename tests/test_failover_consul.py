"""
Failover across zones end to end: two WAN-joined Consul dev agents (ams,
fra), a real ``twistd glimpse`` on ams, asked over DNS, HTTP, event
streams and the CLI as a client would.
"""

import io
import urllib.request

import pytest
from prometheus_client.parser import text_string_to_metric_families
from twisted.names import dns

from glimpse.cli import main
from glimpse.dev.consul import start_dev_consul
from glimpse.dev.registrations import register, set_check
from glimpse.dev.twistd import start_glimpse

from http_helpers import EventReader
from support import ask, srv_targets, wait_until

ZONE = "glimpse.test"
ANY = f"http.web.prod.shop.any.{ZONE}"
PINNED = f"http.web.prod.shop.ams.{ZONE}"
AMS_SRV = {(f"7f001401.addr.ams.{ZONE}", 8080)}
FRA_SRV = {(f"7f001501.addr.fra.{ZONE}", 8080), (f"7f001502.addr.fra.{ZONE}", 8080)}
#: The TTLs Glimpse is given: failover answers get the negative one.
TTL, NEGATIVE_TTL = 30, 2


@pytest.fixture(scope="module")
def zones(consul_pair, tmp_path_factory):
    """
    shop/prod/web in ams (one instance, its check flipped by the tests) and
    fra (two instances), and a Glimpse on ams that refreshes its zone list
    every second.  Yields ``(glimpse, ams check, (ams, fra))``.
    """
    ams, fra = consul_pair
    check = register(ams.url, "web", "web-a1", "http", 8080, "127.0.20.1")
    register(fra.url, "web", "web-f1", "http", 8080, "127.0.21.1")
    register(fra.url, "web", "web-f2", "http", 8080, "127.0.21.2")
    g = start_glimpse(ams.url, ZONE, extra_args=[
        f"--dns-ttl={TTL}", f"--negative-ttl={NEGATIVE_TTL}", "--zones-interval=1"],
        workdir=str(tmp_path_factory.mktemp("glimpse")))
    wait_until(lambda: srv_targets(ask(g.dns, ANY)) == AMS_SRV, what="the any name")
    yield g, check, consul_pair
    g.stop()


def scrape(glimpse):
    with urllib.request.urlopen(glimpse.url + "/metrics", timeout=10) as r:
        text = r.read().decode()
    return {(s.name, frozenset(s.labels.items())): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def consul_reads(glimpse):
    """
    How many health and coordinate requests Glimpse has sent Consul.
    """
    samples = scrape(glimpse)
    return sum(v for (name, labels), v in samples.items()
               if name == "glimpse_consul_requests_total"
               and dict(labels)["endpoint"].startswith(("health/", "coordinate/")))


def cli(*argv):
    out, err = io.StringIO(), io.StringIO()
    return main(list(argv), out, err), out.getvalue(), err.getvalue()


def test_any_fails_over_to_the_other_zone_and_comes_back(zones):
    """
    ``...any`` answers the local zone; when its only instance fails, fra's
    instances, with targets in fra and the negative TTL, while the pinned
    ams name is NODATA; HTTP says which zone answered and why, a stream
    sees the switch and the way back, the CLI says it, and when the local
    instance recovers ``any`` answers it again.
    """
    g, check, (ams, _) = zones
    r = ask(g.dns, ANY)
    assert srv_targets(r) == AMS_SRV and {a.ttl for a in r.answers} == {TTL}
    status, body = g.get("/v1/lookup/http.web.prod.shop.any")
    assert status == 200 and (body["zone"], body["failover"]) == ("ams", None)
    stream = EventReader(f"{g.url}/v1/watch/http.web.prod.shop.any")
    try:
        wait_until(lambda: stream.events, what="the stream's snapshot")

        set_check(ams.url, check, "critical")
        r = wait_until(lambda: (lambda m: m if srv_targets(m) == FRA_SRV else None)(
            ask(g.dns, ANY)), what="any to fail over to fra")
        assert {a.ttl for a in r.answers + r.additional} == {NEGATIVE_TTL}
        assert {a.ttl for a in ask(g.dns, ANY, dns.A).answers} == {NEGATIVE_TTL}
        pinned = ask(g.dns, PINNED)
        assert pinned.rCode == dns.OK and pinned.answers == [] and pinned.authority
        status, body = g.get("/v1/lookup/http.web.prod.shop.any")
        assert status == 200 and body["zone"] == "fra"
        assert body["failover"]["from"] == "ams"
        assert "ams has 0 serving instances" in body["failover"]["reason"]
        # fra is the nearest by Consul's coordinates (read every --zones-interval).
        wait_until(lambda: "the nearest zone that has them (" in g.get(
            "/v1/lookup/http.web.prod.shop.any")[1]["failover"]["reason"],
            what="the round-trip time in the reason")
        assert {i["instance"] for i in body["instances"]} == {"web-f1", "web-f2"}
        assert {i["zone"] for i in body["instances"]} == {"fra"}
        code, _, err = cli("--agent", g.url, "lookup", "http.web.prod.shop.any")
        assert code == 0 and "fra answers in place of ams" in err
        wait_until(lambda: any(kind == "summary" and data["zone"] == "fra"
                               and data["failover"]["from"] == "ams"
                               for kind, _, data in stream.events),
                   what="the stream's switch to fra")

        set_check(ams.url, check, "passing")
        wait_until(lambda: srv_targets(ask(g.dns, ANY)) == AMS_SRV,
                   timeout=1 + NEGATIVE_TTL + 10, what="any to answer ams again")
        wait_until(lambda: any(kind == "summary" and data["zone"] == "ams"
                               and data["failover"] is None
                               for kind, _, data in stream.events),
                   what="the stream's switch back to ams")
        kinds = [kind for kind, _, _ in stream.events]
        assert "add" in kinds and "remove" in kinds
    finally:
        stream.close()
        set_check(ams.url, check, "passing")


def test_explain_says_why_another_zone_answers(zones):
    """
    /v1/explain on an ``any`` name gives the answering zone's instances in
    DNS, and the local zone's out of it by failover, with the reason.
    """
    g, check, (ams, _) = zones
    set_check(ams.url, check, "critical")
    try:
        wait_until(lambda: srv_targets(ask(g.dns, ANY)) == FRA_SRV, what="the failover")
        status, body = g.get("/v1/explain/http.web.prod.shop.any")
        assert status == 200 and body["zone"] == "fra" and body["failover"]["from"] == "ams"
        rows = {r["instance"]: r for r in body["instances"]}
        assert rows["web-f1"]["in_dns"] and rows["web-f1"]["zone"] == "fra"
        assert rows["web-a1"]["zone"] == "ams" and not rows["web-a1"]["in_dns"]
        assert rows["web-a1"]["rule"].startswith("failover: ams has 0 serving instances")
        assert rows["web-f1"]["rules"]["failover"].startswith("fra answers in place of ams")
    finally:
        set_check(ams.url, check, "passing")
        wait_until(lambda: srv_targets(ask(g.dns, ANY)) == AMS_SRV, what="ams again")


def test_any_answers_cost_no_consul_request(zones):
    """
    Once the views are held, answering ``any`` names over DNS and HTTP (the
    failover answer included) sends Consul no request per query.
    """
    g, check, (ams, _) = zones
    set_check(ams.url, check, "critical")
    try:
        wait_until(lambda: srv_targets(ask(g.dns, ANY)) == FRA_SRV, what="the failover")
        before = consul_reads(g)
        for n in range(100):
            ask(g.dns, ANY, dns.SRV if n % 2 else dns.A, tcp=n % 10 == 0)
            if n % 10 == 0:
                assert g.get("/v1/lookup/http.web.prod.shop.any")[0] == 200
        # A blocking query may come back now and then: never one per query.
        assert consul_reads(g) - before < 10
    finally:
        set_check(ams.url, check, "passing")
        wait_until(lambda: srv_targets(ask(g.dns, ANY)) == AMS_SRV, what="ams again")


def test_a_datacenter_named_any_is_ignored(zones, consul_binary, tmp_path):
    """
    A Consul datacenter called "any" joining the federation never becomes
    a zone (the log says why, once), and ``any`` names keep meaning
    failover.
    """
    g, _, (ams, _) = zones
    with start_dev_consul(consul_binary, "any", join_wan=ams, workdir=str(tmp_path)):
        wait_until(lambda: "Consul has a datacenter named 'any'" in g.log_tail(200),
                   what="the log line")
        status, body = g.get("/v1/zones")
        assert status == 200 and "any" not in {z["zone"] for z in body["zones"]}
        assert srv_targets(ask(g.dns, ANY)) == AMS_SRV
        assert g.get("/v1/lookup/http.web.prod.shop.any")[1]["zone"] == "ams"
    assert g.log_tail(400).count("Consul has a datacenter named 'any'") == 1
