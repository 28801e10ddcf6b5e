"""
Server failures, availability first (#13): a 3-server zone loses its
leader, then its quorum, then every server, under steady DNS and HTTP load
on a Glimpse that talks to the zone's client agent (Consul's defaults).
"""

import threading
import time

import pytest
from twisted.names import dns

from glimpse.dev.catalog import flip_checks, synthetic_topology, write_catalog
from glimpse.dev.observe import metric
from glimpse.dev.twistd import start_glimpse

from scale_support import ZONE, SteadyLoad, lookup, zone_summary
from support import wait_until

pytestmark = pytest.mark.consul

MAX_STALE = 3.0
PROVIDER = {"instances": [{"product": "prov", "env": "prod", "job": "web", "instance": "w1",
                           "address": "10.9.9.9", "ports": {"http": 80}}]}


@pytest.fixture(scope="module")
def fleet(consul_cluster):
    """
    40 jobs of 2 instances; ``(topology, {job: {ip, ...}})``.
    """
    topology = synthetic_topology(40, 80)
    write_catalog(consul_cluster.servers[0].url, topology)
    return topology, {job: {i.ip for i in found} for job, found in topology.of_job().items()}


@pytest.fixture
def glimpse(ready_cluster, fleet, tmp_path):
    """
    A Glimpse on the client agent with a short --max-stale, and the zone
    list (and each zone's leader) asked every second; every job looked up
    once.  8 of its 16 connections go to job watches: some jobs block,
    the others are polled.
    """
    g = start_glimpse(ready_cluster.client.url, ZONE,
                      [f"--max-stale={MAX_STALE}", "--zones-interval=1",
                       "--consul-max-conns=16"], workdir=str(tmp_path))
    _, expected = fleet
    wait_until(lambda: all(lookup(g.dns, f"http.{job}.prod.shop.ams.{ZONE}", dns.A)
                           == (dns.OK, ips) for job, ips in expected.items()),
               timeout=30, what="every job's answer")
    yield g
    g.stop()


def test_leader_killed_under_load(ready_cluster, fleet, glimpse):
    """
    The leader is SIGKILLed under steady DNS and HTTP load: no SERVFAIL,
    no timeout, no wrong answer during the election; a provider PUT made
    during the election answers 200 once a leader is back, and its change
    is in DNS within 5 s of the new leader.
    """
    _, expected = fleet
    put = {}
    with SteadyLoad(glimpse, expected) as load:
        time.sleep(1.0)
        load.phase = "election"
        leader = ready_cluster.wait_for_leader()
        leader.kill()
        thread = threading.Thread(target=lambda: put.update(
            answer=glimpse.put("/v1/providers/p1", PROVIDER, timeout=30)))
        thread.start()
        ready_cluster.wait_for_leader()
        elected = time.monotonic()
        wait_until(lambda: lookup(glimpse.dns, f"http.web.prod.prov.ams.{ZONE}", dns.A)
                   == (dns.OK, {"10.9.9.9"}), timeout=max(0.1, elected + 5 - time.monotonic()),
                   what="the PUT's change in DNS within 5 s of the new leader")
        thread.join()
        time.sleep(1.0)
    assert put["answer"][0] == 200, put["answer"]
    assert load.bad == []
    assert load.of("election").get("ok", 0) > 50 and load.of("election").get("http-ok", 0) > 20


def test_quorum_lost_then_every_server(ready_cluster, fleet, glimpse):
    """
    2 of 3 servers killed for longer than --max-stale: while the last one
    answers stale reads, every lookup is answered right from the last
    known state, and /v1/zones and /metrics say the zone has no leader and
    how long since a server heard from one.  Quorum back: a fresh change
    shows within 5 s, without a restart.  Every server killed: SERVFAIL
    and 503 only once --max-stale has passed; servers back: answers again.
    """
    topology, expected = fleet
    changed = topology.instances[0]
    steady = {job: ips for job, ips in expected.items() if job != changed.job}
    with SteadyLoad(glimpse, steady) as load:
        load.phase = "quorum lost"
        ready_cluster.lose_quorum()
        time.sleep(MAX_STALE + 2)

        def leaderless():
            leader = zone_summary(glimpse)["leader"]
            return leader["known"] is False and leader["last_contact_seconds"] > 1
        wait_until(leaderless, timeout=10, what="/v1/zones to say there is no leader")
        summary = zone_summary(glimpse)
        assert summary["serving"] and summary["reachable"]
        text = glimpse.get("/metrics")[1]
        assert metric(text, "glimpse_consul_known_leader", zone="ams") == 0
        assert metric(text, "glimpse_consul_last_contact_seconds", zone="ams") > 1
        assert glimpse.get("/v1/status")[0] == 200

        load.phase = "quorum back"
        ready_cluster.up()
        flip_checks(ready_cluster.leader().url, [changed], "critical")
        flipped = time.monotonic()
        wait_until(lambda: lookup(glimpse.dns, f"http.{changed.job}.prod.shop.ams.{ZONE}",
                                  dns.A)[1] == expected[changed.job] - {changed.ip},
                   timeout=5, what="a fresh change within 5 s of the quorum's return")
        flip_checks(ready_cluster.leader().url, [changed], "passing")
        wait_until(lambda: lookup(glimpse.dns, f"http.{changed.job}.prod.shop.ams.{ZONE}",
                                  dns.A)[1] == expected[changed.job], timeout=15,
                   what="the change undone")
        assert time.monotonic() > flipped

    assert [bad for bad in load.bad if bad[0] == "quorum lost"] == []
    assert load.of("quorum lost").get("ok", 0) > 50
    assert [bad for bad in load.bad if bad[0] == "quorum back"] == []

    down = time.monotonic()
    for server in ready_cluster.servers:
        server.kill()
    name = f"http.{topology.jobs[1]}.prod.shop.ams.{ZONE}"
    wait_until(lambda: lookup(glimpse.dns, name, dns.A)[0] == dns.ESERVER, timeout=30,
               what="SERVFAIL once no server answers")
    assert time.monotonic() - down > MAX_STALE
    wait_until(lambda: glimpse.get("/v1/status")[0] == 503, timeout=10, what="status 503")
    ready_cluster.up()
    wait_until(lambda: lookup(glimpse.dns, name, dns.A)[0] == dns.OK, timeout=30,
               what="answers once the servers are back")
    wait_until(lambda: glimpse.get("/v1/status")[0] == 200, what="status 200 again")
