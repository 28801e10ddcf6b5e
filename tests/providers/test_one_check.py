"""
One check per instance, against a real Consul agent and a real Glimpse: an
instance with three named ports is probed once per interval (its checks
run on one port's registration, the other ports alias it), and its ports
go out of DNS and come back together.  The HTTP path and the file path
lay the checks out alike, and registrations an older Glimpse wrote are
replaced cleanly.
"""

import threading
import time
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from twisted.names import dns

from glimpse.dev.twistd import http_json, start_glimpse
from glimpse.mapping import META_HASH, check_id, fingerprint
from glimpse.providers.files import provide_to_config_dir
from glimpse.providers.state import registrations, validate_state

from support import a_addresses, ask, wait_until

ZONE = "glimpse.test"
PORTS = {"http": 8080, "admin": 8081, "metrics": 8082}
#: Consul's shortest check interval.
INTERVAL = 1.0


class HealthEndpoint:
    """
    A health page on a free loopback port that counts the requests it gets
    and answers 500 while ``failing``.
    """

    def __init__(self):
        self.requests = 0
        self.failing = False
        self._lock = threading.Lock()
        endpoint = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self):
                with endpoint._lock:
                    endpoint.requests += 1
                self.send_response(500 if endpoint.failing else 200)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args):
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}/health"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()

    def count(self):
        with self._lock:
            return self.requests

    def close(self):
        self._server.shutdown()
        self._server.server_close()
        self._thread.join()


@pytest.fixture
def endpoint():
    served = HealthEndpoint()
    yield served
    served.close()


@pytest.fixture(scope="module")
def glimpse(consul, tmp_path_factory):
    """
    One Glimpse on the module's agent.
    """
    g = start_glimpse(consul.url, ZONE, workdir=str(tmp_path_factory.mktemp("glimpse")))
    yield g
    g.stop()


def instance(job, name, ip, checks, ports=PORTS):
    """
    An instance of shop/prod/<job>.
    """
    return {"product": "shop", "env": "prod", "job": job, "instance": name, "address": ip,
            "ports": dict(ports), "checks": checks}


def answering(glimpse, job, ip):
    """
    ``{port name: whether DNS answers it with ip}`` for each named port.
    """
    return {port: ip in a_addresses(ask(glimpse.dns, f"{port}.{job}.prod.shop.ams.{ZONE}",
                                        dns.A))
            for port in PORTS}


def http_health(glimpse, job):
    """
    ``{port name: healthy}`` from one wildcard lookup: one answer, one
    view of the job.
    """
    status, body = glimpse.get(f"/v1/lookup/*.{job}.prod.shop.ams")
    assert status == 200, body
    return {i["service"]: i["healthy"] for i in body["instances"]}


def follow_flip(glimpse, job, ip, healthy):
    """
    Poll DNS for every port and the wildcard lookup until every port is
    ``healthy`` (in DNS or not), and return what each poll saw.  Every
    lookup must show the ports agreeing, and the DNS answers of the ports
    may differ only in a poll that straddled one change of the view, never
    in two polls in a row.
    """
    seen = []

    def flipped():
        dns_now = answering(glimpse, job, ip)
        http_now = http_health(glimpse, job)
        assert len(set(http_now.values())) == 1, f"ports disagree in one lookup: {http_now}"
        if seen:
            assert len(set(dns_now.values())) == 1 or len(set(seen[-1].values())) == 1, (
                f"ports disagree in DNS twice in a row: {seen[-1]}, {dns_now}")
        seen.append(dns_now)
        return set(dns_now.values()) == {healthy} and set(http_now.values()) == {healthy}

    wait_until(flipped, timeout=30, what=f"every port {'in' if healthy else 'out of'} DNS")
    return seen


def test_one_probe_per_interval_and_every_port_flips_together(glimpse, consul, endpoint):
    """
    An instance with three named ports and an HTTP check every second is
    probed about once a second, not three times; when its health page
    fails, all three names leave DNS together, and come back together when
    it recovers.  Over HTTP every port shows the real check (status and
    output), and /v1/explain names it as the reason.
    """
    check = {"name": "health page", "http": endpoint.url, "interval": "1s", "timeout": "1s"}
    state = {"instances": [instance("one", "o-1", "127.0.11.1", [check])]}
    status, body = glimpse.put("/v1/providers/one", state)
    assert status == 200, body
    wait_until(lambda: set(answering(glimpse, "one", "127.0.11.1").values()) == {True},
               timeout=30, what="every port in DNS once the check passes")

    # Count the probes over a few intervals: once per interval, with slack
    # for one at each end; three copies would be about three times as many.
    started, before = time.monotonic(), endpoint.count()
    time.sleep(6 * INTERVAL)
    elapsed, probes = time.monotonic() - started, endpoint.count() - before
    assert 2 <= probes <= elapsed / INTERVAL + 2, (probes, elapsed)

    endpoint.failing = True
    seen = follow_flip(glimpse, "one", "127.0.11.1", healthy=False)
    assert seen[0] == dict.fromkeys(PORTS, True)
    status, body = glimpse.get("/v1/lookup/*.one.prod.shop.ams")
    for shown in body["instances"]:
        (real,) = [c for c in shown["checks"] if not c["node_level"]]
        assert (real["name"], real["type"], real["status"]) == ("health page", "http",
                                                                "critical")
        assert "500" in real["output"]
        assert real["id"] == check_id("one:shop--prod--one:o-1:admin", 0)
    status, body = glimpse.get("/v1/explain/metrics.one.prod.shop.ams")
    (row,) = body["instances"]
    assert not row["in_dns"] and row["rule"] == "check 'health page' is critical"

    endpoint.failing = False
    follow_flip(glimpse, "one", "127.0.11.1", healthy=True)

    # Consul's own view agrees: each port's own checks (the real one, or
    # the alias of it) pass, so Consul's DNS gives every port too.
    def consul_statuses():
        entries = consul.get_json("health/service/shop--prod--one")
        return {e["Service"]["Meta"]["glimpse-port"]: {c["Status"] for c in e["Checks"]}
                for e in entries}
    wait_until(lambda: consul_statuses() == {port: {"passing"} for port in PORTS},
               what="every port passing in Consul too")


