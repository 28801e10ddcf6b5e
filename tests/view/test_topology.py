"""
Tests for :obj:`glimpse.view.topology`: the cached view fed by Consul watches, over
the in-memory fake Consul of :obj:`glimpse.testing` and a :class:`Clock`.
"""

import random

import pytest
from treq.testing import StubTreq
from twisted.internet.task import Clock
from twisted.python.failure import Failure

from glimpse.consul import ConsulClient
from glimpse.testing import FakeConsul
from glimpse.view.topology import Topology, Unavailable
from glimpse.view.zone import catalog_tree

WEB = "shop--prod--web"
WEB_PATH = f"health/service/{WEB}"


def entry(n, status="passing"):
    """
    A ``/v1/health/service`` entry for instance ``web-<n>`` of shop/prod/web.
    """
    sid = f"prov:{WEB}:web-{n}:http"
    return {
        "Node": {"Node": "host-1", "Address": "192.168.1.5"},
        "Service": {
            "ID": sid, "Service": WEB, "Tags": ["http"], "Address": f"10.0.0.{n}",
            "Port": 8080,
            "Meta": {"glimpse-provider": "prov", "glimpse-instance": f"web-{n}",
                     "glimpse-port": "http"},
        },
        "Checks": [{"CheckID": "serfHealth", "Name": "Serf Health Status",
                    "Status": status, "ServiceID": ""}],
    }


class Harness:
    """
    A started :class:`Topology` whose Consul is a :class:`FakeConsul` in zone ``ams``
    with one job, shop/prod/web, and one instance of it.
    """

    def __init__(self, **options):
        self.clock = Clock()
        self.fake = FakeConsul(datacenter="ams", clock=self.clock)
        self.fake.set("catalog/services", {"consul": [], WEB: ["http"]})
        self.fake.set(WEB_PATH, [entry(1)])
        self.stub = StubTreq(self.fake)
        self.consul = ConsulClient(self.stub, "http://127.0.0.1:8500", self.clock)
        options.setdefault("rand", random.Random(0))
        self.topology = Topology(self.consul, self.clock, **options)
        self.changes = []
        self.topology.add_listener(lambda zone, name: self.changes.append((zone, name)))
        self.topology.start()

    def advance(self, seconds, step=0.25):
        """
        Let ``seconds`` pass in small steps, delivering the fake's answers
        after each, as a reactor would.
        """
        self.stub.flush()
        steps = round(seconds / step)
        for _ in range(steps):
            self.clock.advance(step)
            self.stub.flush()
        self.clock.advance(seconds - steps * step)
        self.stub.flush()

    def lookup(self, name=WEB):
        """
        Look a job up in ``ams``: its instances' IDs, or the exception, or
        ``None`` while the lookup is still waiting.
        """
        results = []
        self.topology.instances("ams", name).addBoth(results.append)
        return self.outcome(results)

    @staticmethod
    def outcome(results):
        """
        What a list filled by ``addBoth(results.append)`` says.
        """
        if not results:
            return None
        if isinstance(results[0], Failure):
            return results[0].value
        return [i.id for i in results[0]]


@pytest.fixture
def h():
    """
    A started :class:`Harness` that has learned its zones.
    """
    harness = Harness()
    harness.advance(1)
    yield harness
    harness.topology.stop()


def test_catalog_tree():
    """
    The catalog becomes a tree of jobs and their port names, leaving out
    services Glimpse did not write.
    """
    assert catalog_tree({"consul": [], WEB: ["http", "admin"], "a--b--c": None}) == {
        ("shop", "prod", "web"): frozenset({"http", "admin"}),
        ("a", "b", "c"): frozenset(),
    }
    assert catalog_tree(None) == {}


def test_zones_learned(h):
    """
    On start the view learns the local zone and every zone's catalog, and
    says so to listeners.
    """
    assert h.topology.local_zone == "ams"
    assert h.topology.zones["ams"].ports("shop", "prod", "web") == frozenset({"http"})
    assert h.topology.zone_problem("ams") is None
    assert h.changes == [("ams", None)]


