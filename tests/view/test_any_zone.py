"""
The zone name ``any`` in the view: a Consul datacenter called that is
ignored with one log line, and the hits of an ``any`` name keep the job
watched in every zone.
"""

import random

from treq.testing import StubTreq
from twisted.internet.task import Clock
from twisted.logger import Logger, formatEvent

from glimpse.consul import ConsulClient
from glimpse.testing import FakeConsul
from glimpse.view.topology import Topology
from glimpse.view.zones import ZoneList

WEB = "shop--prod--web"


def started(zones, monkeypatch):
    """
    A started Topology over a fake Consul listing ``zones``, and the log
    lines it wrote.
    """
    clock = Clock()
    fake = FakeConsul(datacenter="ams", clock=clock)
    fake.set("catalog/datacenters", zones)
    fake.set("catalog/services", {WEB: ["http"]})
    fake.set(f"health/service/{WEB}", [])
    stub = StubTreq(fake)
    topology = Topology(ConsulClient(stub, "http://127.0.0.1:8500", clock), clock,
                        rand=random.Random(0))
    lines = []
    # The zone list (view/zones.py) logs with its class's Logger.
    monkeypatch.setattr(ZoneList, "log",
                        Logger(observer=lambda event: lines.append(formatEvent(event))))

    def advance(seconds):
        for _ in range(int(seconds * 4)):
            clock.advance(0.25)
            stub.flush()

    topology.start()
    advance(1)
    return topology, lines, advance


def test_a_datacenter_named_any_is_ignored_with_one_log_line(monkeypatch):
    """
    A Consul datacenter named "any" never becomes a zone (its name means
    failover in Glimpse), and the log says so once, not at every refresh.
    """
    topology, lines, advance = started(["ams", "any", "fra"], monkeypatch)
    advance(65)  # two more refreshes of the zone list
    assert sorted(topology.zones) == ["ams", "fra"]
    refused = [line for line in lines if "named 'any'" in line]
    assert len(refused) == 1 and "rename it" in refused[0]
    topology.stop()


def test_touching_an_any_job_keeps_it_watched_in_every_zone(monkeypatch):
    """
    The DNS fast path's hits on an "any" name mark the job used in every
    zone that watches it, so none of them is dropped as idle.
    """
    topology, _, advance = started(["ams", "fra"], monkeypatch)
    for zone in ("ams", "fra"):
        topology.instances(zone, WEB)
    advance(1)
    topology.touch("any", WEB)
    now = topology._clock.seconds()
    assert [topology.zones[z].jobs[WEB].last_used for z in ("ams", "fra")] == [now, now]
    topology.stop()
