"""
Tests for :obj:`glimpse.view.steering`: which zone answers an ``any``
address, from the zones' views and without a Consul request; the
coordinates read on the clock, never per lookup.
"""

from treq.testing import StubTreq
from twisted.internet.defer import Deferred, fail, succeed
from twisted.internet.task import Clock

from glimpse.address import Address
from glimpse.consul import ConsulClient, ConsulUnavailable
from glimpse.testing import FakeConsul
from glimpse.view.model import Check, Instance
from glimpse.view.steering import Steering
from glimpse.view.topology import Unavailable
from glimpse.view.zone import ZoneView

from support import failure_of, result_of

WEB = "shop--prod--web"
ANY = Address("http", "web", "prod", "shop", "any")


def inst(ip, status="passing"):
    """
    An instance of shop/prod/web on ``http``.
    """
    check = Check(id=f"{ip}:c", name="c", type="ttl", status=status, output="",
                  node_level=False)
    return Instance(id=f"p:{ip}:http", product="shop", env="prod", job="web", instance=ip,
                    service="http", provider="p", node="n1", ip=ip, port=8080, checks=(check,))


class View:
    """
    Zones holding shop/prod/web: their instances (or the problem of their
    view) set by the test; what was asked of them is recorded.
    """

    def __init__(self, **jobs):
        self.local_zone = "ams"
        self.zones = {}
        self.jobs = {}
        self.problems = {}
        self.asked = []
        self.announced = []
        self.pending = {}
        for zone, instances in jobs.items():
            self.set(zone, instances)

    def set(self, zone, instances):
        view = self.zones.setdefault(zone, ZoneView(zone))
        view.tree[("shop", "prod", "web")] = frozenset({"http"})
        self.jobs[zone] = tuple(instances)

    def zone_problem(self, zone):
        return self.problems.get(zone)

    def instances(self, zone, name):
        self.asked.append(zone)
        if zone in self.pending:
            return self.pending[zone]
        return succeed(self.jobs[zone])

    def cached_instances(self, zone, name):
        return self.jobs.get(zone)

    def add_listener(self, listener):
        pass

    def announce(self, zone, name):
        self.announced.append((zone, name))


class Coordinates:
    """
    A Consul client whose coordinate answers the test gives.
    """

    def __init__(self):
        self.calls = 0
        self.answers = []

    def coordinate_datacenters(self):
        self.calls += 1
        return self.answers.pop(0) if self.answers else succeed([])


def coords(**offsets):
    """
    /v1/coordinate/datacenters with one server per zone at these offsets.
    """
    return [{"Datacenter": zone, "Coordinates": [{"Node": zone, "Coord": {
        "Vec": [x] + [0.0] * 7, "Height": 0.0, "Adjustment": 0.0}}]}
        for zone, x in offsets.items()]


def steering(view, **options):
    return Steering(view, Coordinates(), Clock(), **options)


def test_the_local_zone_answers_while_it_serves_and_the_others_are_kept_watched():
    """
    While the local zone serves enough it answers, without waiting for the
    others; asking still keeps the job watched in every zone it may fail
    over to.
    """
    view = View(ams=[inst("10.0.0.1")], fra=[inst("10.1.0.1")])
    view.pending["fra"] = Deferred()  # fra's first answer has not come
    choice = result_of(steering(view).choose(ANY))
    assert (choice.zone, choice.failover) == ("ams", None)
    assert [i.ip for i in choice.instances] == ["10.0.0.1"]
    assert sorted(view.asked) == ["ams", "fra"]


def test_a_local_zone_with_too_few_fails_over_to_the_nearest():
    """
    Below --failover-min the nearest zone with enough answers, and the
    choice says why.
    """
    view = View(ams=[inst("10.0.0.1"), inst("10.0.0.2", "critical")],
                fra=[inst("10.1.0.1"), inst("10.1.0.2")], lon=[inst("10.2.0.1")])
    s = steering(view, failover_min=2)
    s._coordinates = coords(ams=0.0, fra=0.002, lon=0.001)
    choice = result_of(s.choose(ANY))
    assert choice.zone == "fra" and choice.failover.from_zone == "ams"
    assert "fra, the nearest zone that has them (2.0 ms away), has 2" in choice.failover.reason


def test_the_first_answer_waits_for_the_zones_it_may_fail_over_to():
    """
    When the local zone has nobody, the zones not loaded yet are waited
    for (their first answer), then the choice is made.
    """
    view = View(ams=[inst("10.0.0.1", "critical")], fra=[inst("10.1.0.1")])
    view.pending["fra"] = Deferred()
    results = []
    steering(view).choose(ANY).addBoth(results.append)
    assert results == []
    view.pending["fra"].callback(view.jobs["fra"])
    assert results[0].zone == "fra"


