"""
The provider API against a real Consul agent and a real ``twistd glimpse``:
acknowledged only once the catalog shows the state, nothing flaps on a
re-PUT, dry runs, concurrent PUTs, TTL pass-through, drain, and the
provider token.
"""

import threading
import urllib.parse

import pytest
from twisted.names import dns

from glimpse.dev.twistd import start_glimpse
from glimpse.providers.state import registrations, validate_state

from support import a_addresses, ask, wait_until

ZONE = "glimpse.test"
TOKEN = "7d4c1f0e-provider-token"


@pytest.fixture(scope="module")
def glimpse(consul, tmp_path_factory):
    """
    One Glimpse on the module's agent, without a provider token.
    """
    g = start_glimpse(consul.url, ZONE, workdir=str(tmp_path_factory.mktemp("glimpse")))
    yield g
    g.stop()


def instance(job, name, ip, ports, **extra):
    """
    An instance of shop/prod/<job>.
    """
    return {"product": "shop", "env": "prod", "job": job, "instance": name,
            "address": ip, "ports": ports, **extra}


def catalog(consul, provider):
    """
    ``{service id: glimpse-hash}`` of the provider's registrations in the
    catalog (not the local agent).
    """
    node = consul.get_json("agent/self")["Config"]["NodeName"]
    query = urllib.parse.quote(f'Meta["glimpse-provider"] == "{provider}"')
    services = consul.get_json(f"catalog/node-services/{node}?filter={query}")["Services"]
    return {s["ID"]: s["Meta"]["glimpse-hash"] for s in services}


def expected(provider, state):
    """
    ``{service id: glimpse-hash}`` a state maps to.
    """
    return {sid: r["Meta"]["glimpse-hash"]
            for sid, r in registrations(provider, validate_state(state)).items()}


def test_200_means_the_catalog_has_it(glimpse, consul):
    """
    When a PUT answers 200 the catalog already holds exactly the new
    registrations: a provider can move on without polling Consul.
    """
    ports = {"http": 8080, "admin": 9080}
    state = {"instances": [instance("web", f"web-{i}", f"127.0.2.{i}", ports)
                           for i in range(1, 6)]}
    status, body = glimpse.put("/v1/providers/ack", state)
    assert status == 200, body
    assert catalog(consul, "ack") == expected("ack", state)
    state["instances"] = state["instances"][:2]
    assert glimpse.put("/v1/providers/ack", state)[0] == 200
    assert catalog(consul, "ack") == expected("ack", state)


def health_snapshot(consul, service):
    """
    Every registration's and check's status and ModifyIndex of a service.
    """
    return sorted(
        (entry["Service"]["ID"], entry["Service"]["ModifyIndex"],
         tuple((c["CheckID"], c["Status"], c["ModifyIndex"]) for c in entry["Checks"]))
        for entry in consul.get_json(f"health/service/{service}"))


def test_same_state_again_changes_nothing_in_consul(glimpse, consul):
    """
    Re-PUTting the same state registers and deregisters nothing: every
    registration's and check's ModifyIndex and status stay as they were, so
    nothing flaps.
    """
    state = {"instances": [instance("steady", "s-1", "127.0.3.1", {"http": 80, "admin": 81},
                                    checks=[{"ttl": "1h", "name": "alive"},
                                            {"tcp": "127.0.0.1:9", "interval": "30s"}])]}
    assert glimpse.put("/v1/providers/steady", state)[0] == 200
    glimpse.put("/v1/providers/steady/instances/s-1/checks/alive/pass", None)
    before = health_snapshot(consul, "shop--prod--steady")
    status, body = glimpse.put("/v1/providers/steady", state)
    assert status == 200 and body["added"] == body["changed"] == body["removed"] == []
    assert len(body["unchanged"]) == 2
    assert health_snapshot(consul, "shop--prod--steady") == before


def test_dry_run_reports_the_diff_and_changes_nothing(glimpse, consul):
    """
    ``?dry_run=true`` says what would be added, changed and removed, and
    Consul and the stored state stay as they were.
    """
    old = {"instances": [instance("dry", "d-1", "127.0.4.1", {"http": 80}),
                         instance("dry", "d-2", "127.0.4.2", {"http": 80})]}
    assert glimpse.put("/v1/providers/dry", old)[0] == 200
    new = {"instances": [instance("dry", "d-1", "127.0.4.1", {"http": 81}),
                         instance("dry", "d-3", "127.0.4.3", {"http": 80})]}
    status, body = glimpse.put("/v1/providers/dry?dry_run=true", new)
    assert status == 200 and body["dry_run"] is True
    assert body["added"] == ["dry:shop--prod--dry:d-3:http"]
    assert body["changed"] == ["dry:shop--prod--dry:d-1:http"]
    assert body["removed"] == ["dry:shop--prod--dry:d-2:http"]
    assert catalog(consul, "dry") == expected("dry", old)
    assert glimpse.get("/v1/providers/dry") == (200, validate_state(old))


