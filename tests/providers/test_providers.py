"""
Unit tests for :obj:`glimpse.providers.applier` and :obj:`glimpse.http.providers`: the
order of applies, acknowledgement by the catalog, rollback, recovery after
a crash, TTL pass-through and the provider API's access rules.  Consul is
a small in-memory double here (a real agent cannot be made to stall or lose
its catalog on cue); tests/providers/test_providers_consul.py does the same against a
real agent.
"""

import io
import json
import os

import pytest
from twisted.internet.address import IPv4Address, UNIXAddress
from twisted.internet.defer import Deferred, fail, succeed
from twisted.internet.task import Clock
from twisted.python.usage import UsageError
from twisted.web.test.requesthelper import DummyRequest

from glimpse.consul import AgentSelf, ConsulError, ConsulUnavailable, Response
from glimpse.http.providers import ProvidersResource
from glimpse.providers.applier import Applier, NotAcknowledged, ReconcileService
from glimpse.providers.state import NoSuchCheck, registrations, validate_state
from glimpse.providers.store import ProviderStore
from glimpse.tap import Options

from support import result_of


def state(*names, ttl=False):
    """
    A state with one shop/prod/web instance per name, two named ports each.
    """
    checks = [{"ttl": "30s", "name": "alive"}, {"tcp": "10.0.0.1:80", "interval": "5s"}]
    return {"instances": [
        {"product": "shop", "env": "prod", "job": "web", "instance": n,
         "ports": {"http": 80, "admin": 81}, **({"checks": checks} if ttl else {})}
        for n in names]}


class ScriptedConsul:
    """
    Just enough of :class:`glimpse.consul.ConsulClient` for the Applier: an agent
    whose registrations reach the catalog when ``sync`` is true, and whose
    writes can be held (``hold``) to see what waits for what.
    """

    def __init__(self):
        self.agent = {}
        self.catalog = {}
        self.sync = True
        self.down = False
        self.held = []
        self.hold = False
        self.calls = []
        self.blocking_unchanged = False

    def _write(self, call, effect):
        self.calls.append(call)
        if self.down:
            raise ConsulUnavailable(call[0], "connection refused")
        if self.hold:
            d = Deferred()
            self.held.append((d, effect))
            return d
        effect()
        return succeed(None)

    def release(self):
        """
        Answer every held write, oldest first.
        """
        held, self.held = self.held, []
        for d, effect in held:
            effect()
            d.callback(None)

    def _effect(self, change):
        def apply():
            change()
            if self.sync:
                self.catalog = dict(self.agent)
        return apply

    def register(self, definition):
        return self._write(("register", definition["ID"]), self._effect(
            lambda: self.agent.__setitem__(definition["ID"], definition)))

    def deregister(self, sid):
        return self._write(("deregister", sid), self._effect(lambda: self.agent.pop(sid, None)))

    def agent_services(self, filter_expr=None):
        if self.down:
            raise ConsulUnavailable("agent/services", "connection refused")
        provider = filter_expr.split('"')[-2] if "==" in filter_expr else None
        return succeed({sid: s for sid, s in self.agent.items()
                        if provider is None or s["Meta"]["glimpse-provider"] == provider})

    def agent_self(self):
        return succeed(AgentSelf(datacenter="dc1", node="n1"))

    def node_services(self, node, filter_expr=None, index=None, wait=None):
        provider = filter_expr.split('"')[-2]
        services = [s for s in self.catalog.values() if s["Meta"]["glimpse-provider"] == provider]
        if index is not None and wait:
            self.clock.advance(wait)
            if self.blocking_unchanged:
                # The wait ran out with nothing new, as Consul's client says it.
                return succeed(Response(None, index=index, unchanged=True))
        return succeed(Response(services, index=1))

    def set_check(self, check_id, status, note=None):
        return self._write(("set_check", check_id, status, note), lambda: None)


@pytest.fixture
def consul():
    return ScriptedConsul()


@pytest.fixture
def applier(consul, tmp_path):
    clock = Clock()
    consul.clock = clock
    return Applier(consul, ProviderStore(str(tmp_path)), clock, ack_timeout=5)


def test_same_provider_applies_in_arrival_order(applier, consul):
    """
    Three PUTs for one provider arriving together are applied one after
    another, in the order they came: the last one wins, and each saw the
    one before it.
    """
    consul.hold = True
    results = [applier.apply("deploy", state(n)) for n in ("a", "b", "c")]
    assert [c[0] for c in consul.calls] == ["register", "register"]
    for _ in range(3):
        consul.release()
    _first, second, third = (result_of(d) for d in results)
    assert second.removed == ["deploy:shop--prod--web:a:admin", "deploy:shop--prod--web:a:http"]
    assert third.removed == ["deploy:shop--prod--web:b:admin", "deploy:shop--prod--web:b:http"]
    assert sorted(consul.catalog) == ["deploy:shop--prod--web:c:admin",
                                      "deploy:shop--prod--web:c:http"]
    assert applier.state("deploy") == validate_state(state("c"))