def test_file_path_lays_the_checks_out_alike(glimpse, consul):
    """
    ``glimpse provide --config-dir`` writes the same registrations: one real
    check on the first port, an alias on the others, and a TTL check passed
    on the agent makes every port pass, in Consul and in Glimpse's DNS.
    """
    state = {"instances": [instance("filed", "f-1", "127.0.11.2", [{"ttl": "10m"}])]}
    provide_to_config_dir("fp-one", state, str(consul.config_dir), consul.url)
    checks = consul.get_json("agent/checks")
    mine = {cid: c["Type"] for cid, c in checks.items() if cid.startswith("fp-one:")}
    carrier = "fp-one:shop--prod--filed:f-1:admin"
    assert mine == {f"{carrier}:check0": "ttl",
                    "fp-one:shop--prod--filed:f-1:http:alias:admin": "alias",
                    "fp-one:shop--prod--filed:f-1:metrics:alias:admin": "alias"}
    assert set(answering(glimpse, "filed", "127.0.11.2").values()) == {False}
    quoted = urllib.parse.quote(f"{carrier}:check0", safe="")
    assert http_json("PUT", f"{consul.url}/v1/agent/check/pass/{quoted}")[0] == 200
    wait_until(lambda: set(answering(glimpse, "filed", "127.0.11.2").values()) == {True},
               what="every port in DNS after one pass")
    provide_to_config_dir("fp-one", {"instances": []}, str(consul.config_dir), consul.url)


def old_layout(provider, state):
    """
    The registrations Glimpse 0.1 wrote: every check copied onto every
    named port, with IDs ``<service id>:check<N>``.
    """
    regs = registrations(provider, validate_state(state))
    checks = {r["Meta"]["glimpse-instance"]: r["Checks"] for r in regs.values()
              if not any("AliasService" in c for c in r["Checks"])}
    for sid, r in regs.items():
        carrier = checks[r["Meta"]["glimpse-instance"]]
        r["Checks"] = [dict(c, CheckID=check_id(sid, n)) for n, c in enumerate(carrier)]
        r["Meta"].pop(META_HASH)
        r["Meta"][META_HASH] = fingerprint(r)
    return regs


def test_registrations_of_an_older_glimpse_are_replaced_cleanly(glimpse, consul):
    """
    An instance registered the old way (every check on every port) is
    rewritten by the next PUT of the same state: the port carrying the
    checks is left alone, so its passed TTL check stays passing; the other
    ports lose their copies and get their alias, which passes with it.
    """
    state = {"instances": [instance("old", "u-1", "127.0.11.3", [{"ttl": "10m",
                                                                   "name": "alive"}])]}
    for definition in old_layout("up", state).values():
        status, answer = http_json(
            "PUT", f"{consul.url}/v1/agent/service/register?replace-existing-checks=true",
            definition)
        assert status == 200, answer
    for port in PORTS:
        quoted = urllib.parse.quote(f"up:shop--prod--old:u-1:{port}:check0", safe="")
        assert http_json("PUT", f"{consul.url}/v1/agent/check/pass/{quoted}")[0] == 200
    status, body = glimpse.put("/v1/providers/up", state)
    assert status == 200, body
    assert body["unchanged"] == ["up:shop--prod--old:u-1:admin"]
    assert body["changed"] == ["up:shop--prod--old:u-1:http", "up:shop--prod--old:u-1:metrics"]

    def checks():
        return {cid: c["Status"] for cid, c in consul.get_json("agent/checks").items()
                if cid.startswith("up:")}
    assert wait_until(lambda: set(checks().values()) == {"passing"} and checks(),
                      what="every port passing after the upgrade") == {
        "up:shop--prod--old:u-1:admin:check0": "passing",
        "up:shop--prod--old:u-1:http:alias:admin": "passing",
        "up:shop--prod--old:u-1:metrics:alias:admin": "passing"}
    status, body = glimpse.put("/v1/providers/up", state)
    assert len(body["unchanged"]) == 3
