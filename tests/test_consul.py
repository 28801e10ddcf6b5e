"""
Tests for :obj:`glimpse.consul`: the Consul HTTP client, over the in-memory fake
Consul of :obj:`glimpse.testing`.
"""

import http.server
import socket
import threading

import pytest
from treq.client import HTTPClient
from treq.testing import StubTreq
from twisted.internet.task import Clock
from twisted.python.failure import Failure
from twisted.web.iweb import IAgent
from zope.interface.verify import verifyObject

from glimpse.consul import (
    AgentSelf,
    ConsulBusy,
    ConsulClient,
    ConsulDenied,
    ConsulError,
    ConsulNotFound,
    ConsulUnavailable,
    Response,
    reload_agent,
)
from glimpse.testing import FakeConsul, UnreachableAgent

WEB = "health/service/shop--prod--web"


class Harness:
    """
    A :class:`ConsulClient` on a :class:`Clock`, talking to a :class:`FakeConsul` through
    ``StubTreq``.
    """

    def __init__(self, token=None, timeout=10.0):
        self.fake = FakeConsul(datacenter="ams")
        self.stub = StubTreq(self.fake)
        self.clock = Clock()
        self.client = ConsulClient(self.stub, "http://127.0.0.1:8500/", self.clock,
                                   token=token, timeout=timeout)

    def result(self, d):
        """
        The result of a Deferred that has fired, or a failure's exception.
        """
        self.stub.flush()
        results = []
        d.addBoth(results.append)
        assert results, "the request has not finished"
        value = results[0]
        return value.value if isinstance(value, Failure) else value


@pytest.fixture
def h():
    """
    A fresh :class:`Harness`.
    """
    return Harness()


def test_fake_agent_interface():
    """
    The unreachable agent double is a real ``IAgent``.
    """
    assert verifyObject(IAgent, UnreachableAgent())


def test_token_sent():
    """
    A configured ACL token goes with every request as ``X-Consul-Token``.
    """
    h = Harness(token="s3cr3t")
    h.result(h.client.agent_self())
    h.result(h.client.register({"ID": "x", "Name": "shop--prod--web"}))
    assert [r.headers.get("x-consul-token") for r in h.fake.requests] == ["s3cr3t", "s3cr3t"]


def test_no_token(h):
    """
    Without a token, no ``X-Consul-Token`` header is sent at all (an empty
    one would be an anonymous token of its own).
    """
    h.result(h.client.agent_self())
    assert "x-consul-token" not in h.fake.requests[0].headers


def test_decoded_answer(h):
    """
    A GET answers with the decoded JSON and ``X-Consul-Index``; health and
    catalog reads are stale (any server answers, no leader needed).
    """
    h.fake.set(WEB, [{"Node": {}}], index=42)
    response = h.result(h.client.health_service("ams", "shop--prod--web"))
    assert response == Response(body=[{"Node": {}}], index=42)
    assert h.fake.requests[-1].args == {"dc": "ams", "stale": ""}


def test_endpoints(h):
    """
    The named endpoints ask the right paths and shape their answers.
    """
    h.fake.set("catalog/datacenters", ["lon", "ams"])
    h.fake.set("agent/services", {"x": {"ID": "x"}})
    assert h.result(h.client.agent_self()) == AgentSelf(datacenter="ams", node="node1")
    assert h.result(h.client.datacenters()) == ["ams", "lon"]
    assert h.result(h.client.agent_services('Meta["glimpse-provider"] == "p"')) == {
        "x": {"ID": "x"}}
    assert h.fake.requests[-1].args == {"filter": 'Meta["glimpse-provider"] == "p"'}


def test_an_unchanged_agent_services_answer_is_not_decoded_again(h):
    """
    The reconcile round asks for the agent's services every few seconds:
    an answer byte for byte the same as the last is not decoded again (the
    same services object comes back; decoding thousands would stall the
    DNS), while a changed one is, and filters are kept apart.
    """
    h.fake.set("agent/services", {"x": {"ID": "x"}})
    first = h.result(h.client.agent_services("f"))
    again = h.result(h.client.agent_services("f"))
    assert again is first
    other = h.result(h.client.agent_services("g"))
    assert other == first and other is not first
    h.fake.set("agent/services", {"x": {"ID": "x"}, "y": {"ID": "y"}})
    assert h.result(h.client.agent_services("f")) == {"x": {"ID": "x"}, "y": {"ID": "y"}}


