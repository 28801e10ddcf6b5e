"""
The HTTP API's steering in memory (``StubTreq`` over the root, a fake
Consul, a Clock): meta filters and their 400s, weights, panic, and what
/v1/explain says under each rule.
"""

import json
import random

import pytest
from treq.testing import StubTreq
from twisted.internet.task import Clock

from glimpse.consul import ConsulClient
from glimpse.dns import DNSStats
from glimpse.http import Context, GlimpseCollector, Hub, make_registry, make_root
from glimpse.testing import FakeConsul
from glimpse.view.history import CheckHistory
from glimpse.view.steering import Steering
from glimpse.view.topology import Topology

WEB = "shop--prod--web"


def entry(n, status="passing", version="1", weights=(10, 2), drain=False):
    """
    A health entry for instance web-<n> of shop/prod/web, port http.
    """
    meta = {"glimpse-provider": "p", "glimpse-instance": f"web-{n}", "glimpse-port": "http",
            "version": version}
    if drain:
        meta["glimpse-drain"] = "true"
    return {"Node": {"Node": "host-1", "Address": "192.168.1.5"},
            "Service": {"ID": f"p:{WEB}:web-{n}:http", "Service": WEB, "Tags": ["http"],
                        "Address": f"10.0.0.{n}", "Port": 8080, "Meta": meta,
                        "Weights": {"Passing": weights[0], "Warning": weights[1]}},
            "Checks": [{"CheckID": f"c{n}", "Name": "alive", "Status": status,
                        "ServiceID": f"p:{WEB}:web-{n}:http"}]}


class Harness:
    """
    The root resource over a started view of zone ams, with Steering.
    """

    def __init__(self, entries, **steering):
        self.clock = Clock()
        self.fake = FakeConsul(datacenter="ams", clock=self.clock)
        self.fake.set("catalog/services", {WEB: ["http"]})
        self.fake.set(f"health/service/{WEB}", entries)
        self.consul_stub = StubTreq(self.fake)
        consul = ConsulClient(self.consul_stub, "http://127.0.0.1:8500", self.clock)
        self.topology = Topology(consul, self.clock, max_stale=30.0, rand=random.Random(0))
        self.steering = Steering(self.topology, consul, self.clock, **steering)
        self.hub = Hub(self.topology, self.clock)
        dns_stats = DNSStats(panic_answers=3)
        registry, latency = make_registry(GlimpseCollector(
            self.topology, self.clock, consul=consul, hub=self.hub, dns_stats=dns_stats))
        api = Context(self.topology, self.hub, CheckHistory(self.topology, self.clock),
                      "glimpse.test", steering=self.steering)
        self.root = make_root(api, None, registry, latency, self.clock)
        self.http = StubTreq(self.root)
        self.topology.start()
        self.steering.start()
        self.hub.startService()
        self.advance(1)

    def advance(self, seconds, step=0.25):
        for _ in range(round(seconds / step)):
            self.clock.advance(step)
            self.consul_stub.flush()
            self.http.flush()

    def get(self, path):
        results = []
        d = self.http.request("GET", "http://glimpse" + path)
        d.addCallback(lambda r: r.content().addCallback(
            lambda body: results.append((r.code, body))))
        self.advance(1)
        code, body = results[0]
        return code, body

    def json(self, path):
        code, body = self.get(path)
        return code, json.loads(body)

    def stop(self):
        self.steering.stop()
        self.topology.stop()


LOOKUP = "/v1/lookup/http.web.prod.shop.ams"


@pytest.fixture
def h():
    harness = Harness([entry(1, version="1"), entry(2, version="2"),
                       entry(3, "warning", version="2")])
    yield harness
    harness.stop()


def test_meta_filters_keep_the_matching_instances(h):
    """
    ?meta.version=2 keeps the instances whose meta says so; two filters
    must both match.
    """
    code, body = h.json(LOOKUP + "?meta.version=2")
    assert code == 200 and [i["instance"] for i in body["instances"]] == ["web-2", "web-3"]
    code, body = h.json(LOOKUP + "?meta.version=2&healthy=true")
    assert [i["instance"] for i in body["instances"]] == ["web-2"]
    code, body = h.json(LOOKUP + "?meta.version=2&meta.track=canary")
    assert code == 200 and body["instances"] == []


