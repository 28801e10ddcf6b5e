"""
The HTTP API end to end: a real ``twistd glimpse`` over a real Consul dev
agent, asked with plain HTTP as an operator or a service would.
"""

import json
import threading
import urllib.error
import urllib.request

import pytest

from glimpse.dev.registrations import deregister, register, set_check
from glimpse.dev.twistd import http_json, start_glimpse

from support import wait_until

ZONE = "glimpse.test"
WEB = "http.web.prod.shop.ams"


@pytest.fixture(scope="module")
def topo(consul):
    """
    Consul holding shop/prod/web (three instances, http and admin; web-3
    failing), shop/prod/api (one instance with a warning) and shop/prod/batch
    (one draining instance).
    """
    checks = {}
    for n, status in ((1, "passing"), (2, "passing"), (3, "critical")):
        for port_name, port in (("http", 8080), ("admin", 9080)):
            checks[(n, port_name)] = register(
                consul.url, "web", f"web-{n}", port_name, port, f"127.0.5.{n}", status,
                meta={"version": f"1.{n}"})
    checks["api"] = register(consul.url, "api", "api-1", "http", 7000, "127.0.6.1", "warning")
    register(consul.url, "batch", "batch-1", "http", 7100, "127.0.7.1", drain=True)
    return checks


@pytest.fixture(scope="module")
def glimpse(consul, topo, tmp_path_factory):
    """
    A Glimpse whose wildcard lookups return at most 3 instances.
    """
    g = start_glimpse(consul.url, ZONE, extra_args=["--lookup-cap=3"],
                      workdir=str(tmp_path_factory.mktemp("glimpse")))
    wait_until(lambda: g.get(f"/v1/lookup/{WEB}")[0] == 200, what="the view of web")
    yield g
    g.stop()


def get_with_index(glimpse, path, timeout=10.0):
    """
    ``(status, body, X-Glimpse-Index)`` of a GET.
    """
    try:
        with urllib.request.urlopen(glimpse.url + path, timeout=timeout) as r:
            return r.status, json.loads(r.read()), r.headers.get("X-Glimpse-Index")
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read()), e.headers.get("X-Glimpse-Index")


def test_lookup_shows_every_instance_with_provider_meta_zone_and_checks(glimpse):
    """
    A lookup lists every instance, the failing one too, each with its host,
    IP, port, node, zone, provider, meta, health and every check.
    """
    status, body = glimpse.get(f"/v1/lookup/{WEB}")
    assert status == 200, body
    by_name = {i["instance"]: i for i in body["instances"]}
    assert sorted(by_name) == ["web-1", "web-2", "web-3"]
    one = by_name["web-1"]
    assert (one["ip"], one["port"], one["zone"], one["provider"]) == ("127.0.5.1", 8080, "ams", "t")
    assert one["meta"] == {"version": "1.1"} and one["host"] == one["node"]
    assert one["healthy"] is True and by_name["web-3"]["healthy"] is False
    check = next(c for c in by_name["web-3"]["checks"] if c["name"] == "ttl")
    assert check["status"] == "critical" and check["type"] == "ttl" and "last_change" in check


def test_healthy_filter_keeps_what_dns_serves(glimpse):
    """
    ``?healthy=true`` leaves out failing instances; a bad value is a 400
    saying what to write.
    """
    status, body = glimpse.get(f"/v1/lookup/{WEB}?healthy=true")
    assert status == 200
    assert sorted(i["instance"] for i in body["instances"]) == ["web-1", "web-2"]
    status, body = glimpse.get(f"/v1/lookup/{WEB}?healthy=maybe")
    assert status == 400 and "healthy=true" in body["detail"]


def test_wildcards_union_with_a_cap(glimpse):
    """
    ``*`` in a label takes the union of the exact lookups; past the cap the
    answer says ``truncated``.  A ``*`` zone is refused with what to write.
    """
    status, body = glimpse.get("/v1/lookup/http.*.prod.shop.ams")
    assert status == 200
    assert body["truncated"] is True and len(body["instances"]) == 3
    status, body = glimpse.get("/v1/lookup/*.api.prod.shop.ams")
    assert status == 200 and body["truncated"] is False
    assert [i["instance"] for i in body["instances"]] == ["api-1"]
    status, body = glimpse.get("/v1/lookup/http.web.prod.shop.*")
    assert status == 400 and "zone" in body["detail"]


