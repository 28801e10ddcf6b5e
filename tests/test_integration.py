"""
The foundation end to end: a provider PUTs its state into a real Consul
through a real ``twistd glimpse``, and DNS and HTTP answer from it.
"""

import http.server
import threading

import pytest
from twisted.names import dns

from glimpse.dev.twistd import start_glimpse

from support import a_addresses, ask, srv_targets, wait_until

ZONE = "glimpse.test"


@pytest.fixture(scope="module")
def glimpse(consul, tmp_path_factory):
    """
    One Glimpse on the module's Consul agent.
    """
    g = start_glimpse(consul.url, ZONE, workdir=str(tmp_path_factory.mktemp("glimpse")))
    yield g
    g.stop()


class HealthEndpoint:
    """
    An HTTP health endpoint whose answer the test flips.
    """

    def __init__(self):
        self.healthy = True
        owner = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):
                self.send_response(200 if owner.healthy else 500)
                self.end_headers()
                self.wfile.write(b"ok" if owner.healthy else b"broken")

            def log_message(self, *args):
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/health"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self):
        self.server.shutdown()
        self.server.server_close()


def instance(job, name, ip, ports, checks=(), product="shop", env="prod"):
    return {"product": product, "env": env, "job": job, "instance": name,
            "address": ip, "ports": ports, "checks": list(checks)}


def srv(glimpse, name, tcp=False):
    return ask(glimpse.dns, name, dns.SRV, tcp=tcp)


def test_put_state_answers_srv_and_a_over_udp_and_tcp(glimpse):
    """
    After a PUT, SRV names every instance's port and a target inside the
    zone whose A record is in the additional section; A lists the IPs; both
    over UDP and TCP, and names match whatever their case.
    """
    state = {"instances": [
        instance("web", "web-1", "127.0.1.1", {"http": 8080, "admin": 9080}),
        instance("web", "web-2", "127.0.1.2", {"http": 8081, "admin": 9081}),
    ]}
    status, body = glimpse.put("/v1/providers/integ-a", state)
    assert status == 200, body
    assert len(body["added"]) == 4

    name = f"http.web.prod.shop.ams.{ZONE}"
    expected = {(f"7f000101.addr.ams.{ZONE}", 8080), (f"7f000102.addr.ams.{ZONE}", 8081)}
    wait_until(lambda: srv_targets(srv(glimpse, name)) == expected, what="both SRV answers")
    # The job's health answer may show one port's registrations before the
    # other's: wait for both ports before checking every answer.
    wait_until(lambda: a_addresses(ask(glimpse.dns, f"admin.web.prod.shop.ams.{ZONE}", dns.A))
               == {"127.0.1.1", "127.0.1.2"}, what="both A answers on admin")
    for tcp in (False, True):
        response = srv(glimpse, name.upper(), tcp=tcp)
        assert response.rCode == dns.OK and response.auth and not response.recAv
        assert response.queries[0].name.name.decode() == name.upper()
        assert srv_targets(response) == expected
        additional = {r.name.name.decode(): r.payload.dottedQuad() for r in response.additional}
        assert additional == {f"7f000101.addr.ams.{ZONE}": "127.0.1.1",
                              f"7f000102.addr.ams.{ZONE}": "127.0.1.2"}
        a = ask(glimpse.dns, f"admin.web.prod.shop.ams.{ZONE}", dns.A, tcp=tcp)
        assert a_addresses(a) == {"127.0.1.1", "127.0.1.2"}
    target = ask(glimpse.dns, f"7f000101.addr.ams.{ZONE}", dns.A)
    assert a_addresses(target) == {"127.0.1.1"}


def test_failing_http_check_leaves_dns_and_shows_critical(glimpse):
    """
    An instance whose HTTP check starts failing leaves the SRV answer within
    seconds and is shown critical, with the check's output, over HTTP; when
    the check passes again it comes back.
    """
    endpoint = HealthEndpoint()
    try:
        check = {"http": endpoint.url, "interval": "1s", "timeout": "1s"}
        state = {"instances": [
            instance("api", "api-1", "127.0.2.1", {"http": 7001}, [check]),
            instance("api", "api-2", "127.0.2.2", {"http": 7002}),
        ]}
        assert glimpse.put("/v1/providers/integ-b", state)[0] == 200
        name = f"http.api.prod.shop.ams.{ZONE}"
        both = {(f"7f000201.addr.ams.{ZONE}", 7001), (f"7f000202.addr.ams.{ZONE}", 7002)}
        wait_until(lambda: srv_targets(srv(glimpse, name)) == both, what="both instances healthy")

        endpoint.healthy = False
        wait_until(lambda: srv_targets(srv(glimpse, name)) == {(f"7f000202.addr.ams.{ZONE}", 7002)},
                   what="the failing instance to leave DNS")
        status, body = glimpse.get("/v1/lookup/http.api.prod.shop.ams")
        assert status == 200
        failing = next(i for i in body["instances"] if i["instance"] == "api-1")
        assert failing["healthy"] is False
        check_json = next(c for c in failing["checks"] if c["type"] == "http")
        assert check_json["status"] == "critical"
        assert "500" in check_json["output"]

        endpoint.healthy = True
        wait_until(lambda: srv_targets(srv(glimpse, name)) == both,
                   what="the instance to come back")
    finally:
        endpoint.close()


