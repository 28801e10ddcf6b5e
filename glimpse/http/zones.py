"""
``GET /v1/zones`` and ``GET /v1/zones/{zone}``: every zone (Consul
datacenter) Glimpse knows, how old its view is, and whether Consul can
reach it now.  A zone that cannot be reached still answers from its view
for ``--max-stale`` seconds; ``serving`` and ``problem`` say when that ends.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from glimpse.http._json import ErrorResource, HTTPError, JSONResource, write_json

if TYPE_CHECKING:
    from twisted.web.resource import Resource
    from twisted.web.server import Request

    from glimpse.http._clock import Clock
    from glimpse.view.topology import Topology


def zone_summary(topology: Topology, name: str, now: float) -> dict[str, Any]:
    """
    What ``/v1/zones`` says about one zone.

    :param topology: a :class:`glimpse.view.topology.Topology`.
    :param name: a zone in ``topology.zones``.
    :param now: the clock's time, seconds.
    :return: a JSON-able dict: ``zone``; ``local``; ``reachable`` (its
        catalog watch and every job's health watch last succeeded);
        ``serving`` and ``problem`` (why lookups fail, or ``null``: the
        catalog or a watched job is older than max-stale);
        ``stale_seconds`` (how long the oldest part of the view has gone
        without Consul, 0 while reachable); ``error`` (the last error while
        unreachable); ``jobs`` (in its catalog) and ``watched_jobs`` (with a
        health watch, i.e. cached).
    """
    zone = topology.zones[name]
    # The zone's view is its catalog and every watched job's health: the
    # zone is reachable when all of their watches succeed, and as old as
    # the oldest of them.
    sources = [(f"zone {name}", zone.fresh)] + [
        (f"{job_name} in {name}", job.fresh) for job_name, job in sorted(zone.jobs.items())]
    failing = [fresh for _, fresh in sources if fresh.failing_since is not None]
    reachable = zone.fresh.loaded and not failing
    problem = topology.zone_problem(name)
    for what, fresh in sources[1:]:
        if problem is None and fresh.loaded:
            problem = fresh.problem(now, topology.max_stale, what)
    return {
        "zone": name,
        "local": name == topology.local_zone,
        "reachable": reachable,
        "serving": problem is None,
        "problem": problem,
        "stale_seconds": round(max(fresh.age(now) for _, fresh in sources), 3),
        "error": failing[0].error if failing else None,
        "jobs": len(zone.tree),
        "watched_jobs": sorted(zone.jobs),
    }


class ZonesResource(JSONResource):
    """
    ``/v1/zones``: the list; one child per zone.

    :param topology: a :class:`glimpse.view.topology.Topology`.
    :param clock: ``IReactorTime``, for the views' ages.
    """

    def __init__(self, topology: Topology, clock: Clock) -> None:
        super().__init__()
        self._topology = topology
        self._clock = clock

    def render_GET(self, request: Request) -> bytes:
        """
        Every zone's summary, and which is local.

        :raises HTTPError: 503 while Glimpse knows no zone yet.
        """
        now = self._clock.seconds()
        zones = [zone_summary(self._topology, name, now) for name in sorted(self._topology.zones)]
        if not zones:
            # Glimpse has not been able to ask Consul for the zones yet.
            try:
                problem = self._topology.zone_problem(self._topology.local_zone or "")
            except KeyError:
                problem = None
            raise HTTPError(503, "no zones known yet",
                            problem or "Glimpse has not learnt the zones from Consul yet")
        return write_json(request, 200, {"local_zone": self._topology.local_zone,
                                         "zones": zones})

    def getChild(self, path: bytes, request: Request) -> Resource:
        """
        The :class:`ZoneResource` of zone ``path``; 404 for a zone Glimpse
        does not know, or a longer path.
        """
        name = path.decode("utf-8", "replace")
        if name == "" and not request.postpath:
            return self  # /v1/zones/
        if request.postpath or name not in self._topology.zones:
            known = ", ".join(sorted(self._topology.zones)) or "none yet"
            return ErrorResource(404, f"unknown zone {name!r}",
                                 f"known zones: {known}; GET /v1/zones lists them")
        return ZoneResource(self._topology, self._clock, name)


class ZoneResource(JSONResource):
    """
    ``/v1/zones/{zone}``: one zone, 200 whether or not it is reachable.

    :param topology: a :class:`glimpse.view.topology.Topology`.
    :param clock: ``IReactorTime``, for the view's age.
    :param name: the zone.
    """

    isLeaf = True

    def __init__(self, topology: Topology, clock: Clock, name: str) -> None:
        super().__init__()
        self._topology = topology
        self._clock = clock
        self._name = name

    def render_GET(self, request: Request) -> bytes:
        """
        The zone's summary (:func:`zone_summary`).
        """
        return write_json(request, 200,
                          zone_summary(self._topology, self._name, self._clock.seconds()))