def test_service_name_quoted(h):
    """
    A service name is one path segment, whatever characters it holds.
    """
    h.fake.set("health/service/a%2Fb", [])
    assert h.result(h.client.health_service("ams", "a/b")).body == []


def test_register_and_deregister(h):
    """
    Registering PUTs the definition as JSON and replaces the service's
    checks; deregistering PUTs to the service's ID.
    """
    h.fake.set("agent/service/register", None)
    h.fake.set("agent/service/deregister/p%3Ax", None)
    definition = {"ID": "p:x", "Name": "shop--prod--web", "Port": 80}
    assert h.result(h.client.register(definition)).body is None
    h.result(h.client.deregister("p:x"))
    register, deregister = h.fake.requests
    assert (register.method, register.args, register.json()) == (
        "PUT", {"replace-existing-checks": "true"}, definition)
    assert register.headers["content-type"] == "application/json"
    assert (deregister.method, deregister.path) == ("PUT", "agent/service/deregister/p%3Ax")


@pytest.mark.parametrize(("status", "error"), [
    (403, ConsulDenied),
    (404, ConsulNotFound),
    (500, ConsulError),
    (429, ConsulBusy),
])
def test_status_mapping(h, status, error):
    """
    Consul's error statuses become the matching :class:`ConsulError`, carrying
    the status, the endpoint and Consul's own message.
    """
    h.fake.fail(status, "Permission denied: token lacks service:write")
    failure = h.result(h.client.catalog_services("ams"))
    assert type(failure) is error
    assert (failure.status, failure.endpoint, failure.message) == (
        status, "catalog/services", "Permission denied: token lacks service:write")
    assert str(failure) == (
        f"Consul catalog/services (HTTP {status}): "
        "Permission denied: token lacks service:write")


def test_unknown_path_not_found(h):
    """
    A path Consul does not know is a :class:`ConsulNotFound`.
    """
    assert isinstance(h.result(h.client.node_services("nowhere")), ConsulNotFound)


def test_not_json(h):
    """
    A success that is not JSON is a :class:`ConsulError`, not a crash.
    """

    class Garbage(FakeConsul):
        def render(self, request):
            return b"<html>proxy</html>"

    stub = StubTreq(Garbage())
    client = ConsulClient(stub, "http://consul", Clock())
    results = []
    client.datacenters().addErrback(results.append)
    stub.flush()
    error = results[0].value
    assert type(error) is ConsulError
    assert (error.endpoint, error.message, error.status) == (
        "catalog/datacenters", "the answer was not JSON", 200)


def test_redirect_not_followed_and_token_not_sent_along():
    """
    Consul never redirects: a redirect (a proxy, a wrong --consul) is an
    error saying so, and nothing is asked where it points, so the ACL
    token does not go to another host.
    """
    asked = []

    class Redirecting(FakeConsul):
        def render(self, request):
            asked.append((request.getHeader("host"), request.getHeader("x-consul-token")))
            request.setResponseCode(302)
            request.setHeader("location", "http://elsewhere.example/v1/catalog/datacenters")
            return b""

    stub = StubTreq(Redirecting())
    client = ConsulClient(stub, "http://consul", Clock(), token="s3cr3t")
    results = []
    client.datacenters().addErrback(results.append)
    stub.flush()
    error = results[0].value
    assert type(error) is ConsulError and error.status == 302
    assert "http://elsewhere.example/v1/catalog/datacenters" in error.message
    assert "not follow" in error.message
    assert asked == [("consul", "s3cr3t")]


def test_connection_refused():
    """
    When the agent cannot be reached the request fails with
    :class:`ConsulUnavailable`, saying why.
    """
    agent = UnreachableAgent()
    client = ConsulClient(HTTPClient(agent), "http://127.0.0.1:1", Clock())
    results = []
    client.agent_self().addErrback(results.append)
    error = results[0].value
    assert type(error) is ConsulUnavailable
    assert error.status is None
    assert "fake Consul is down" in error.message
    assert agent.attempts == 1


