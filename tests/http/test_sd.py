"""
``/v1/sd/prometheus``, Prometheus' HTTP service discovery, in memory: the
resource tree over a :class:`Topology` fed by the fake Consul of
:obj:`glimpse.testing`, through ``StubTreq``.  tests/test_prometheus.py
points a real Prometheus at a real Glimpse.
"""

import json
import random

import pytest
from treq.testing import StubTreq
from twisted.internet.task import Clock

from glimpse.consul import ConsulClient
from glimpse.http import Context, GlimpseCollector, Hub, make_registry, make_root
from glimpse.http.sd import meta_labels, target
from glimpse.testing import FakeConsul
from glimpse.view.topology import Topology

WEB = "shop--prod--web"
API = "shop--prod--api"


def entry(name, port_name, ip, port, status="passing", meta=None, drain=False, job=WEB):
    """
    A health entry for one named port of an instance, with one check.
    """
    sid = f"p:{job}:{name}:{port_name}"
    glimpse_meta = {"glimpse-provider": "p", "glimpse-instance": name,
                    "glimpse-port": port_name, **(meta or {})}
    if drain:
        glimpse_meta["glimpse-drain"] = "true"
    return {"Node": {"Node": "host-1", "Address": "192.168.1.5"},
            "Service": {"ID": sid, "Service": job, "Tags": [port_name], "Address": ip,
                        "Port": port, "Meta": glimpse_meta},
            "Checks": [{"CheckID": "serfHealth", "Name": "Serf Health Status",
                        "Status": "passing", "ServiceID": ""},
                       {"CheckID": f"{sid}:check0", "Name": "alive", "Type": "ttl",
                        "Status": status, "ServiceID": sid}]}


class Harness:
    """
    Glimpse's resource tree over a started view of a fake Consul holding
    shop/prod/web (web-1 healthy, web-2 critical, web-3 draining; ports
    http and admin) and shop/prod/api (api-1 on IPv6).
    """

    def __init__(self):
        self.clock = Clock()
        self.fake = FakeConsul(datacenter="ams", clock=self.clock)
        self.fake.set("catalog/services", {WEB: ["http", "admin"], API: ["grpc"]})
        self.fake.set(f"health/service/{WEB}", [
            entry("web-1", "http", "10.0.0.1", 8080, meta={"version": "1.4.2",
                                                           "git-sha": "abc"}),
            entry("web-1", "admin", "10.0.0.1", 9090, meta={"version": "1.4.2",
                                                            "git-sha": "abc"}),
            entry("web-2", "http", "10.0.0.2", 8080, status="critical"),
            entry("web-3", "http", "10.0.0.3", 8080, drain=True)])
        self.fake.set(f"health/service/{API}", [
            entry("api-1", "grpc", "2001:db8::1", 50051, job=API)])
        self.consul_stub = StubTreq(self.fake)
        consul = ConsulClient(self.consul_stub, "http://127.0.0.1:8500", self.clock)
        self.topology = Topology(consul, self.clock, max_stale=30.0, rand=random.Random(0))
        hub = Hub(self.topology, self.clock)
        registry, latency = make_registry(GlimpseCollector(self.topology, self.clock,
                                                           consul=consul, hub=hub))
        api = Context(self.topology, hub, None, "glimpse.test")
        self.http = StubTreq(make_root(api, None, registry, latency, self.clock))
        self.topology.start()
        self.advance(1)

    def advance(self, seconds, step=0.25):
        """
        Let time pass, delivering the fake's answers as a reactor would.
        """
        for _ in range(round(seconds / step)):
            self.clock.advance(step)
            self.consul_stub.flush()
            self.http.flush()

    def get(self, path):
        """
        ``(status, content type, decoded body)`` of one GET.
        """
        results = []
        d = self.http.get("http://glimpse" + path)
        d.addCallback(lambda r: r.content().addCallback(
            lambda body: results.append((r.code, r.headers, body))))
        self.advance(1)
        code, headers, body = results[0]
        return code, headers.getRawHeaders(b"content-type")[0], json.loads(body)


@pytest.fixture
def glimpse():
    h = Harness()
    yield h
    h.topology.stop()


def targets(body):
    """
    ``{target: labels}`` of an answer whose groups have one target each.
    """
    assert all(len(group["targets"]) == 1 for group in body)
    return {group["targets"][0]: group["labels"] for group in body}


def test_the_healthy_instances_of_an_address_with_their_labels(glimpse):
    """
    Prometheus gets, as JSON, one target group per healthy instance of the
    address (not the critical one, not the draining one), labelled with
    where it is in the topology and its meta, keys made label names.
    """
    code, content_type, body = glimpse.get("/v1/sd/prometheus?address=http.web.prod.shop.ams")
    assert code == 200 and content_type == b"application/json"
    assert body == [{"targets": ["10.0.0.1:8080"], "labels": {
        "__meta_glimpse_zone": "ams", "__meta_glimpse_product": "shop",
        "__meta_glimpse_env": "prod", "__meta_glimpse_job": "web",
        "__meta_glimpse_service": "http", "__meta_glimpse_instance": "web-1",
        "__meta_glimpse_node": "host-1", "__meta_glimpse_provider": "p",
        "__meta_glimpse_address": "http.web.prod.shop.ams",
        "__meta_glimpse_healthy": "true", "__meta_glimpse_status": "passing",
        "__meta_glimpse_drain": "false", "__meta_glimpse_meta_version": "1.4.2",
        "__meta_glimpse_meta_git_sha": "abc"}}]