def test_second_put_without_an_instance_removes_it(glimpse):
    """
    A provider's state is its whole state: an instance left out of the next
    PUT is gone from DNS and HTTP, and the others are untouched.
    """
    one = instance("db", "db-1", "127.0.3.1", {"pg": 5432})
    two = instance("db", "db-2", "127.0.3.2", {"pg": 5432})
    assert glimpse.put("/v1/providers/integ-c", {"instances": [one, two]})[0] == 200
    name = f"pg.db.prod.shop.ams.{ZONE}"
    wait_until(lambda: len(srv_targets(srv(glimpse, name))) == 2, what="two instances")

    status, body = glimpse.put("/v1/providers/integ-c", {"instances": [one]})
    assert status == 200
    assert body["removed"] == ["integ-c:shop--prod--db:db-2:pg"]
    assert body["unchanged"] == ["integ-c:shop--prod--db:db-1:pg"]
    wait_until(lambda: srv_targets(srv(glimpse, name)) == {(f"7f000301.addr.ams.{ZONE}", 5432)},
               what="db-2 to leave DNS")
    lookup = wait_until(lambda: (lambda r: r[1] if len(r[1]["instances"]) == 1 else None)(
        glimpse.get("/v1/lookup/pg.db.prod.shop.ams")), what="db-2 to leave HTTP")
    assert [i["instance"] for i in lookup["instances"]] == ["db-1"]


def test_invalid_put_is_rejected_whole_and_keeps_the_previous_state(glimpse):
    """
    An invalid state gets a 400 listing every problem with its path, and
    nothing changes: GET returns the previous state and DNS still answers.
    """
    good = {"instances": [instance("cache", "c-1", "127.0.4.1", {"redis": 6379})]}
    assert glimpse.put("/v1/providers/integ-d", good)[0] == 200
    name = f"redis.cache.prod.shop.ams.{ZONE}"
    wait_until(lambda: srv_targets(srv(glimpse, name)), what="the cache instance")

    bad = {"instances": [
        instance("cache", "c-2", "127.0.4.2", {"redis": 70000}),
        instance("Cache", "c-3", "127.0.4.3", {"redis": 6379}, [{"tcp": "nope"}]),
    ]}
    status, body = glimpse.put("/v1/providers/integ-d", bad)
    assert status == 400
    paths = {p["path"] for p in body["detail"]}
    assert {"$.instances[0].ports.redis", "$.instances[1].job",
            "$.instances[1].checks[0].tcp", "$.instances[1].checks[0].interval"} <= paths

    status, state = glimpse.get("/v1/providers/integ-d")
    assert status == 200 and [i["instance"] for i in state["instances"]] == ["c-1"]
    assert srv_targets(srv(glimpse, name)) == {(f"7f000401.addr.ams.{ZONE}", 6379)}


def test_names_outside_or_missing_get_refused_and_nxdomain(glimpse):
    """
    Glimpse is no open resolver: a name outside its zone is REFUSED; a name
    inside it that does not exist is NXDOMAIN with the SOA, and the apex has
    an SOA.
    """
    outside = ask(glimpse.dns, "example.com", dns.A)
    assert outside.rCode == dns.EREFUSED and not outside.recAv
    missing = ask(glimpse.dns, f"http.nope.prod.shop.ams.{ZONE}", dns.SRV)
    assert missing.rCode == dns.ENAME and missing.auth
    assert [r.type for r in missing.authority] == [dns.SOA]
    soa = ask(glimpse.dns, ZONE, dns.SOA)
    assert soa.rCode == dns.OK and soa.answers[0].type == dns.SOA


def test_unknown_address_is_a_404_json(glimpse):
    """
    HTTP lookups of an address that does not exist, or that is malformed,
    get a JSON error saying so.
    """
    status, body = glimpse.get("/v1/lookup/http.nope.prod.shop.ams")
    assert status == 404 and "no address" in body["error"]
    status, body = glimpse.get("/v1/lookup/not-an-address")
    assert status == 400 and "<service>.<job>" in body["detail"]