def test_unknown_address_and_zone_are_json_404s(glimpse):
    """
    Lookups of what does not exist say so, and where to look.
    """
    status, body = glimpse.get("/v1/lookup/http.nope.prod.shop.ams")
    assert status == 404 and set(body) == {"error", "detail"}
    status, body = glimpse.get("/v1/lookup/http.web.prod.shop.nowhere")
    assert status == 404 and "known zones" in body["detail"]
    status, body = glimpse.get("/v1/lookup/not-an-address")
    assert status == 400 and "http.web.prod.shop.ams" in body["detail"]


def test_topology_counts_health_at_every_level(glimpse):
    """
    Each level of /v1/topology lists its children with counts of
    instances passing, warning and critical (an instance counted once over
    its named ports).
    """
    status, body = glimpse.get("/v1/topology")
    assert status == 200
    ams = next(c for c in body["children"] if c["name"] == "ams")
    assert (ams["instances"], ams["passing"], ams["warning"], ams["critical"]) == (5, 3, 1, 1)
    status, body = glimpse.get("/v1/topology/ams/shop/prod")
    jobs = {c["name"]: c for c in body["children"]}
    assert (jobs["web"]["passing"], jobs["web"]["critical"]) == (2, 1)
    assert jobs["api"]["warning"] == 1 and jobs["batch"]["draining"] == 1
    status, body = glimpse.get("/v1/topology/ams/shop/prod/web")
    assert body["level"] == "instance"
    assert {c["name"]: c["ports"] for c in body["children"]}["web-1"] == {
        "http": 8080, "admin": 9080}
    assert glimpse.get("/v1/topology/ams/nope")[0] == 404
    assert glimpse.get("/v1/topology/ams/Bad_Label")[0] == 400


def test_explain_gives_the_deciding_rule(glimpse):
    """
    /v1/explain says, per instance, whether DNS answers with it and why:
    a failing check, a warning, draining, or every check passing.
    """
    status, body = glimpse.get(f"/v1/explain/{WEB}")
    assert status == 200
    rules = {i["instance"]: (i["in_dns"], i["rule"]) for i in body["instances"]}
    assert rules["web-1"] == (True, "every check passes, the node's included")
    assert rules["web-3"][0] is False and "critical" in rules["web-3"][1]
    _, body = glimpse.get("/v1/explain/http.api.prod.shop.ams")
    assert "warning" in body["instances"][0]["rule"]
    _, body = glimpse.get("/v1/explain/http.batch.prod.shop.ams")
    assert "draining" in body["instances"][0]["rule"]


def test_status_reports_versions_and_views(glimpse):
    """
    /v1/status is 200 with versions, zones and their views' ages while
    Glimpse serves.
    """
    status, body = glimpse.get("/v1/status")
    assert status == 200 and body["serving"] is True and body["consul_reachable"] is True
    assert set(body["versions"]) == {"glimpse", "twisted", "python"}
    assert body["zones"]["ams"]["stale_seconds"] == 0


def test_status_is_503_when_glimpse_cannot_serve(tmp_path):
    """
    Without a Consul to ask, /v1/status answers 503 so a load balancer
    takes Glimpse out.
    """
    g = start_glimpse("http://127.0.0.1:9", ZONE, workdir=str(tmp_path))
    try:
        status, body = g.get("/v1/status")
        assert status == 503 and body["serving"] is False
    finally:
        g.stop()


def test_every_answer_carries_an_index_that_follows_the_answer(glimpse):
    """
    Lookups and topology answers carry X-Glimpse-Index; asking twice gives
    the same index while nothing changed.
    """
    _, _, first = get_with_index(glimpse, f"/v1/lookup/{WEB}")
    _, _, again = get_with_index(glimpse, f"/v1/lookup/{WEB}")
    assert first and first == again
    _, _, topology = get_with_index(glimpse, "/v1/topology/ams")
    assert topology and topology != first


