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
    from twisted.internet.interfaces import IReactorTime
    from twisted.web.resource import Resource
    from twisted.web.server import Request

    from glimpse.view.topology import Topology


def zone_summary(topology: Topology, name: str, now: float) -> dict[str, Any]:
    """
    What ``/v1/zones`` says about one zone.

    :param topology: a :class:`glimpse.view.topology.Topology`.
    :param name: a zone in ``topology.zones``.
    :param now: the clock's time, seconds.
    :return: a JSON-able dict: ``zone``; ``local``; ``reachable`` (its
        catalog watch last succeeded); ``serving`` and ``problem`` (why
        lookups fail, or ``null``: the catalog is older than max-stale);
        ``stale_seconds`` (how long the catalog has gone without Consul, 0
        while reachable); ``error`` (the last error while unreachable);
        ``leader`` (``known``: whether the server that answered knew a
        leader, ``last_contact_seconds``: how long since it heard from one,
        i.e. how old the data may be; both ``null`` until Consul said);
        ``jobs`` (in its catalog); ``watched_jobs`` (the jobs in use, i.e.
        cached), ``blocking_jobs`` and ``polled_jobs`` (how many of them
        are kept fresh by a blocking watch, and by cached reads);
        ``failing_jobs`` (the jobs whose last read failed, each with the
        age of its view and its error: one failing job never stops the
        zone serving).
    """
    zone = topology.zones[name]
    problem = topology.zone_problem(name)
    failing = {job_name: {"stale_seconds": round(job.fresh.age(now), 3),
                          "problem": job.fresh.problem(now, topology.max_stale,
                                                       f"{job_name} in {name}"),
                          "error": job.fresh.error}
               for job_name, job in sorted(zone.jobs.items())
               if job.fresh.failing_since is not None}
    blocking = sum(1 for job in zone.jobs.values() if job.watch is not None)
    return {
        "zone": name,
        "local": name == topology.local_zone,
        "reachable": zone.fresh.loaded and zone.fresh.failing_since is None,
        "serving": problem is None,
        "problem": problem,
        "stale_seconds": round(zone.fresh.age(now), 3),
        "error": zone.fresh.error,
        "leader": {"known": zone.known_leader, "last_contact_seconds": zone.last_contact},
        "jobs": len(zone.tree),
        "blocking_jobs": blocking,
        "polled_jobs": len(zone.jobs) - blocking,
        "failing_jobs": failing,
        "watched_jobs": sorted(zone.jobs),
    }


class ZonesResource(JSONResource):
    """
    ``/v1/zones``: the list; one child per zone.

    :param topology: a :class:`glimpse.view.topology.Topology`.
    :param clock: ``IReactorTime``, for the views' ages.
    """

    def __init__(self, topology: Topology, clock: IReactorTime) -> None:
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

    def __init__(self, topology: Topology, clock: IReactorTime, name: str) -> None:
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
