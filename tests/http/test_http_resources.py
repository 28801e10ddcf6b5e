"""
The HTTP resource tree in memory: ``StubTreq`` over the root, a :class:`Topology`
fed by the fake Consul of :obj:`glimpse.testing`, and a :class:`Clock`.  For what a
real Consul cannot easily do on demand: the view going stale, 405s, and
Consul becoming reachable only later.
"""

import json
import random

from treq.testing import StubTreq
from twisted.internet.task import Clock

from glimpse.consul import ConsulClient
from glimpse.http import Context, GlimpseCollector, Hub, make_registry, make_root
from glimpse.testing import FakeConsul
from glimpse.view.history import CheckHistory
from glimpse.view.topology import Topology

WEB = "shop--prod--web"


def entry(n, status="passing"):
    """
    A health entry for instance web-<n> of shop/prod/web.
    """
    sid = f"p:{WEB}:web-{n}:http"
    return {"Node": {"Node": "host-1", "Address": "192.168.1.5"},
            "Service": {"ID": sid, "Service": WEB, "Tags": ["http"],
                        "Address": f"10.0.0.{n}", "Port": 8080,
                        "Meta": {"glimpse-provider": "p", "glimpse-instance": f"web-{n}",
                                 "glimpse-port": "http"}},
            "Checks": [{"CheckID": "serfHealth", "Name": "Serf Health Status",
                        "Status": status, "ServiceID": ""}]}


class Harness:
    """
    A root resource over a started topology whose Consul is a fake.
    """

    def __init__(self):
        self.clock = Clock()
        self.fake = FakeConsul(datacenter="ams", clock=self.clock)
        self.fake.set("catalog/services", {WEB: ["http"]})
        self.fake.set(f"health/service/{WEB}", [entry(1), entry(2, "critical")])
        self.consul_stub = StubTreq(self.fake)
        consul = ConsulClient(self.consul_stub, "http://127.0.0.1:8500", self.clock)
        self.topology = Topology(consul, self.clock, max_stale=30.0, rand=random.Random(0))
        self.hub = Hub(self.topology, self.clock)
        registry, latency = make_registry(GlimpseCollector(self.topology, self.clock, consul=consul,
                                                           hub=self.hub))
        api = Context(self.topology, self.hub, CheckHistory(self.topology, self.clock),
                      "glimpse.test")
        self.root = make_root(api, None, registry, latency, self.clock)
        self.http = StubTreq(self.root)

    def advance(self, seconds, step=0.25):
        """
        Let time pass, delivering the fake's answers as a reactor would.
        """
        for _ in range(round(seconds / step)):
            self.clock.advance(step)
            self.consul_stub.flush()
            self.http.flush()

    def get(self, path, method="GET"):
        """
        ``(status, headers, decoded body)`` of one request.
        """
        results = []
        d = self.http.request(method, "http://glimpse" + path)
        d.addCallback(lambda r: r.content().addCallback(
            lambda body: results.append((r.code, r.headers, body))))
        self.advance(1)
        code, headers, body = results[0]
        return code, headers, json.loads(body)


def started():
    h = Harness()
    h.topology.start()
    h.hub.startService()
    h.advance(1)
    return h


def test_status_is_503_until_consul_answers_then_200():
    """
    Before the view exists /v1/status is 503; once Consul answers it is 200.
    """
    h = Harness()
    h.fake.fail(500, "not yet")
    h.topology.start()
    h.advance(1)
    code, _, body = h.get("/v1/status")
    assert code == 503 and body["serving"] is False
    h.fake.recover()
    h.advance(3)
    code, _, body = h.get("/v1/status")
    assert code == 200 and body["serving"] is True


def test_lookup_becomes_503_when_the_view_is_older_than_max_stale():
    """
    A lookup served from the shared answer still fails with a 503 (with
    the reason) once Consul has been away longer than --max-stale.
    """
    h = started()
    code, headers, body = h.get("/v1/lookup/http.web.prod.shop.ams")
    assert code == 200 and len(body["instances"]) == 2
    assert headers.getRawHeaders(b"x-glimpse-index")
    h.fake.fail(500, "Consul is gone")
    h.advance(40)
    code, _, body = h.get("/v1/lookup/http.web.prod.shop.ams")
    assert code == 503 and "max-stale" in body["detail"]
    h.topology.stop()


def test_wrong_methods_and_paths_are_json_errors():
    """
    A method a resource does not take is a JSON 405 with Allow; an unknown
    path a JSON 404 pointing at the OpenAPI document.
    """
    h = started()
    code, headers, body = h.get("/v1/lookup/http.web.prod.shop.ams", method="DELETE")
    assert code == 405 and b"GET" in headers.getRawHeaders(b"allow")[0]
    assert set(body) == {"error", "detail"}
    code, _, body = h.get("/v1/nothing-here")
    assert code == 404 and "openapi.json" in body["detail"]
    code, _, body = h.get("/metrics", method="POST")
    assert code == 405
    h.topology.stop()


def test_made_up_addresses_leave_nothing_behind():
    """
    Looking up addresses that do not exist answers 404 and keeps no shared
    answer for them, so a scan cannot fill Glimpse's memory.
    """
    h = started()
    for n in range(20):
        code, _, _ = h.get(f"/v1/lookup/http.nope{n}.prod.shop.ams")
        assert code == 404
    assert h.hub.subjects == {}
    h.topology.stop()


def test_long_poll_returns_the_same_answer_after_wait():
    """
    With the current index, a long-poll answers the same body after its
    wait when nothing changed.
    """
    h = started()
    _, headers, body = h.get("/v1/lookup/http.web.prod.shop.ams")
    index = headers.getRawHeaders(b"x-glimpse-index")[0].decode()
    results = []
    d = h.http.get(f"http://glimpse/v1/lookup/http.web.prod.shop.ams?index={index}&wait=5s")
    d.addCallback(lambda r: r.content().addCallback(lambda b: results.append((r.code, b))))
    h.advance(4)
    assert results == []
    h.advance(2)
    assert results[0][0] == 200 and json.loads(results[0][1]) == body
    h.topology.stop()
