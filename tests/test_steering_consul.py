"""
Answers that steer traffic, end to end on a real Consul dev agent through
real ``twistd glimpse`` processes: SRV weights a provider sets (and
Consul's own DNS agreeing), warning instances with --serve-warning, canary
subsets by meta over HTTP, streams and the CLI, and panic mode.
"""

import io
import urllib.request

import pytest
from prometheus_client.parser import text_string_to_metric_families
from twisted.names import dns

from glimpse.cli import main
from glimpse.dev.twistd import start_glimpse

from http_helpers import EventReader
from support import ask, wait_until

ZONE = "glimpse.test"


@pytest.fixture(scope="module")
def glimpse(consul, tmp_path_factory):
    """
    A Glimpse with the default rules: passing instances only, no panic.
    """
    g = start_glimpse(consul.url, ZONE, workdir=str(tmp_path_factory.mktemp("plain")))
    yield g
    g.stop()


@pytest.fixture(scope="module")
def steered(consul, tmp_path_factory):
    """
    A Glimpse on the same Consul that serves warning instances and panics
    below half, holding panic for a second.
    """
    g = start_glimpse(consul.url, ZONE, extra_args=[
        "--serve-warning", "--panic-threshold=0.5", "--panic-hold=1"],
        workdir=str(tmp_path_factory.mktemp("steered")))
    yield g
    g.stop()


def instance(job, name, ip, port, **extra):
    return {"product": "shop", "env": "prod", "job": job, "instance": name, "address": ip,
            "ports": {"http": port}, **extra}


def put(glimpse, provider, *instances):
    status, body = glimpse.put(f"/v1/providers/{provider}", {"instances": list(instances)})
    assert status == 200, body


def check(glimpse, provider, name, verb):
    status, body = glimpse.put(f"/v1/providers/{provider}/instances/{name}/checks/alive/{verb}",
                               {"note": verb})
    assert status == 200, body


def srv_weights(server, name):
    """
    ``{port: (priority, weight)}`` of an SRV answer.
    """
    return {r.payload.port: (r.payload.priority, r.payload.weight)
            for r in ask(server, name).answers if r.type == dns.SRV}


def cli(*argv):
    out, err = io.StringIO(), io.StringIO()
    return main(list(argv), out, err), out.getvalue(), err.getvalue()


def test_weights_are_served_by_glimpse_and_by_consuls_own_dns(consul, glimpse, steered):
    """
    A provider's weights reach Consul as Weights: Glimpse's SRV records and
    Consul's own DNS carry the same weight per instance.  An instance whose
    check warns leaves Glimpse's DNS by default; with --serve-warning it is
    served with its warning weight, the weight Consul's DNS gives it too.
    HTTP lookups show the weights.
    """
    alive = [{"name": "alive", "ttl": "10m"}]
    put(glimpse, "weights",
        instance("weighted", "w-1", "127.0.30.1", 8081, checks=alive,
                 weight={"passing": 10, "warning": 3}),
        instance("weighted", "w-2", "127.0.30.2", 8082, checks=alive))
    for name in ("w-1", "w-2"):
        check(glimpse, "weights", name, "pass")
    ours = f"http.weighted.prod.shop.ams.{ZONE}"
    consuls = "http.shop--prod--weighted.service.ams.consul"
    both = {8081: (1, 10), 8082: (1, 1)}
    wait_until(lambda: srv_weights(glimpse.dns, ours) == both, what="Glimpse's weights")
    assert srv_weights(consul.dns, consuls) == both
    _status, body = glimpse.get("/v1/lookup/http.weighted.prod.shop.ams")
    shown = {i["instance"]: (i["weight"], i["weights"]) for i in body["instances"]}
    assert shown["w-1"] == (10, {"passing": 10, "warning": 3})

    check(glimpse, "weights", "w-1", "warn")
    wait_until(lambda: srv_weights(glimpse.dns, ours) == {8082: (1, 1)},
               what="the warning instance to leave Glimpse's DNS")
    wait_until(lambda: srv_weights(steered.dns, ours) == {8081: (1, 3), 8082: (1, 1)},
               what="--serve-warning to serve it with its warning weight")
    assert srv_weights(consul.dns, consuls) == {8081: (1, 3), 8082: (1, 1)}
    _, body = steered.get("/v1/explain/http.weighted.prod.shop.ams")
    rows = {r["instance"]: r for r in body["instances"]}
    assert (rows["w-1"]["in_dns"], rows["w-1"]["weight"]) == (True, 3)
    assert "--serve-warning" in rows["w-1"]["rule"]
    _, body = glimpse.get("/v1/explain/http.weighted.prod.shop.ams")
    assert "served only with --serve-warning" in {
        r["instance"]: r for r in body["instances"]}["w-1"]["rule"]


def test_a_bad_weight_is_refused_and_changes_nothing(glimpse):
    """
    A weight out of range rejects the whole state with its JSON path; the
    previous state stays.
    """
    put(glimpse, "badweight", instance("bw", "bw-1", "127.0.31.1", 8080))
    status, body = glimpse.put("/v1/providers/badweight", {"instances": [
        instance("bw", "bw-1", "127.0.31.1", 8080, weight={"passing": 0}),
        instance("bw", "bw-2", "127.0.31.2", 8080)]})
    assert status == 400
    assert body["detail"] == [{"path": "$.instances[0].weight.passing",
                               "problem": "0 is not a weight: an integer from 1 to 65535"}]
    assert [i["instance"] for i in glimpse.get("/v1/providers/badweight")[1]["instances"]] == [
        "bw-1"]