def test_different_providers_do_not_wait_for_each_other(applier, consul):
    """
    While one provider's apply is stuck in Consul, another provider's apply
    goes ahead and is acknowledged.
    """
    consul.hold = True
    stuck = applier.apply("deploy", state("a"))
    consul.hold = False
    other = applier.apply("orchestrator", state("b"))
    assert result_of(other).added == ["orchestrator:shop--prod--web:b:admin",
                                      "orchestrator:shop--prod--web:b:http"]
    consul.release()
    assert result_of(stuck).added


def test_no_catalog_acknowledgement_is_a_timeout_and_rolls_back(applier, consul, tmp_path):
    """
    When the catalog never shows the new state, the apply fails with
    NotAcknowledged after the deadline, the previous acknowledged state is
    put back, and it stays the provider's state.
    """
    result_of(applier.apply("deploy", state("a")))
    consul.sync = False
    with pytest.raises(NotAcknowledged) as e:
        result_of(applier.apply("deploy", state("b")))
    assert "within 5s" in str(e.value)
    assert sorted(consul.agent) == ["deploy:shop--prod--web:a:admin",
                                    "deploy:shop--prod--web:a:http"]
    assert applier.state("deploy") == validate_state(state("a"))
    assert ProviderStore(str(tmp_path)).pending() == []


def test_an_unchanged_catalog_answer_is_not_an_empty_catalog(applier, consul):
    """
    A blocking catalog query that ends with nothing new (its wait ran out)
    does not count as an empty catalog: removing a provider's state that
    the catalog still shows is not acknowledged, and the state stays.
    """
    result_of(applier.apply("deploy", state("a")))
    consul.sync = False
    consul.blocking_unchanged = True
    with pytest.raises(NotAcknowledged):
        result_of(applier.remove("deploy"))
    assert applier.state("deploy") == validate_state(state("a"))


def test_dry_run_changes_nothing(applier, consul):
    """
    A dry run reports what would change and writes nothing.
    """
    result = result_of(applier.apply("deploy", state("a"), dry_run=True))
    assert result.added == ["deploy:shop--prod--web:a:admin", "deploy:shop--prod--web:a:http"]
    assert consul.calls == [] and applier.state("deploy") is None


def test_same_state_again_writes_nothing(applier, consul):
    """
    Re-applying the acknowledged state sends no register or deregister.
    """
    result_of(applier.apply("deploy", state("a")))
    consul.calls.clear()
    result = result_of(applier.apply("deploy", state("a")))
    assert consul.calls == [] and result.unchanged and not result.added


def test_crash_mid_apply_is_rolled_back_on_start(consul, tmp_path):
    """
    A Glimpse that died after registering part of a new state leaves a
    pending marker; the next one, at start, puts exactly the acknowledged
    state back.
    """
    store = ProviderStore(str(tmp_path))
    clock = Clock()
    consul.clock = clock
    first = Applier(consul, store, clock)
    result_of(first.apply("deploy", state("a")))
    consul.hold = True
    first.apply("deploy", state("b", "c"))
    consul.held[0][1]()  # One registration reaches Consul, then the crash.
    assert store.pending() == ["deploy"]
    consul.hold, consul.held = False, []
    service = ReconcileService(Applier(consul, store, clock), clock)
    service.startService()
    assert sorted(consul.agent) == sorted(registrations("deploy", validate_state(state("a"))))
    assert store.pending() == []
    service.stopService()


def test_reconcile_after_agent_restart_restores_acknowledged(applier, consul):
    """
    When the agent comes back from a restart without the provider's
    registrations (or with stale ones), the periodic round restores the
    acknowledged state, and a failing round does not stop the next.
    """
    result_of(applier.apply("deploy", state("a")))
    service = ReconcileService(applier, consul.clock, interval=5)
    service.startService()
    consul.down = True
    consul.clock.advance(5)
    consul.down = False
    consul.agent.clear()
    consul.clock.advance(5)
    assert sorted(consul.agent) == sorted(registrations("deploy", validate_state(state("a"))))
    service.stopService()


