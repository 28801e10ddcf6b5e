"""
Failover across zones, the rules: how far each zone is (round-trip times
from Consul's network coordinates), the order zones are tried in, and
which zone answers an ``any`` name.  Pure: no I/O, no clock;
:class:`glimpse.view.steering.Steering` feeds them from the view.

``<service>.<job>.<env>.<product>.any`` answers the local zone's serving
instances; when it has fewer than ``--failover-min`` of them, the nearest
zone (by round-trip time, or in ``--failover-order``) that has that many;
when no zone has, the zone with the most, if it has more than the local
zone.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import attrs

#: What a zone holds for the job asked: how many instances it serves, or
#: why its view cannot serve (text).  A zone without the job is left out.
ZoneCount = int | str


@attrs.frozen
class Failover:
    """
    Why a zone other than the local one answers.

    :ivar from_zone: the local zone, which did not answer.
    :ivar reason: why, and why that zone.
    """

    from_zone: str
    reason: str

    def to_json(self) -> dict[str, str]:
        """
        As the HTTP API shows it: ``{"from": ..., "reason": ...}``.
        """
        return {"from": self.from_zone, "reason": self.reason}


@attrs.frozen
class Decision:
    """
    Which zone answers an ``any`` name.

    :ivar zone: the zone.
    :ivar failover: why it is not the local zone, or ``None`` when it is.
    """

    zone: str
    failover: Failover | None = None


def distance(a: Mapping[str, Any], b: Mapping[str, Any]) -> float:
    """
    The round-trip time between two nodes' Serf coordinates, in seconds,
    as Consul computes it (``coordinate.DistanceTo``: the Euclidean
    distance of the vectors plus both heights, plus both adjustments when
    that stays positive).

    :param a: a ``Coord`` (``Vec``, ``Height``, ``Adjustment``).
    :param b: another.
    :return: seconds; infinite for coordinates that cannot be compared.
    """
    try:
        va, vb = a["Vec"], b["Vec"]
        if len(va) != len(vb):
            return math.inf
        raw = math.dist(va, vb) + float(a["Height"]) + float(b["Height"])
        adjusted = raw + float(a.get("Adjustment", 0.0)) + float(b.get("Adjustment", 0.0))
    except (KeyError, TypeError, ValueError):
        return math.inf
    return adjusted if adjusted > 0 else raw


def _coords(entry: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    found = []
    for node in entry.get("Coordinates") or ():
        coord = node.get("Coord") if isinstance(node, Mapping) else None
        if isinstance(coord, Mapping):
            found.append(coord)
    return found


def datacenter_rtts(local: str, body: Iterable[Any]) -> dict[str, float]:
    """
    The round-trip time from the local zone to each other zone: the median
    over every pair of servers (one in each) of their coordinates'
    distance.

    :param local: the local zone.
    :param body: ``/v1/coordinate/datacenters``' answer.
    :return: ``{zone: seconds}``, for the zones whose servers (and the
        local zone's) have coordinates.
    """
    by_zone = {e["Datacenter"]: _coords(e) for e in body
               if isinstance(e, Mapping) and isinstance(e.get("Datacenter"), str)}
    mine = by_zone.get(local) or []
    rtts = {}
    for zone, theirs in by_zone.items():
        if zone == local or not mine or not theirs:
            continue
        pairs = [distance(a, b) for a in mine for b in theirs]
        finite = [p for p in pairs if math.isfinite(p)]
        if finite:
            rtts[zone] = statistics.median(finite)
    return rtts


def zones_to_try(local: str, zones: Iterable[str], rtts: Mapping[str, float],
                 order: Sequence[str] | None = None) -> list[str]:
    """
    The zones an ``any`` name fails over to, in order.

    :param local: the local zone (never in the list).
    :param zones: every zone in the view.
    :param rtts: round-trip times from :func:`datacenter_rtts`.
    :param order: ``--failover-order``: exactly these zones in this order,
        or ``None`` for every zone, nearest first (zones whose distance is
        not known yet last, by name).
    """
    if order is not None:
        return [z for z in order if z != local]
    return sorted((z for z in zones if z != local),
                  key=lambda z: (z not in rtts, rtts.get(z, 0.0), z))


def _plural(n: int) -> str:
    return f"{n} serving instance{'' if n == 1 else 's'}"


def _why_not_local(local: str, count: ZoneCount | None, minimum: int, what: str) -> str:
    if isinstance(count, str):
        return f"the view of {local} cannot serve ({count})"
    if count is None:
        return f"{local} has no {what}"
    return f"{local} has {_plural(count)} of {what}, fewer than --failover-min {minimum}"


def _where(zone: str, rtts: Mapping[str, float], by_order: bool) -> str:
    if by_order:
        return f"{zone}, the first zone of --failover-order that has them,"
    if zone in rtts:
        return f"{zone}, the nearest zone that has them ({rtts[zone] * 1000:.1f} ms away),"
    return f"{zone}, the nearest zone that has them (by name: no round-trip time yet),"


def decide(local: str, candidates: Sequence[str], counts: Mapping[str, ZoneCount],
           minimum: int, what: str, rtts: Mapping[str, float] | None = None,
           by_order: bool = False) -> Decision | None:
    """
    Which zone answers an ``any`` name.

    :param local: the local zone.
    :param candidates: the zones to fail over to, in order
        (:func:`zones_to_try`).
    :param counts: per zone that has the job, its :data:`ZoneCount`.
    :param minimum: ``--failover-min``.
    :param what: the address without its zone, for the reason
        (``http.web.prod.shop``).
    :param rtts: round-trip times, for the reason.
    :param by_order: the candidates come from ``--failover-order``.
    :return: the :class:`Decision`, or ``None`` when the local zone cannot
        serve and no other zone can either (SERVFAIL, 503).
    """
    mine = counts.get(local)
    if isinstance(mine, int) and mine >= minimum:
        return Decision(local)
    why = _why_not_local(local, mine, minimum, what)
    usable = [(z, n) for z in candidates if isinstance(n := counts.get(z), int)]
    for zone, n in usable:
        if n >= minimum:
            return Decision(zone, Failover(local, f"{why}; {_where(zone, rtts or {}, by_order)} "
                                                  f"has {n}"))
    floor = -1 if isinstance(mine, str) else (mine or 0)
    best = max(usable, key=lambda pair: pair[1], default=None)
    if best is not None and best[1] > floor:
        zone, n = best
        return Decision(zone, Failover(local, f"{why}; no zone has {minimum}: {zone} has the "
                                              f"most, {n}"))
    return None if isinstance(mine, str) else Decision(local)
