"""
One job that cannot be fetched never affects another job, the zone's
catalog, /v1/topology, /v1/status or providers (#13), on a 3-server zone
and its client agent: a proxy in front of the agent answers 500 to every
read of one job (:class:`scale_support.FaultProxy`), everything else is
Consul's own answer.
"""

import time

import pytest
from twisted.names import dns

from glimpse.dev.catalog import flip_checks, synthetic_topology, write_catalog
from glimpse.dev.observe import metric
from glimpse.dev.twistd import start_glimpse

from scale_support import ZONE, FaultProxy, expected_targets, lookup, lookup_all, zone_summary
from support import wait_until

pytestmark = pytest.mark.consul

BROKEN = "shop--prod--j00"


@pytest.fixture(scope="module")
def fleet(consul_cluster):
    """
    60 jobs of 2 instances; job ``j00``'s reads will fail.
    """
    topology = synthetic_topology(60, 120)
    write_catalog(consul_cluster.servers[0].url, topology)
    return topology, topology.of_job()


def test_a_job_that_cannot_be_fetched_affects_nothing_else(consul_cluster, fleet, tmp_path):
    """
    Every read of job j00 fails with a 500.  Its lookups fail fast
    (SERVFAIL, never a hang) and its reads back off; every other job
    answers right, blocking and polled, and its changes show; the zone
    keeps serving, /v1/status says 200, /v1/topology counts the other jobs
    and names j00 unavailable, a new job in the catalog is found, and a
    provider's PUT is acknowledged.
    """
    topology, by_job = fleet
    client = consul_cluster.client
    with FaultProxy("127.0.0.1", client.ports.http, poisoned=[BROKEN]) as proxy:
        glimpse = start_glimpse(proxy.url, ZONE, ["--max-stale=3", "--consul-max-conns=16"],
                                workdir=str(tmp_path))
        try:
            wait_until(lambda: glimpse.get("/v1/zones/ams")[1].get("jobs") == 60, timeout=30,
                       what="the catalog")
            names = {job: by_job[job][0].dns_name("ams", ZONE) for job in topology.jobs}
            answers = lookup_all(glimpse.dns, list(names.values()), threads=20)
            assert answers.pop(names["j00"])[0] == dns.ESERVER
            for job, name in names.items():
                if job != "j00":
                    assert answers[name] == (dns.OK, expected_targets(by_job[job])), job

            # Past --max-stale, the others still answer, and still change.
            time.sleep(3.5)
            summary = zone_summary(glimpse)
            assert summary["serving"] and BROKEN in summary["failing_jobs"]
            assert list(summary["failing_jobs"]) == [BROKEN]
            # 8 of the 16 connections go to job watches: j01-j07 block, the rest are polled.
            for job in ("j01", "j59"):
                victim = by_job[job][0]
                flip_checks(consul_cluster.servers[0].url, [victim], "critical")
                wait_until(lambda job=job: lookup(glimpse.dns, names[job])
                           == (dns.OK, expected_targets(by_job[job][1:])), timeout=15,
                           what=f"{job}'s change")
            assert glimpse.get("/v1/status")[0] == 200
            status, body = glimpse.get("/v1/topology/ams", timeout=15)
            assert status == 200, body
            assert body["unavailable"] == ["ams/shop/prod/j00"]
            assert body["counts"]["instances"] == 118 and body["counts"]["critical"] == 2

            # The catalog still moves: a new job is found.
            extra = synthetic_topology(1, 1, prefix="new")
            write_catalog(consul_cluster.servers[0].url, extra)
            new = extra.instances[0]
            wait_until(lambda: lookup(glimpse.dns, new.dns_name("ams", ZONE))
                       == (dns.OK, expected_targets([new])), timeout=15, what="the new job")

            # Providers write and are acknowledged.
            state = {"instances": [{"product": "prov", "env": "prod", "job": "web",
                                    "instance": "w1", "address": "10.9.9.9",
                                    "ports": {"http": 80}}]}
            assert glimpse.put("/v1/providers/p1", state, timeout=30)[0] == 200
            wait_until(lambda: lookup(glimpse.dns, f"http.web.prod.prov.ams.{ZONE}", dns.A)
                       == (dns.OK, {"10.9.9.9"}), timeout=15, what="the provider's instance")

            # j00's reads back off: a few a second at first, then fewer.
            before = proxy.hits[BROKEN]
            time.sleep(5)
            assert proxy.hits[BROKEN] - before <= 10, proxy.hits[BROKEN] - before
            assert metric(glimpse.get("/metrics")[1], "glimpse_zone_serving", zone="ams") == 1
        finally:
            glimpse.stop()