def test_a_restarted_glimpse_rewrites_an_older_layout(consul, tmp_path):
    """
    Started over an acknowledged state whose registrations an older Glimpse
    wrote (every check copied onto every port), Glimpse's first
    reconciliation rewrites the ports that now alias the first one, and
    leaves the first port's registration, and so its checks, alone.
    """
    store = ProviderStore(str(tmp_path))
    clock = Clock()
    consul.clock = clock
    result_of(Applier(consul, store, clock).apply("deploy", state("a", ttl=True)))
    carrier = consul.agent["deploy:shop--prod--web:a:admin"]
    sid = "deploy:shop--prod--web:a:http"
    consul.agent[sid] = dict(consul.agent[sid], Checks=[
        dict(c, CheckID=c["CheckID"].replace(":admin:", ":http:")) for c in carrier["Checks"]],
        Meta=dict(consul.agent[sid]["Meta"], **{"glimpse-hash": "6a52634ac0431c7c"}))
    consul.calls.clear()
    service = ReconcileService(Applier(consul, store, clock), clock)
    service.startService()
    assert consul.calls == [("register", sid)]
    assert consul.agent == registrations("deploy", validate_state(state("a", ttl=True)))
    service.stopService()


def test_ttl_pass_through_sets_the_one_check(applier, consul):
    """
    Passing a TTL check by instance and check name updates the one check
    that runs, on the port carrying the instance's checks (the other ports
    mirror it); naming a non-TTL check or an unknown one says what is
    wrong.
    """
    result_of(applier.apply("deploy", state("a", ttl=True)))
    consul.calls.clear()
    ids = result_of(applier.pass_check("deploy", "a.web.prod.shop", "alive", "pass", "ok"))
    assert ids == ["deploy:shop--prod--web:a:admin:check0"]
    assert [c[1:3] for c in consul.calls] == [(i, "pass") for i in ids]
    assert result_of(applier.pass_check("deploy", "a", "check0", "fail")) == ids
    for args, status in [(("a", "check1"), 409), (("a", "nope"), 404), (("zz", "alive"), 404)]:
        with pytest.raises(NoSuchCheck) as e:
            result_of(applier.pass_check("deploy", *args, "pass"))
        assert e.value.status == status


LOOPBACK = IPv4Address("TCP", "127.0.0.1", 5555)


def request(method, path, client=LOOPBACK, token=None, body=b""):
    """
    A DummyRequest for the providers resource, from ``client``.
    """
    req = DummyRequest(path.encode().split(b"/"))
    req.method = method.encode()
    req.client = client
    req._disconnected = False  # Read by glimpse.http._json.finish, as on a real Request.
    if token is not None:
        req.requestHeaders.addRawHeader(b"authorization", b"Bearer " + token.encode())
    req.content = io.BytesIO(body)
    return req


def render(resource, req):
    """
    Walk ``req`` to its resource and render it: ``(status, JSON body)``.
    """
    child = resource
    while req.postpath and not getattr(child, "isLeaf", False):
        segment = req.postpath.pop(0)
        req.prepath.append(segment)
        child = child.getChildWithDefault(segment, req)
    out = child.render(req)
    if isinstance(out, bytes):
        req.write(out)
    return req.responseCode or 200, json.loads(b"".join(req.written))


@pytest.mark.parametrize(("client", "allowed"), [
    (IPv4Address("TCP", "127.0.0.1", 1), True),
    (IPv4Address("TCP", "10.1.2.3", 1), False),
    (UNIXAddress(b"/run/glimpse.sock"), True),
])
def test_without_token_only_loopback_clients(applier, client, allowed):
    """
    Without --provider-token-file the provider API answers loopback (and
    UNIX socket) clients only; others get a 403 that says what to do.
    """
    status, body = render(ProvidersResource(applier), request("GET", "deploy", client))
    if allowed:
        assert status == 404  # No state yet, but served.
    else:
        assert status == 403 and "--provider-token-file" in body["detail"]


def test_token_required_for_reads_and_writes(applier):
    """
    With a token, a request without it or with a wrong one gets a 401 JSON
    error (with a WWW-Authenticate header); the right one is served, from
    any address.
    """
    resource = ProvidersResource(applier, token="s3cret")
    far = IPv4Address("TCP", "10.1.2.3", 1)
    for token in (None, "wrong", "s3cret-and-more"):
        req = request("GET", "deploy", far, token)
        status, body = render(resource, req)
        assert status == 401 and "Authorization: Bearer" in body["detail"]
        assert req.responseHeaders.getRawHeaders(b"www-authenticate")
    req = request("PUT", "deploy", far, "s3cret", body=json.dumps(state("a")).encode())
    assert render(resource, req)[0] == 200
    assert render(resource, request("GET", "deploy", far, "s3cret"))[0] == 200


def test_check_route_errors_are_json(applier):
    """
    A bad status word or an unknown check gets a JSON error naming the fix.
    """
    resource = ProvidersResource(applier)
    status, body = render(resource, request("PUT", "deploy/instances/a/checks/alive/ok"))
    assert status == 404 and "/pass" in body["detail"]
    status, body = render(resource, request("PUT", "deploy/instances/a/checks/alive/pass"))
    assert status == 404 and "has no state" in body["detail"]