def test_concurrent_puts_are_applied_one_after_another(glimpse, consul):
    """
    Several PUTs for one provider sent at once are applied one at a time:
    each answer's diff starts from exactly the state another one left, and
    Consul ends with the state of the last one applied.
    """
    states = {n: {"instances": [instance("race", f"r-{n}", "127.0.5.1", {"http": 80})]}
              for n in range(5)}
    answers = {}

    def put(n):
        answers[n] = glimpse.put("/v1/providers/race", states[n])

    threads = [threading.Thread(target=put, args=(n,)) for n in states]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert all(status == 200 for status, _ in answers.values()), answers
    # Follow the chain: whoever removed nothing came first; each next one
    # removed exactly what the previous one added.
    previous = {}
    order = []
    for _ in states:
        n = next(n for n, (_, body) in answers.items()
                 if n not in order and sorted(body["removed"]) == sorted(previous))
        order.append(n)
        previous = answers[n][1]["added"]
    assert catalog(consul, "race") == expected("race", states[order[-1]])


def test_ttl_pass_through_and_drain(glimpse, consul):
    """
    A TTL check is passed through Glimpse by instance and check name, once
    (the port carrying it; the other port's alias check follows in Consul):
    the instance enters DNS.  A draining instance stays registered and
    visible over HTTP, but DNS leaves it out.
    """
    ttl = [{"ttl": "10m", "name": "alive"}]
    state = {"instances": [
        instance("ttl", "t-1", "127.0.6.1", {"http": 80, "admin": 81}, checks=ttl),
        instance("ttl", "t-2", "127.0.6.2", {"http": 80, "admin": 81}, checks=ttl, drain=True)]}
    assert glimpse.put("/v1/providers/ttl", state)[0] == 200
    name = f"http.ttl.prod.shop.ams.{ZONE}"
    for inst in ("t-1.ttl.prod.shop", "t-2"):
        status, body = glimpse.put(f"/v1/providers/ttl/instances/{inst}/checks/alive/pass",
                                   {"note": "deployed"})
        assert status == 200 and len(body["checks"]) == 1

    def all_passing():
        checks = consul.get_json("agent/checks")
        statuses = {c["Status"] for cid, c in checks.items() if cid.startswith("ttl:")}
        return statuses == {"passing"} and checks
    checks = wait_until(all_passing, what="every port's check passing in Consul")
    assert checks["ttl:shop--prod--ttl:t-1:admin:check0"]["Output"] == "deployed"
    assert checks["ttl:shop--prod--ttl:t-1:http:alias:admin"]["Type"] == "alias"
    wait_until(lambda: a_addresses(ask(glimpse.dns, name, dns.A)) == {"127.0.6.1"},
               what="t-1 in DNS, t-2 (draining) left out")

    def shown():
        status, body = glimpse.get("/v1/lookup/http.ttl.prod.shop.ams")
        return status == 200 and {i["instance"]: i["drain"] for i in body["instances"]}
    assert wait_until(shown, what="both instances over HTTP") == {"t-1": False, "t-2": True}
    status, body = glimpse.put("/v1/providers/ttl/instances/t-1/checks/alive/fail", None)
    assert status == 200
    wait_until(lambda: not a_addresses(ask(glimpse.dns, name, dns.A)), what="t-1 out of DNS")
    status, body = glimpse.put("/v1/providers/ttl/instances/t-9/checks/alive/pass", None)
    assert status == 404 and "t-9" in body["detail"]


def test_provider_token(consul, tmp_path):
    """
    With --provider-token-file, writes and reads of provider state without
    the token (or with a wrong one) get a 401 JSON error and change
    nothing; with ``Authorization: Bearer <token>`` they work.
    """
    token_file = tmp_path / "token"
    token_file.write_text(TOKEN + "\n")
    g = start_glimpse(consul.url, ZONE, extra_args=[f"--provider-token-file={token_file}"],
                      workdir=str(tmp_path))
    try:
        state = {"instances": [instance("tok", "k-1", "127.0.7.1", {"http": 80})]}
        for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": TOKEN}):
            status, body = g.put("/v1/providers/tok", state, headers=headers)
            assert status == 401 and "Bearer" in body["detail"], body
            assert g.get("/v1/providers/tok", headers=headers)[0] == 401
        assert catalog(consul, "tok") == {}
        good = {"Authorization": f"Bearer {TOKEN}"}
        assert g.put("/v1/providers/tok", state, headers=good)[0] == 200
        assert g.get("/v1/providers/tok", headers=good) == (200, validate_state(state))
        assert g.delete("/v1/providers/tok", headers=good)[0] == 200
        assert catalog(consul, "tok") == {}
    finally:
        g.stop()