@pytest.mark.parametrize(("query", "says"), [
    ("?meta=version", "write ?meta.<key>=<value>"),
    ("?meta.=2", "a provider's meta key is 1-128 of A-Z a-z 0-9 _ -"),
    ("?meta.glimpse-drain=true", "not starting with 'glimpse-' or 'consul-'"),
    ("?meta.ver%20sion=2", "e.g. ?meta.version=1.4.2"),
    ("?meta.version=1&meta.version=2", "nothing could match both '1' and '2'; give one"),
    ("?meta.version=" + "x" * 513, "at most 512 characters"),
])
def test_a_bad_meta_filter_is_a_400_saying_what_to_write(h, query, says):
    """
    A meta filter Glimpse cannot apply is a JSON 400 saying what to write,
    on lookups, streams and explain alike.
    """
    for kind in ("lookup", "watch", "explain"):
        code, body = h.json(f"/v1/{kind}/http.web.prod.shop.ams{query}")
        assert code == 400 and says in json.dumps(body["detail"]), (kind, body)


def test_lookups_show_each_instances_weight(h):
    """
    Each instance shows its weights and the weight of its current state.
    """
    _, body = h.json(LOOKUP)
    shown = {i["instance"]: (i["weight"], i["weights"]) for i in body["instances"]}
    assert shown == {"web-1": (10, {"passing": 10, "warning": 2}),
                     "web-2": (10, {"passing": 10, "warning": 2}),
                     "web-3": (2, {"passing": 10, "warning": 2})}
    assert body["failover"] is None and body["panic"] is False


def test_explain_says_what_each_rule_does():
    """
    /v1/explain gives each instance's priority and weight in DNS and what
    each rule says: warning (with --serve-warning), panic, weight, meta,
    failover.
    """
    h = Harness([entry(1), entry(2, "warning"), entry(3, "critical"), entry(4, "critical"),
                 entry(5, drain=True)], serve_warning=True, panic_threshold=0.75)
    code, body = h.json("/v1/explain/http.web.prod.shop.ams?meta.version=1")
    assert code == 200 and body["panic"] is True and body["failover"] is None
    rows = {r["instance"]: r for r in body["instances"]}
    assert [(rows[n]["in_dns"], rows[n]["priority"], rows[n]["weight"])
            for n in ("web-1", "web-2", "web-3", "web-5")] == [
        (True, 1, 10), (True, 1, 2), (True, 2, 2), (False, None, None)]
    assert rows["web-2"]["rule"] == (
        "check 'alive' is warning: served with its warning weight 2 (--serve-warning)")
    assert rows["web-3"]["rule"].startswith("check 'alive' is critical; served at priority 2")
    assert "in panic: 2 of 4 instances healthy (50%), below 75%" in rows["web-3"]["rule"]
    assert rows["web-5"]["rule"].startswith("draining")
    assert rows["web-1"]["rules"]["weight"] == "SRV weight 10 (its weights: passing 10, warning 2)"
    assert rows["web-1"]["rules"]["meta"] == "matches meta.version=1"
    assert rows["web-1"]["meta_match"] is True
    assert rows["web-1"]["rules"]["failover"] == "ams is named: no failover"
    assert rows["web-2"]["rules"]["warning"].startswith("a check warns: served")
    h.stop()


def test_panic_is_shown_and_counted_and_lasts_the_hold():
    """
    A job with too few healthy instances is in panic ("panic": true) until
    its healthy share has held for --panic-hold; /metrics counts the DNS
    answers given in panic.
    """
    h = Harness([entry(1), entry(2, "critical"), entry(3, "critical")],
                panic_threshold=0.5, panic_hold=10)
    assert h.json(LOOKUP)[1]["panic"] is True
    h.fake.set(f"health/service/{WEB}", [entry(1), entry(2), entry(3, "critical")])
    h.advance(2)
    assert h.json(LOOKUP)[1]["panic"] is True
    h.advance(10)
    assert h.json(LOOKUP)[1]["panic"] is False
    assert b"glimpse_dns_panic_answers_total 3.0" in h.get("/metrics")[1]
    h.stop()


def test_any_without_a_second_zone_answers_the_local_one(h):
    """
    With one zone an ``any`` lookup answers it, saying so; ``*`` labels
    are refused (failover is per job), and an unknown job is a 404.
    """
    code, body = h.json("/v1/lookup/http.web.prod.shop.any")
    assert code == 200 and body["zone"] == "ams" and body["failover"] is None
    assert body["address"] == "http.web.prod.shop.any"
    code, body = h.json("/v1/lookup/*.web.prod.shop.any")
    assert code == 400 and "without '*'" in body["detail"]
    assert h.json("/v1/lookup/http.nope.prod.shop.any")[0] == 404
    assert h.json("/v1/explain/http.nope.prod.shop.any")[0] == 404
