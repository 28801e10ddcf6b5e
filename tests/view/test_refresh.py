"""
Any number of jobs within a bounded Consul budget
(:mod:`glimpse.view.refresh`, :mod:`glimpse.view.jobs`):
the jobs used most hold the blocking watches, every other job in use is
read again at a bounded rate, and a failing job or a busy agent is backed
off, never retried in a loop.  Over the fake Consul and a Clock.
"""

import itertools
import random

from test_topology import Harness, entry
from twisted.internet.defer import Deferred, fail, succeed
from twisted.internet.task import Clock

from glimpse.consul import ConsulBusy, ConsulUnavailable, Response
from glimpse.view.refresh import Refresher

JOBS = [f"shop--prod--job{n}" for n in range(6)]


def harness(slots):
    """
    A started topology with six jobs and ``slots`` blocking watches.
    """
    h = Harness(blocking_slots=slots, refresh={"min_period": 1.0, "max_rate": 100.0})
    h.fake.set("catalog/services", {name: ["http"] for name in JOBS})
    for name in JOBS:
        h.fake.set(f"health/service/{name}", [entry(1)])
    h.advance(1)
    return h


def test_jobs_past_the_blocking_slots_are_answered_and_kept_fresh_by_cached_reads():
    """
    With two blocking slots and six jobs in use, two jobs get blocking
    watches and four are read with cached reads; every lookup is answered
    (no SERVFAIL while a job's first read is under way), and a change to a
    polled job shows within a period.
    """
    h = harness(slots=2)
    results = {}
    for name in JOBS:
        h.topology.instances("ams", name).addBoth(lambda r, n=name: results.setdefault(n, r))
    h.advance(0.5)
    assert sorted(results) == sorted(JOBS)
    assert all(isinstance(r, tuple) and len(r) == 1 for r in results.values())
    assert h.topology.watch_count() == 1 + 2 and len(h.topology.jobs.refresher) == 4
    polled = sorted(name for name in JOBS if ("ams", name) in h.topology.jobs.refresher)
    asked = [r for r in h.fake.requests if r.path == f"health/service/{polled[0]}"]
    assert asked and all("cached" in r.args and "index" not in r.args for r in asked)
    h.changes.clear()
    h.fake.set(f"health/service/{polled[0]}", [entry(1), entry(2)])
    h.advance(1.5)
    assert ("ams", polled[0]) in h.changes
    assert h.lookup(polled[0]) == [f"prov:shop--prod--web:web-{n}:http" for n in (1, 2)]


def test_the_jobs_used_most_take_the_blocking_watches():
    """
    A polled job looked up much more than a watched one takes its blocking
    watch at the next rebalance; jobs used about as much stay where they are.
    """
    h = harness(slots=2)
    for name in JOBS:
        h.lookup(name)
    h.advance(0.5)
    watched = {j.name for z in h.topology.zones.values() for j in z.jobs.values()
               if j.watch is not None}
    hot = next(name for name in JOBS if name not in watched)
    for _ in range(10):
        h.lookup(hot)
    h.advance(2.0)
    now_watched = {j.name for z in h.topology.zones.values() for j in z.jobs.values()
                   if j.watch is not None}
    assert hot in now_watched and len(now_watched) == 2
    h.advance(10)
    assert {j.name for z in h.topology.zones.values() for j in z.jobs.values()
            if j.watch is not None} == now_watched


def refresher(read, **options):
    clock, answers, errors = Clock(), [], []
    r = Refresher(clock, read, lambda key, resp: answers.append(key),
                  lambda key, err: errors.append((key, err)),
                  rand=random.Random(0), **options)
    r.start()
    return r, clock, answers, errors


def test_reads_stay_within_the_rate_and_the_period_stretches():
    """
    200 jobs at 50 reads a second: each is read every 4 s, not every
    second, and no more than 50 reads happen in any second.
    """
    reads = []

    def read(zone, name, index):
        reads.append(clock.seconds())
        return succeed(Response(body=[], index=1))

    r, clock, _, _ = refresher(read, min_period=1.0, max_rate=50.0)
    for n in range(200):
        r.add(("ams", f"j{n}"), now=False)
    assert r.period == 4.0
    for _ in range(200):
        clock.advance(0.05)
    per_second = [sum(1 for t in reads if s <= t < s + 1) for s in range(10)]
    assert max(per_second) <= 50 + 1  # and the one round saved up
    assert 180 <= len(reads) <= 520