def test_a_zone_that_leaves_consul_is_dropped():
    """
    A new zone is watched at the next refresh of the zone list; one that
    Consul stops listing (its servers left) is kept through one refresh and
    dropped at the second: its names become unknown, listeners hear of it,
    and nothing more is asked about it, its jobs' cached reads included.
    The local zone is never dropped.
    """
    h = Harness(zones_interval=5.0, blocking_slots=0)
    h.advance(1)
    h.fake.set("catalog/datacenters", ["ams", "fra"])
    h.advance(5)
    assert set(h.topology.zones) == {"ams", "fra"}
    h.topology.instances("fra", WEB)
    h.advance(1)
    assert ("fra", WEB) in h.topology.jobs.refresher
    h.fake.set("catalog/datacenters", ["fra"])
    h.advance(5)
    assert set(h.topology.zones) == {"ams", "fra"}
    h.fake.set("catalog/datacenters", ["ams"])
    h.advance(5)
    assert set(h.topology.zones) == {"ams", "fra"}
    h.advance(5)
    assert set(h.topology.zones) == {"ams"}
    assert h.changes[-1] == ("fra", None)
    with pytest.raises(KeyError):
        h.topology.zone_problem("fra")
    asked = len([r for r in h.fake.requests if r.args.get("dc") == "fra"])
    assert asked > 0
    h.advance(130)
    assert len([r for r in h.fake.requests if r.args.get("dc") == "fra"]) == asked
    assert h.topology.zone_problem("ams") is None
    h.topology.stop()


def test_first_lookup_waits_then_cached(h):
    """
    The first lookup of a job waits for one fetch from Consul; after that,
    lookups are answered from the view without any more requests.
    """
    h.fake.stall()
    results = []
    h.topology.instances("ams", WEB).addBoth(results.append)
    h.topology.instances("ams", WEB).addBoth(results.append)
    assert results == []
    assert h.fake.count(WEB_PATH) == 1
    h.fake.unstall()
    h.fake.release(WEB_PATH)
    h.advance(1)
    assert [Harness.outcome([r]) for r in results] == [[f"prov:{WEB}:web-1:http"]] * 2
    requests = h.fake.count(WEB_PATH)
    for _ in range(100):
        assert h.lookup() == [f"prov:{WEB}:web-1:http"]
        h.advance(0.5)
    assert h.fake.count(WEB_PATH) == requests
    assert h.topology.cached_instances("ams", WEB)[0].ip == "10.0.0.1"


def test_first_lookup_times_out(h):
    """
    When Consul never answers, the first lookup of a job fails with
    :class:`Unavailable` after ``fetch_timeout``, saying so.
    """
    h.fake.stall()
    results = []
    h.topology.instances("ams", WEB).addBoth(results.append)
    h.advance(4.75)
    assert results == []
    h.advance(0.25)
    error = Harness.outcome(results)
    assert isinstance(error, Unavailable)
    assert str(error) == f"no answer from Consul for {WEB} in ams within 5s"
    assert h.topology.cached_instances("ams", WEB) is None


def test_first_lookup_consul_failing(h):
    """
    When Consul answers with errors, the first lookup of a job fails with
    :class:`Unavailable` quoting Consul as soon as a fetch fails, without waiting
    for ``fetch_timeout``.
    """
    h.fake.fail(500, "rpc error: No cluster leader")
    results = []
    h.topology.instances("ams", WEB).addBoth(results.append)
    h.advance(1)
    error = Harness.outcome(results)
    assert isinstance(error, Unavailable)
    assert "No cluster leader" in str(error)


def test_stale_until_max_stale():
    """
    While Consul fails, lookups keep getting the last view for
    ``max_stale`` seconds; after that they fail with :class:`Unavailable`; when
    Consul is back, answers come again.
    """
    h = Harness(max_stale=30.0)
    h.advance(1)
    assert h.lookup() == [f"prov:{WEB}:web-1:http"]
    h.advance(1)
    h.fake.fail(500, "rpc error: No cluster leader")
    h.advance(30)
    assert h.lookup() == [f"prov:{WEB}:web-1:http"]
    h.advance(0.25)
    error = h.lookup()
    assert isinstance(error, Unavailable)
    assert "older than 30s (max-stale)" in str(error)
    assert "No cluster leader" in str(error)
    h.fake.recover()
    h.fake.set(WEB_PATH, [entry(2)])
    # The back-off is capped at 5s, times 0.5 to 1.5 for jitter.
    h.advance(7.5)
    assert h.lookup() == [f"prov:{WEB}:web-2:http"]
    h.topology.stop()


def test_long_blocking_queries_stay_fresh():
    """
    A quiet job stays fresh: blocking queries that end because their wait
    ran out are not errors, however long nothing changes.
    """
    h = Harness(max_stale=30.0, idle_timeout=3600.0, wait=10.0)
    h.advance(1)
    h.lookup()
    h.advance(600)
    assert h.lookup() == [f"prov:{WEB}:web-1:http"]
    assert h.fake.count(WEB_PATH) > 50
    h.topology.stop()


def test_idle_job_dropped():
    """
    A job not looked up for ``idle_timeout`` seconds loses its watch: its
    blocking query is closed and no more requests are made for it.
    """
    h = Harness(idle_timeout=40.0, wait=10.0)
    h.advance(1)
    h.lookup()
    h.advance(1)
    assert h.topology.watch_count() == 2
    assert h.fake.held == 2
    h.advance(39.5)
    assert WEB in h.topology.zones["ams"].jobs
    h.advance(10.5)
    assert WEB not in h.topology.zones["ams"].jobs
    assert h.topology.watch_count() == 1
    assert h.fake.held == 1
    assert h.changes[-1] == ("ams", WEB)
    requests = h.fake.count(WEB_PATH)
    h.advance(100)
    assert h.fake.count(WEB_PATH) == requests
    h.topology.stop()