def test_timeout():
    """
    A request that gets no answer within the timeout fails with
    :class:`ConsulUnavailable` saying it timed out, and the connection is closed.
    """
    h = Harness(timeout=3.0)
    h.fake.stall()
    results = []
    h.client.agent_self().addErrback(results.append)
    h.stub.flush()
    h.clock.advance(2.9)
    assert results == []
    h.clock.advance(0.1)
    assert type(results[0].value) is ConsulUnavailable
    assert results[0].value.message == "timed out"
    h.stub.flush()
    assert h.fake.held == 0


def test_a_cancelled_request_is_not_an_error_but_a_timeout_is(h):
    """
    A blocking query its watch cancels (the watch went to another job) is
    not counted among Consul's errors; one that outlives its timeout is.
    """
    h.fake.set(WEB, [], index=7)
    results = []
    d = h.client.health_service("ams", "shop--prod--web", index=7, wait=30)
    d.addErrback(results.append)
    h.stub.flush()
    d.cancel()
    assert isinstance(results[0].value, ConsulUnavailable)
    assert h.client.errors == {}
    h.client.health_service("ams", "shop--prod--web", index=7, wait=30).addErrback(
        results.append)
    h.stub.flush()
    h.clock.advance(30 + 2 + 10)
    assert results[1].value.message == "timed out"
    assert h.client.errors == {"health/service": 1}


def test_blocking_query(h):
    """
    A blocking query sends the index and wait, is held until the data
    changes, then answers with the new index.
    """
    h.fake.set(WEB, [], index=7)
    results = []
    h.client.health_service("ams", "shop--prod--web", index=7, wait=30).addBoth(results.append)
    h.stub.flush()
    assert results == []
    assert h.fake.requests[-1].args == {"dc": "ams", "index": "7", "wait": "30s", "stale": ""}
    h.fake.set(WEB, [{"Node": {}}], index=9)
    h.stub.flush()
    assert results == [Response(body=[{"Node": {}}], index=9)]


def test_blocking_index_never_zero(h):
    """
    An index of 0 is sent as 1: Consul does not block on 0, so the loop
    would spin.
    """
    h.client.catalog_services("ams", index=0, wait=10)
    assert h.fake.requests[-1].args["index"] == "1"


def test_blocking_timeout_allows_wait(h):
    """
    A blocking query may take its whole wait plus Consul's jitter (wait/16)
    before the client's own timeout counts; only then does it give up.
    """
    h.fake.set(WEB, [], index=7)
    results = []
    d = h.client.health_service("ams", "shop--prod--web", index=7, wait=32)
    d.addBoth(results.append)
    h.stub.flush()
    h.clock.advance(32 + 2 + 10 - 0.01)
    assert results == []
    h.clock.advance(0.01)
    assert isinstance(results[0].value, ConsulUnavailable)


def test_request_counting(h):
    """
    Requests are counted by endpoint, however many services they name.
    """
    h.fake.set("health/service/a--b--c", [])
    h.fake.set("health/service/a--b--d", [])
    h.result(h.client.health_service("ams", "a--b--c"))
    h.result(h.client.health_service("ams", "a--b--d"))
    h.result(h.client.catalog_services("ams"))
    h.fake.fail(500)
    h.result(h.client.catalog_services("ams"))
    assert h.client.requests == {"health/service": 2, "catalog/services": 2}
    assert h.fake.count("health/service/") == 2


def test_blocking_query_ending_with_the_same_index_is_not_decoded(h):
    """
    A blocking query whose wait ran out (same index as sent) comes back
    marked unchanged without its body being decoded, so a quiet job costs
    the reactor nothing when its watch wakes.
    """
    h.fake.set(WEB, [{"big": "answer"}], index=7)
    d = h.client.health_service("ams", "shop--prod--web", index=7, wait=30)
    h.fake.release()
    result = h.result(d)
    assert result == Response(body=None, index=7, unchanged=True)