def test_a_canary_subset_by_meta(glimpse):
    """
    ?meta.version=2 answers the instances whose meta says so, over HTTP,
    a stream (an instance whose meta stops matching is removed) and the
    CLI; a bad filter is a 400 saying what to write.
    """
    def fleet(third):
        put(glimpse, "canary",
            instance("canary", "c-1", "127.0.32.1", 8080, meta={"version": "1"}),
            instance("canary", "c-2", "127.0.32.2", 8080, meta={"version": "2"}),
            instance("canary", "c-3", "127.0.32.3", 8080, meta={"version": third}))

    fleet("2")
    path = "/v1/lookup/http.canary.prod.shop.ams"
    wait_until(lambda: len(glimpse.get(path)[1].get("instances", ())) == 3, what="the fleet")
    status, body = glimpse.get(path + "?meta.version=2")
    assert status == 200 and {i["instance"] for i in body["instances"]} == {"c-2", "c-3"}
    status, body = glimpse.get(path + "?meta.glimpse-drain=true")
    assert status == 400 and "not starting with 'glimpse-'" in body["detail"]
    stream = EventReader(f"{glimpse.url}/v1/watch/http.canary.prod.shop.ams?meta.version=2")
    try:
        wait_until(lambda: stream.events, what="the snapshot")
        kind, _, snapshot = stream.events[0]
        assert kind == "snapshot" and len(snapshot["instances"]) == 2
        fleet("3")
        removed = wait_until(lambda: [d["id"] for k, _, d in stream.events if k == "remove"],
                             what="c-3 to be removed from the subset")
        assert removed == ["canary:shop--prod--canary:c-3:http"]
    finally:
        stream.close()
    code, out, _ = cli("--agent", glimpse.url, "lookup", "http.canary.prod.shop.ams",
                       "--meta", "version=2")
    assert code == 0 and "c-2" in out and "c-1" not in out and "c-3" not in out
    assert cli("--agent", glimpse.url, "lookup", "http.canary.prod.shop.ams",
               "--meta", "version=9")[0] == 1
    assert cli("--agent", glimpse.url, "lookup", "http.canary.prod.shop.ams",
               "--meta", "version")[0] == 2


def panic_answers(glimpse):
    with urllib.request.urlopen(glimpse.url + "/metrics", timeout=10) as r:
        text = r.read().decode()
    return sum(s.value for family in text_string_to_metric_families(text)
               for s in family.samples if s.name == "glimpse_dns_panic_answers_total")


def test_panic_answers_every_instance_until_enough_are_back(steered):
    """
    When fewer than half of a job's instances are healthy, DNS answers
    every one of them, the healthy ones at SRV priority 1 and the rest at
    2; HTTP says "panic": true and /metrics counts the answers given in
    panic.  Once enough are healthy again (and the hold is over) only the
    healthy ones are answered.
    """
    alive = [{"name": "alive", "ttl": "10m"}]
    put(steered, "panic", *(instance("pan", f"p-{n}", f"127.0.33.{n}", 8080 + n, checks=alive)
                            for n in range(1, 5)))
    for n in range(1, 5):
        check(steered, "panic", f"p-{n}", "pass")
    name = f"http.pan.prod.shop.ams.{ZONE}"
    every = {8081: (1, 1), 8082: (1, 1), 8083: (1, 1), 8084: (1, 1)}
    wait_until(lambda: srv_weights(steered.dns, name) == every, what="four healthy")
    assert steered.get("/v1/lookup/http.pan.prod.shop.ams")[1]["panic"] is False
    before = panic_answers(steered)

    for n in (2, 3, 4):
        check(steered, "panic", f"p-{n}", "fail")
    in_panic = {8081: (1, 1), 8082: (2, 1), 8083: (2, 1), 8084: (2, 1)}
    wait_until(lambda: srv_weights(steered.dns, name) == in_panic, what="panic answers")
    r = ask(steered.dns, name, dns.A)
    # Every instance (in a rotating order: panic spreads the load over all).
    assert sorted(a.payload.dottedQuad() for a in r.answers) == [
        "127.0.33.1", "127.0.33.2", "127.0.33.3", "127.0.33.4"]
    _, body = steered.get("/v1/lookup/http.pan.prod.shop.ams")
    assert body["panic"] is True
    _, body = steered.get("/v1/explain/http.pan.prod.shop.ams")
    rows = {r["instance"]: r for r in body["instances"]}
    assert rows["p-2"]["priority"] == 2 and "in panic: 1 of 4" in rows["p-2"]["rule"]
    assert panic_answers(steered) > before

    for n in (2, 3, 4):
        check(steered, "panic", f"p-{n}", "pass")
    wait_until(lambda: srv_weights(steered.dns, name) == every, what="panic to end")
    wait_until(lambda: steered.get("/v1/lookup/http.pan.prod.shop.ams")[1]["panic"] is False,
               what="HTTP to say the panic is over")
    for n in (3, 4):
        check(steered, "panic", f"p-{n}", "fail")
    wait_until(lambda: srv_weights(steered.dns, name) == {8081: (1, 1), 8082: (1, 1)},
               what="half healthy: no panic, the healthy two")
