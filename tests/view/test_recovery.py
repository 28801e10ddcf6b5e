"""
A zone's servers going away and coming back, as one Glimpse's watches see
it (over the fake Consul and a Clock): the watches that failed together
restart spread over seconds when the zone is back, never all at once, and
never in a loop while it is away.
"""

import random

import pytest
from test_topology import Harness, entry

JOBS = [f"shop--prod--job{n}" for n in range(40)]


@pytest.mark.parametrize("outage", [10.0, 60.0])
def test_a_recovered_zone_s_watches_restart_spread_over_seconds(outage):
    """
    40 blocking job watches and the catalog watch all fail at the same
    instant (every blocking query is answered 500 when the servers go);
    while the zone is away they ask at most a few times a second in all;
    once it is back, no 100 ms holds more than a tenth of the restarts
    (each is two requests), and they spread over more than two seconds.
    """
    h = Harness(blocking_slots=len(JOBS), rand=random.Random(7))
    h.fake.set("catalog/services", {name: ["http"] for name in JOBS})
    for name in JOBS:
        h.fake.set(f"health/service/{name}", [entry(1)])
    h.advance(1)
    for name in JOBS:
        h.topology.instances("ams", name)
    h.advance(1)
    assert h.topology.jobs.blocking_count() == len(JOBS)
    h.fake.fail(500, "rpc error: No known Consul servers")
    before = len(h.fake.requests)
    h.advance(outage, step=0.1)
    during = len(h.fake.requests) - before
    h.fake.recover()
    buckets = []
    for _ in range(150):
        before = len(h.fake.requests)
        h.advance(0.1, step=0.1)
        buckets.append(len(h.fake.requests) - before)
    watches = len(JOBS) + 1
    # Each watch restarts with a full read, then its blocking query.
    assert sum(buckets) >= watches
    assert max(buckets) <= watches / 5, buckets
    busy = [n for n, count in enumerate(buckets) if count]
    assert busy[-1] - busy[0] >= 25, buckets
    # While away: each watch's retries back off (a few per watch, never a loop).
    assert during <= watches * (outage / 2 + 6), during
    h.topology.stop()