def test_store_keeps_states_and_pending_markers_apart(tmp_path):
    """
    The store lists acknowledged states and pending markers separately,
    survives a new store on the same directory, and leaves no temporary
    files behind.
    """
    store = ProviderStore(str(tmp_path))
    store.save("deploy", validate_state(state("a")))
    store.mark_pending("deploy", validate_state(state("b")))
    store.mark_pending("other", validate_state(state("c")))
    again = ProviderStore(str(tmp_path))
    assert again.providers() == ["deploy"] and again.pending() == ["deploy", "other"]
    assert again.load("deploy") == validate_state(state("a"))
    again.clear_pending("deploy")
    again.clear_pending("other")
    again.delete("deploy")
    assert os.listdir(tmp_path) == []


def test_no_providers_no_requests(applier, consul):
    """
    With no provider state on disk, the periodic reconciliation sends
    nothing to Consul.
    """
    consul.down = True  # Any request would fail.
    assert result_of(applier.reconcile_all()) == []


def test_empty_provider_token_file_is_a_usage_error(tmp_path):
    """
    An empty --provider-token-file is refused with what to put in it,
    rather than quietly leaving the provider API without a token.
    """
    token = tmp_path / "token"
    token.write_text("\n")
    with pytest.raises(UsageError) as e:
        Options().parseOptions([f"--state-dir={tmp_path}", f"--provider-token-file={token}"])
    assert "is empty" in str(e.value)
    token.write_text("s3cret\n")
    options = Options()
    options.parseOptions([f"--state-dir={tmp_path}", f"--provider-token-file={token}"])
    assert options["provider-token-file"] == str(token)


def test_a_large_state_keeps_few_agent_connections(consul, tmp_path):
    """
    A state of 100 instances is written with at most ``max_writes`` agent
    requests in flight at once (Consul answers 429 past its per-client
    connection limit), and still all of it is applied.
    """
    clock = Clock()
    consul.clock = clock
    applier = Applier(consul, ProviderStore(str(tmp_path)), clock, ack_timeout=5, max_writes=4)
    consul.hold = True
    d = applier.apply("deploy", state(*(f"i{n}" for n in range(100))))
    in_flight = []
    while consul.held:
        in_flight.append(len(consul.held))
        answered, effect = consul.held.pop(0)
        effect()
        answered.callback(None)
    assert max(in_flight) == 4
    assert len(result_of(d).added) == 200


class ElectionConsul(ScriptedConsul):
    """
    A :class:`ScriptedConsul` through a leader election: the first
    ``failing_reads`` catalog reads fail with a 500 (the agent asked the
    server just killed), and while ``sync`` is false the agent's sync
    fails; it is tried again only at the agent's next write, as Consul's
    anti-entropy does.
    """

    def __init__(self):
        super().__init__()
        self.failing_reads = 0

    def node_services(self, node, filter_expr=None, index=None, wait=None):
        if self.failing_reads:
            self.failing_reads -= 1
            return fail(ConsulError("catalog/node-services", "rpc error getting client: "
                                    "connection refused", 500))
        return super().node_services(node, filter_expr, index, wait)


def test_a_put_during_a_leader_election_is_acknowledged_once_a_leader_is_back(tmp_path):
    """
    A PUT made while the servers elect a leader (catalog reads fail with a
    500, the agent's sync fails) answers 200 once a leader is back: the
    failed reads are asked again, and the agent's sync is poked by writing
    a registration again, unchanged.
    """
    consul, clock = ElectionConsul(), Clock()
    consul.clock = clock
    applier = Applier(consul, ProviderStore(str(tmp_path)), clock, ack_timeout=10)
    consul.sync = False
    consul.failing_reads = 3
    results = []
    applier.apply("deploy", state("a")).addBoth(results.append)
    clock.callLater(3.0, setattr, consul, "sync", True)  # a new leader
    for _ in range(40):
        if results:
            break
        clock.advance(0.25)
    assert results and not hasattr(results[0], "value"), results
    assert sorted(consul.catalog) == ["deploy:shop--prod--web:a:admin",
                                      "deploy:shop--prod--web:a:http"]
    pokes = [c for c in consul.calls if c[0] == "register"]
    assert len(pokes) > 2  # the two registrations, then at least one poke
    assert applier.state("deploy") == validate_state(state("a"))


def test_consul_failures_answer_with_retry_after(applier, consul):
    """
    A PUT that Consul did not take answers 503 (or 504 for no
    acknowledgement) with ``Retry-After``, never a bare 500.
    """
    consul.down = True
    req = request("PUT", "deploy", body=json.dumps(state("a")).encode())
    status, body = render(ProvidersResource(applier), req)
    assert status == 503 and "connection refused" in body["detail"]
    assert req.responseHeaders.getRawHeaders(b"retry-after") == [b"5"]