def test_a_failing_job_backs_off():
    """
    A job whose reads fail is read less and less often, never in a loop.
    """
    reads = []

    def read(zone, name, index):
        reads.append((clock.seconds(), name))
        if name == "bad":
            return fail(ConsulUnavailable("health/service", "no path to datacenter"))
        if name == "busy" and len(reads) < 5:
            return fail(ConsulBusy("health/service", "too many connections", 429))
        return succeed(Response(body=[], index=1))

    r, clock, _answers, errors = refresher(read, min_period=1.0, max_rate=100.0,
                                          backoff=(0.5, 8.0))
    r.add(("ams", "bad"))
    for _ in range(600):
        clock.advance(0.1)
    bad = [t for t, name in reads if name == "bad"]
    gaps = [b - a for a, b in itertools.pairwise(bad)]
    assert len(bad) < 15 and gaps[-1] > gaps[0] * 4
    assert all(isinstance(e, ConsulUnavailable) for _, e in errors)


def test_a_busy_agent_pauses_every_read():
    """
    A 429 (the agent has too many connections from this host) pauses every
    job's reads, not only the one that got it.
    """
    reads = []

    def read(zone, name, index):
        reads.append((clock.seconds(), name))
        if name == "busy" and len(reads) < 3:
            return fail(ConsulBusy("health/service", "too many connections", 429))
        return succeed(Response(body=[], index=1))

    r, clock, _, _ = refresher(read, min_period=1.0, max_rate=100.0, backoff=(0.5, 8.0))
    r.add(("ams", "other"))
    clock.advance(0.01)
    clock.advance(0.49)
    r.add(("ams", "busy"))
    clock.advance(0.01)
    for _ in range(30):
        clock.advance(0.1)
    other = [t for t, name in reads if name == "other"]
    # "other" was due again a second after its first read, inside the pause:
    # it waited for the pause to end, then went on.
    assert not [t for t in other if 0.5 < t < 1.5]
    assert [t for t in other if t >= 1.5]


def test_a_polled_job_that_changes_takes_a_blocking_watch_at_once():
    """
    A deploy rolling through a polled job: its first change shows within a
    poll period, and the job takes a blocking watch at once (the watched job
    used least gives its up), so its next changes show without waiting for
    a read; the number of blocking watches stays within the slots.
    """
    h = harness(slots=2)
    for name in JOBS:
        h.lookup(name)
    h.advance(0.5)
    polled = sorted(name for name in JOBS if ("ams", name) in h.topology.jobs.refresher)
    rolling = polled[0]
    h.advance(0.55)  # just past a rebalance: the next is 2 s away
    h.fake.set(f"health/service/{rolling}", [entry(1), entry(2)])
    h.advance(1.2)
    job = h.topology.zones["ams"].jobs[rolling]
    assert ("ams", rolling) in h.changes
    assert job.watch is not None and ("ams", rolling) not in h.topology.jobs.refresher
    assert h.topology.jobs.blocking_count() == 2
    h.changes.clear()
    h.fake.set(f"health/service/{rolling}", [entry(1), entry(2), entry(3)])
    h.advance(0.25)
    assert ("ams", rolling) in h.changes


def test_first_reads_go_ahead_and_do_not_wait_for_the_rate():
    """
    1,000 jobs looked up for the first time at once, at 100 reads a second:
    every first read starts at once (a lookup waits for it), ahead of reads
    already due; the polls that follow wait until the rate has paid it back.
    """
    reads = []

    def read(zone, name, index):
        reads.append((clock.seconds(), name))
        return succeed(Response(body=[], index=1))

    r, clock, _, _ = refresher(read, min_period=1.0, max_rate=100.0)
    r.add(("ams", "old"), now=False)
    clock.advance(5)
    reads.clear()
    for n in range(100):
        r.add(("ams", f"new{n}"))
    clock.advance(0)
    assert {name for _, name in reads} == {f"new{n}" for n in range(100)}
    for _ in range(30):
        clock.advance(0.1)
    old = [t for t, name in reads if name == "old"]
    assert old and old[0] >= 5.9  # a second of debt: 100 reads at 100 a second
    per_second = [sum(1 for t, _ in reads if s <= t < s + 1) for s in range(6, 8)]
    assert max(per_second) <= 100 + 10


def test_a_zone_at_its_limit_does_not_hold_up_another():
    """
    A zone whose reads hang (its agent-side views slow) fills its reads
    under way; another zone's jobs go on being read meanwhile.
    """
    reads = []

    def read(zone, name, index):
        reads.append((zone, name))
        if zone == "slow":
            return Deferred()
        return succeed(Response(body=[], index=1))

    r, clock, _, _ = refresher(read, min_period=1.0, max_rate=1000.0, max_in_flight=4)
    for n in range(50):
        r.add(("slow", f"s{n}"))
        r.add(("fast", f"f{n}"))
    for _ in range(30):
        clock.advance(0.1)
    assert sum(1 for zone, _ in reads if zone == "slow") == 4
    fast = [name for zone, name in reads if zone == "fast"]
    assert set(fast) == {f"f{n}" for n in range(50)} and len(fast) >= 100