def test_used_job_kept():
    """
    A job looked up (or touched by the DNS fast path) within every
    ``idle_timeout`` keeps its watch.
    """
    h = Harness(idle_timeout=40.0, wait=10.0)
    h.advance(1)
    h.lookup()
    job = h.topology.zones["ams"].jobs[WEB]
    for i in range(6):
        h.advance(30)
        assert h.topology.zones["ams"].jobs.get(WEB) is job
        if i % 2:
            h.lookup()
        else:
            h.topology.touch("ams", WEB)
    assert job.watch.running
    h.topology.stop()


def test_listeners_on_change_only(h):
    """
    Listeners hear of a job's change, and of nothing when Consul returns
    the same answer; the serial grows with each change only.
    """
    h.lookup()
    h.advance(1)
    del h.changes[:]
    serial = h.topology.serial
    h.fake.release(WEB_PATH)
    h.fake.set(WEB_PATH, [entry(1)])
    h.advance(1)
    assert h.changes == []
    assert h.topology.serial == serial
    h.fake.set(WEB_PATH, [entry(1, status="critical")])
    h.advance(1)
    assert h.changes == [("ams", WEB)]
    assert h.topology.serial > serial
    assert not h.topology.cached_instances("ams", WEB)[0].healthy


def test_catalog_change_heard(h):
    """
    A change of a zone's catalog reaches listeners with no job name.
    """
    del h.changes[:]
    serial = h.topology.serial
    h.fake.set("catalog/services", {WEB: ["http", "admin"]})
    h.advance(1)
    assert h.changes == [("ams", None)]
    assert h.topology.serial > serial
    assert h.topology.zones["ams"].ports("shop", "prod", "web") == {"http", "admin"}


def test_a_busy_catalog_is_fetched_at_most_once_per_catalog_interval():
    """
    A zone whose registrations change ten times a second is fetched once
    per --catalog-interval (after a first burst of at most three), not once
    per change: each fetch is the zone's whole service list, and every host
    of the fleet makes it.  Its changes still all show.
    """
    h = Harness(catalog_interval=5.0)
    h.advance(1)
    before = h.fake.count("catalog/services")
    for n in range(300):  # 30 s of ten changes a second
        h.fake.set("catalog/services", {WEB: ["http"], f"shop--prod--job{n}": ["http"]})
        h.advance(0.1, step=0.1)
    fetched = h.fake.count("catalog/services") - before
    assert 30 / 5 <= fetched <= 30 / 5 + 3
    h.advance(6)
    assert h.topology.zones["ams"].ports("shop", "prod", "job299") == {"http"}
    h.topology.stop()


def test_failing_listener(h):
    """
    A listener that raises does not stop the others or the view.
    """
    heard = []

    def broken(zone, name):
        raise RuntimeError("listener bug")

    h.topology.add_listener(broken)
    h.topology.add_listener(lambda zone, name: heard.append(name))
    h.lookup()
    h.fake.set(WEB_PATH, [entry(2)])
    h.advance(1)
    assert heard == [WEB, WEB]
    assert h.lookup() == [f"prov:{WEB}:web-2:http"]


def test_stop(h):
    """
    Stopping the view closes every blocking query and makes no more
    requests.
    """
    h.lookup()
    h.advance(1)
    h.topology.stop()
    h.advance(1)
    assert h.fake.held == 0
    requests = len(h.fake.requests)
    h.advance(120)
    assert len(h.fake.requests) == requests


def test_a_lost_leader_shows_while_the_catalog_watch_waits():
    """
    While the zone's catalog watch waits (a blocking query returns only
    after its wait when nothing changes), the zone-list round asks the
    zone's servers: a lost leader, and how long since a server heard from
    one, show within a round; lookups go on from the view.
    """
    h = Harness(zones_interval=2.0)
    h.fake.set("catalog/service/consul", [])
    h.fake.known_leader, h.fake.last_contact = True, 0.01
    h.advance(2.5)
    assert h.lookup() == ["prov:shop--prod--web:web-1:http"]
    zone = h.topology.zones["ams"]
    assert zone.known_leader is True
    h.fake.known_leader, h.fake.last_contact = False, 12.5
    h.advance(2.5)
    assert zone.known_leader is False and zone.last_contact == 12.5
    assert h.topology.zone_problem("ams") is None
    assert h.lookup() == ["prov:shop--prod--web:web-1:http"]
    h.topology.stop()