def test_failover_order_is_followed_and_a_lost_zone_passed_over():
    """
    --failover-order sets the order; a zone whose view cannot serve is
    passed over; when none can serve, the lookup is Unavailable.
    """
    view = View(ams=[], fra=[inst("10.1.0.1")], lon=[inst("10.2.0.1")])
    s = steering(view, failover_order=["lon", "fra"])
    assert result_of(s.choose(ANY)).zone == "lon"
    view.problems["lon"] = "the view of lon is older than 300s"
    assert result_of(s.choose(ANY)).zone == "fra"
    view.pending["fra"] = fail(Unavailable("fra is gone"))
    view.problems["ams"] = "the view of ams is older than 300s"
    assert isinstance(failure_of(s.choose(ANY)), Unavailable)


def test_zones_with_lists_the_zones_that_have_the_address():
    """
    Only zones whose catalog has the job and port are asked.
    """
    view = View(ams=[inst("10.0.0.1")], fra=[inst("10.1.0.1")])
    view.zones["lon"] = ZoneView("lon")
    assert steering(view).zones_with(ANY) == ["ams", "fra"]
    assert steering(view).zones_with(Address("admin", "web", "prod", "shop", "any")) == []


def test_coordinates_are_read_on_the_clock_and_a_new_order_is_announced():
    """
    The coordinates are read at start and every interval (retried sooner
    until they came), never by a lookup; a change of the failover order
    tells the view, whose kept ``any`` answers then go.
    """
    view = View(ams=[], fra=[inst("10.1.0.1")], lon=[inst("10.2.0.1")])
    consul, clock = Coordinates(), Clock()
    s = Steering(view, consul, clock, interval=30)
    consul.answers = [fail(ConsulUnavailable("coordinate/datacenters", "refused")),
                      succeed(coords(ams=0.0, fra=0.002, lon=0.001))]
    s.start()
    assert consul.calls == 1 and s.zones_to_try("ams") == ["fra", "lon"]
    clock.advance(2)
    assert consul.calls == 2 and s.zones_to_try("ams") == ["lon", "fra"]
    assert view.announced == [("ams", None)]
    result_of(s.choose(ANY))
    assert consul.calls == 2
    consul.answers = [succeed(coords(ams=0.0, fra=0.002, lon=0.001))]
    clock.advance(30)
    assert consul.calls == 3 and view.announced == [("ams", None)]  # same order: quiet
    s.stop()
    assert not clock.getDelayedCalls()


def test_one_zone_reads_coordinates_once_an_interval():
    """
    With no zone to fail over to, the coordinates are still read only once
    an interval (not retried as if missing).
    """
    view = View(ams=[])
    consul, clock = Coordinates(), Clock()
    s = Steering(view, consul, clock, interval=30)
    s.start()
    clock.advance(29)
    assert consul.calls == 1
    clock.advance(1)
    assert consul.calls == 2
    s.stop()


def test_coordinates_read_before_the_local_zone_is_known_are_read_again_soon():
    """
    At start the local zone may not be known yet: the coordinates are read
    again soon, and the order then announced.
    """
    view = View(ams=[], fra=[inst("10.1.0.1")])
    view.local_zone = None
    consul, clock = Coordinates(), Clock()
    s = Steering(view, consul, clock, interval=30)
    consul.answers = [succeed(coords(ams=0.0, fra=0.002)),
                      succeed(coords(ams=0.0, fra=0.002))]
    s.start()
    view.local_zone = "ams"
    clock.advance(2)
    assert consul.calls == 2 and view.announced == [("ams", None)]
    s.stop()


def test_with_a_failover_order_no_coordinates_are_read():
    """
    --failover-order makes the round-trip times moot: none are asked for.
    """
    view = View(ams=[])
    consul, clock = Coordinates(), Clock()
    s = Steering(view, consul, clock, failover_order=["fra"])
    s.start()
    clock.advance(60)
    assert consul.calls == 0
    s.stop()


def test_the_consul_client_reads_the_datacenters_coordinates():
    """
    ConsulClient.coordinate_datacenters asks /v1/coordinate/datacenters
    and gives its list (empty for anything else).
    """
    clock = Clock()
    fake = FakeConsul(datacenter="ams", clock=clock)
    stub = StubTreq(fake)
    client = ConsulClient(stub, "http://127.0.0.1:8500", clock)
    fake.set("coordinate/datacenters", coords(ams=0.0, fra=0.002))
    d = client.coordinate_datacenters()
    stub.flush()
    assert [e["Datacenter"] for e in result_of(d)] == ["ams", "fra"]
    fake.set("coordinate/datacenters", {"not": "a list"})
    d = client.coordinate_datacenters()
    stub.flush()
    assert result_of(d) == []
    assert fake.count("coordinate/datacenters") == 2