def test_long_poll_wakes_on_its_change_only(consul, glimpse, topo):
    """
    ``?index=N&wait=`` returns at once for an old index; with the current
    one it sleeps through changes to other jobs and to other named ports of
    the same job, and returns as soon as its own answer changes.
    """
    _, _, index = get_with_index(glimpse, f"/v1/lookup/{WEB}")
    status, _, _ = get_with_index(glimpse, f"/v1/lookup/{WEB}?index=1&wait=30s")
    assert status == 200
    result = {}

    def poll():
        result["answer"] = get_with_index(glimpse, f"/v1/lookup/{WEB}?index={index}&wait=60s",
                                          timeout=90)

    t = threading.Thread(target=poll)
    t.start()
    try:
        # Unrelated churn: another job, and the admin port of web-2.
        set_check(consul.url, topo["api"], "critical", note="unrelated")
        set_check(consul.url, topo[(2, "admin")], "warning", note="unrelated")
        wait_until(lambda: glimpse.get("/v1/lookup/http.api.prod.shop.ams")[1]["instances"][0]
                   ["status"] == "critical", what="Glimpse to see the unrelated change")
        wait_until(lambda: any(i["instance"] == "web-2" and i["status"] == "warning"
                               for i in glimpse.get("/v1/lookup/admin.web.prod.shop.ams")[1]
                               ["instances"]), what="Glimpse to see the admin port change")
        assert t.is_alive(), "the long-poll woke for a change elsewhere"
        set_check(consul.url, topo[(1, "http")], "warning", note="ours")
        t.join(30)
        assert not t.is_alive()
        status, new_body, new_index = result["answer"]
        assert status == 200 and new_index != index
        one = next(i for i in new_body["instances"] if i["instance"] == "web-1")
        assert one["status"] == "warning"
        check = next(c for c in one["checks"] if c["name"] == "ttl")
        assert check["last_change"] is not None
    finally:
        set_check(consul.url, topo["api"], "warning")
        set_check(consul.url, topo[(2, "admin")], "passing")
        set_check(consul.url, topo[(1, "http")], "passing")
        t.join(90)


def test_bad_long_poll_parameters_are_400s(glimpse):
    """
    A malformed index or wait gets a 400 that says what to write.
    """
    status, body = glimpse.get(f"/v1/lookup/{WEB}?index=abc")
    assert status == 400 and "X-Glimpse-Index" in body["detail"]
    status, body = glimpse.get(f"/v1/lookup/{WEB}?index=1&wait=forever")
    assert status == 400 and "30s" in body["detail"]


def test_deregistered_job_leaves_topology(consul, glimpse):
    """
    A job whose last instance is deregistered disappears from lookups and
    the topology once Consul's catalog drops it.
    """
    register(consul.url, "gone", "gone-1", "http", 7200, "127.0.8.1")
    wait_until(lambda: glimpse.get("/v1/lookup/http.gone.prod.shop.ams")[0] == 200,
               what="the new job")
    deregister(consul.url, "t:shop--prod--gone:gone-1:http")
    wait_until(lambda: glimpse.get("/v1/lookup/http.gone.prod.shop.ams")[0] == 404,
               what="the job to go")
    jobs = [c["name"] for c in glimpse.get("/v1/topology/ams/shop/prod")[1]["children"]]
    assert "gone" not in jobs


def test_openapi_document_is_served(glimpse):
    """
    /v1/openapi.json is an OpenAPI 3.1 document naming every endpoint.
    """
    status, doc = http_json("GET", glimpse.url + "/v1/openapi.json")
    assert status == 200 and doc["openapi"].startswith("3.1")
    for path in ("/v1/lookup/{address}", "/v1/topology/{zone}", "/v1/watch/{address}",
                 "/v1/explain/{address}", "/v1/status", "/v1/zones", "/metrics",
                 "/v1/providers/{provider}"):
        assert path in doc["paths"]