def test_agent_self_without_its_fields_is_a_consul_error(h):
    """
    An ``agent/self`` answer without the datacenter or the node name is a
    :class:`ConsulError` naming what is missing, not a crash.
    """
    h.fake.set("agent/self", {"Config": {"Datacenter": "ams"}})
    error = h.result(h.client.agent_self())
    assert type(error) is ConsulError and error.endpoint == "agent/self"
    assert "NodeName" in error.message


def test_node_services(h):
    """
    A node's services come from the catalog, filtered, as a list (Consul
    wraps them in ``Services``), blocking when given an index; a node the
    catalog does not know is a :class:`ConsulNotFound`.
    """
    h.fake.set("catalog/node-services/node1", {"Node": {}, "Services": [{"ID": "x"}]}, index=5)
    response = h.result(h.client.node_services("node1", 'Meta["glimpse-provider"] == "p"'))
    assert (response.body, response.index) == ([{"ID": "x"}], 5)
    assert h.fake.requests[-1].args == {"filter": 'Meta["glimpse-provider"] == "p"', "stale": ""}
    d = h.client.node_services("node1", index=5, wait=10)
    h.fake.set("catalog/node-services/node1", {"Node": {}, "Services": None}, index=6)
    assert h.result(d) == Response(body=[], index=6)
    assert h.fake.requests[-1].args == {"index": "5", "wait": "10s", "stale": ""}
    assert type(h.result(h.client.node_services("other"))) is ConsulNotFound
    assert h.client.requests["catalog/node-services"] == 3


def test_set_check(h):
    """
    Setting a TTL check PUTs its status word and note to the check's ID;
    another status word is refused before anything is sent.
    """
    h.fake.set("agent/check/warn/p%3Ax%3Acheck0", None)
    h.result(h.client.set_check("p:x:check0", "warn", "slow"))
    request = h.fake.requests[-1]
    assert (request.method, request.path, request.args) == (
        "PUT", "agent/check/warn/p%3Ax%3Acheck0", {"note": "slow"})
    with pytest.raises(ValueError, match="pass, warn, fail"):
        h.client.set_check("p:x:check0", "passing")
    assert len(h.fake.requests) == 1


class _AgentHandler(http.server.BaseHTTPRequestHandler):
    """
    A Consul agent that answers ``PUT /v1/agent/reload`` with the server's
    ``status`` and ``body``, recording what it was sent.
    """

    def do_PUT(self):
        self.server.seen.append((self.path, self.headers.get("X-Consul-Token")))
        self.send_response(self.server.status)
        self.end_headers()
        self.wfile.write(self.server.body)

    def log_message(self, *args):
        pass


@pytest.fixture
def agent():
    """
    A :class:`_AgentHandler` server on a free loopback port, in a thread.
    """
    server = http.server.HTTPServer(("127.0.0.1", 0), _AgentHandler)
    server.seen, server.status, server.body = [], 200, b""
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()
    thread.join()


def test_reload_agent(agent):
    """
    The file path's blocking reload PUTs ``/v1/agent/reload`` with the
    token; a refusal is a :class:`ConsulError` with Consul's status and
    message, an agent that cannot be reached a :class:`ConsulUnavailable`.
    """
    url = f"http://127.0.0.1:{agent.server_port}/"
    reload_agent(url, token="s3cr3t")
    assert agent.seen == [("/v1/agent/reload", "s3cr3t")]
    agent.status, agent.body = 500, b"Failed reloading services: bad config\n"
    with pytest.raises(ConsulError) as e:
        reload_agent(url)
    assert (e.value.status, e.value.endpoint, e.value.message) == (
        500, "agent/reload", "Failed reloading services: bad config")
    assert agent.seen[-1] == ("/v1/agent/reload", None)
    with socket.socket() as unused:
        unused.bind(("127.0.0.1", 0))
        port = unused.getsockname()[1]
    with pytest.raises(ConsulUnavailable) as e:
        reload_agent(f"http://127.0.0.1:{port}", timeout=5)
    assert "refused" in e.value.message.lower()