def test_healthy_false_gives_every_instance(glimpse):
    """
    ``&healthy=false`` gives every registered instance, each saying whether
    DNS serves it and why not (its status, draining).
    """
    code, _, body = glimpse.get(
        "/v1/sd/prometheus?address=http.web.prod.shop.ams.glimpse.test.&healthy=false")
    assert code == 200
    shown = {t: (labels["__meta_glimpse_healthy"], labels["__meta_glimpse_status"],
                 labels["__meta_glimpse_drain"]) for t, labels in targets(body).items()}
    assert shown == {"10.0.0.1:8080": ("true", "passing", "false"),
                     "10.0.0.2:8080": ("false", "critical", "false"),
                     "10.0.0.3:8080": ("false", "passing", "true")}


def test_wildcards_give_every_port_and_job_they_match(glimpse):
    """
    ``*`` labels take every named port and job they match: each port of an
    instance is a target of its own, with its port name; an IPv6 instance's
    target is bracketed.
    """
    code, _, body = glimpse.get("/v1/sd/prometheus?address=*.web.prod.shop.ams")
    assert code == 200
    assert {t: labels["__meta_glimpse_service"] for t, labels in targets(body).items()} == {
        "10.0.0.1:9090": "admin", "10.0.0.1:8080": "http"}
    code, _, body = glimpse.get("/v1/sd/prometheus?address=*.*.*.shop.ams")
    assert sorted(targets(body)) == ["10.0.0.1:8080", "10.0.0.1:9090", "[2001:db8::1]:50051"]


def test_an_address_that_names_nothing_has_no_targets(glimpse):
    """
    An address no job has (yet, or any more) answers an empty list, so that
    Prometheus drops the targets of a job that is gone; an unknown zone is
    a 404 naming the zones there are.
    """
    assert glimpse.get("/v1/sd/prometheus?address=http.gone.prod.shop.ams")[::2] == (200, [])
    assert glimpse.get("/v1/sd/prometheus?address=nope.web.prod.shop.ams")[::2] == (200, [])
    code, _, body = glimpse.get("/v1/sd/prometheus?address=http.web.prod.shop.xyz")
    assert code == 404 and "ams" in body["detail"]


@pytest.mark.parametrize(("query", "says"), [
    ("", "?address=*.web.prod.shop.ams"),
    ("?address=", "?address=*.web.prod.shop.ams"),
    ("?address=web.prod.shop.ams", "<service>.<job>.<env>.<product>.<zone>"),
    ("?address=http.web.prod.shop.*", "cannot be '*'"),
    ("?address=http.web.prod.shop.ams&healthy=maybe", "&healthy=false"),
    ("?address=http.web.prod.shop.ams&job=web", "the parameters are address and healthy"),
    ("?address=http.web.prod.shop.ams&address=http.api.prod.shop.ams", "http_sd_configs"),
])
def test_bad_parameters_say_what_to_write(glimpse, query, says):
    """
    A missing, malformed, repeated or unknown parameter is a JSON 400 whose
    detail says what to write.
    """
    code, content_type, body = glimpse.get(f"/v1/sd/prometheus{query}")
    assert code == 400 and content_type == b"application/json"
    assert set(body) == {"error", "detail"} and says in body["detail"]


def test_other_paths_under_sd_point_at_prometheus(glimpse):
    """
    ``/v1/sd``, an unknown format and a path below the resource are JSON
    404s pointing at the one there is.
    """
    for path in ("/v1/sd", "/v1/sd/", "/v1/sd/prometheus/more?address=http.web.prod.shop.ams"):
        code, _, body = glimpse.get(path)
        assert code == 404 and "/v1/sd/prometheus?address=" in body["detail"], path
    code, _, _ = glimpse.get("/v1/sd/consul")
    assert code == 404


def test_scrapes_are_served_from_the_view(glimpse):
    """
    Once a job is watched, asking again and again makes no Consul request
    of its own: the view's one watch of the job serves every scrape.
    """
    path = "/v1/sd/prometheus?address=*.web.prod.shop.ams"
    glimpse.get(path)
    before = glimpse.fake.count(f"health/service/{WEB}")
    for _ in range(20):
        assert glimpse.get(path)[0] == 200
    assert glimpse.fake.count(f"health/service/{WEB}") == before


def test_a_view_too_old_to_serve_is_a_503(glimpse):
    """
    When Consul has been away longer than --max-stale the answer is a 503
    with the reason, so Prometheus keeps the targets it had.
    """
    assert glimpse.get("/v1/sd/prometheus?address=http.web.prod.shop.ams")[0] == 200
    glimpse.fake.fail(500, "Consul is gone")
    glimpse.advance(40)
    code, _, body = glimpse.get("/v1/sd/prometheus?address=http.web.prod.shop.ams")
    assert code == 503 and "max-stale" in body["detail"]


def test_meta_keys_become_prometheus_label_names():
    """
    Meta keys become ``__meta_glimpse_meta_<key>`` with ``-`` made ``_``;
    when two keys make one label, the key that needed no change wins.
    """
    assert meta_labels([("git-sha", "a"), ("team", "b"), ("A-b_c", "c")]) == {
        "__meta_glimpse_meta_git_sha": "a", "__meta_glimpse_meta_team": "b",
        "__meta_glimpse_meta_A_b_c": "c"}
    assert meta_labels([("git-sha", "dash"), ("git_sha", "underscore")]) == {
        "__meta_glimpse_meta_git_sha": "underscore"}
    assert target("10.0.0.1", 80) == "10.0.0.1:80"
    assert target("2001:db8::1", 80) == "[2001:db8::1]:80"
