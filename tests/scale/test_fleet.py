"""
Fleet scale (#13) on a production-shaped Consul: 3 servers and a client
agent with Consul's default limits (``http_max_conns_per_client = 200``),
5,000 jobs (10,000 instances) in its catalog, and one Glimpse on the
client agent, as a busy host runs it.
"""

import pytest
from twisted.names import dns

from glimpse.dev.catalog import flip_checks, synthetic_topology, write_catalog
from glimpse.dev.observe import ConnectionSampler, metric
from glimpse.dev.twistd import start_glimpse

from scale_support import ZONE, expected_targets, lookup, lookup_all
from support import wait_until

pytestmark = pytest.mark.consul

JOBS, INSTANCES = 5000, 10000
#: Glimpse's default --consul-max-conns.
MAX_CONNS = 64


@pytest.fixture(scope="module")
def fleet(consul_cluster):
    """
    5,000 jobs of 2 instances each, on 159 catalog nodes, written through a
    server; ``(topology, {job: instances})``.
    """
    topology = synthetic_topology(JOBS, INSTANCES)
    write_catalog(consul_cluster.servers[0].url, topology)
    return topology, topology.of_job()


def started(consul_cluster, workdir):
    """
    A Glimpse on the zone's client agent, with its defaults, once it knows
    every job of the catalog.
    """
    glimpse = start_glimpse(consul_cluster.client.url, ZONE, workdir=str(workdir))
    wait_until(lambda: glimpse.get("/v1/zones/ams")[1].get("jobs") == JOBS, timeout=30,
               what="the catalog of 5,000 jobs")
    return glimpse


@pytest.fixture(scope="module")
def glimpse(consul_cluster, fleet, tmp_path_factory):
    """
    One Glimpse for the module (its view keeps every job looked up).
    """
    g = started(consul_cluster, tmp_path_factory.mktemp("glimpse"))
    yield g
    g.stop()


def metrics_of(glimpse):
    status, text = glimpse.get("/metrics")
    assert status == 200
    return text


def test_5000_jobs_each_looked_up_once_are_all_answered_within_the_budget(
        consul_cluster, fleet, glimpse):
    """
    Each of 5,000 jobs looked up once over DNS, a hundred at a time: every
    answer is NOERROR with the job's targets (a first lookup waits for the
    job's first read, never SERVFAIL); meanwhile Glimpse never holds more
    than --consul-max-conns connections to the client agent, and no
    Consul request fails (the agent never answered 429).
    """
    topology, by_job = fleet
    names = {job: by_job[job][0].dns_name("ams", ZONE) for job in topology.jobs}
    with ConnectionSampler(glimpse.process.pid, consul_cluster.client.ports.http) as conns:
        answers = lookup_all(glimpse.dns, list(names.values()))
    wrong = [(job, answers[name]) for job, name in names.items()
             if answers[name] != (dns.OK, expected_targets(by_job[job]))]
    assert not wrong, f"{len(wrong)} of {JOBS} wrong, e.g. {wrong[:3]}"
    assert 0 < conns.most <= MAX_CONNS, conns.most
    text = metrics_of(glimpse)
    assert metric(text, "glimpse_consul_connections_max") == MAX_CONNS
    assert metric(text, "glimpse_consul_errors_total") == 0
    assert metric(text, "glimpse_jobs", mode="blocking") + metric(
        text, "glimpse_jobs", mode="polled") == JOBS
    assert metric(text, "glimpse_dns_responses_total", rcode="SERVFAIL") == 0


def test_changes_to_a_hundred_jobs_in_use_show_in_dns_and_http(consul_cluster, fleet, glimpse):
    """
    With 5,000 jobs in use, a check of one instance flips to critical in
    100 jobs (blocking and polled alike): every one of them drops that
    instance from DNS and shows it unhealthy over HTTP, then has it back
    once the check passes again.
    """
    topology, by_job = fleet
    sample = topology.jobs[::JOBS // 100]
    flipped = [by_job[job][0] for job in sample]
    for job in sample:  # in use, if the test before did not run
        assert lookup(glimpse.dns, by_job[job][0].dns_name("ams", ZONE))[0] == dns.OK

    def dns_shows(healthy):
        return all(lookup(glimpse.dns, i.dns_name("ams", ZONE))
                   == (dns.OK, expected_targets(by_job[i.job][1 - healthy:]))
                   for i in flipped)

    def http_shows(healthy):
        for i in flipped:
            status, body = glimpse.get(f"/v1/lookup/http.{i.job}.prod.shop.ams")
            states = {x["ip"]: x["healthy"] for x in body["instances"]}
            if status != 200 or states.get(i.ip) is not healthy:
                return False
        return True

    server = consul_cluster.servers[0].url
    flip_checks(server, flipped, "critical")
    wait_until(lambda: dns_shows(False), timeout=30, what="100 flips in DNS")
    wait_until(lambda: http_shows(False), timeout=30, what="100 flips over HTTP")
    flip_checks(server, flipped, "passing")
    wait_until(lambda: dns_shows(True), timeout=30, what="100 recoveries in DNS")
    wait_until(lambda: http_shows(True), timeout=30, what="100 recoveries over HTTP")


def test_the_topology_of_5000_jobs_answers_without_a_connection_per_job(
        consul_cluster, fleet, tmp_path):
    """
    A Glimpse that has not looked any job up answers /v1/topology/ams (it
    must read all 5,000 jobs) with a 200 counting every instance, and holds
    no more than --consul-max-conns connections to the agent meanwhile.
    """
    fresh = started(consul_cluster, tmp_path)
    try:
        with ConnectionSampler(fresh.process.pid, consul_cluster.client.ports.http) as conns:
            status, body = fresh.get("/v1/topology/ams", timeout=30)
        assert status == 200, body
        assert body["counts"]["instances"] == INSTANCES
        assert body["counts"]["passing"] == INSTANCES
        assert "unavailable" not in body
        assert conns.most <= MAX_CONNS, conns.most
        assert metric(metrics_of(fresh), "glimpse_consul_errors_total") == 0
    finally:
        fresh.stop()
