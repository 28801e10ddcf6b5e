"""
``GET /v1/lookup/{address}``: every instance of an address with its full
health, served from the view; ``*`` labels take the union of the exact
lookups, up to a cap; the zone ``any`` says which zone answers (failover);
``?meta.<key>=<value>`` keeps a subset.  ``/v1/explain/{address}`` says why
each instance is in DNS answers or not.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, NoReturn

from twisted.internet.defer import maybeDeferred

from glimpse.address import ANY_ZONE, InvalidName, parse_address
from glimpse.http._json import ErrorResource, HTTPError, JSONResource, render_deferred
from glimpse.http.bodies import any_or_error, jobs_of, jobs_or_error, lookup_body
from glimpse.http.explain import explain_body
from glimpse.http.follow import Followed, answer, parse_bool, parse_meta, stream
from glimpse.http.limits import ClientSlots, HTTPLimits

if TYPE_CHECKING:
    from twisted.internet.defer import Deferred
    from twisted.web.resource import Resource
    from twisted.web.server import Request

    from glimpse.address import Address
    from glimpse.http.hub import Hub
    from glimpse.view.history import CheckHistory
    from glimpse.view.serving import MetaFilter
    from glimpse.view.steering import Steering
    from glimpse.view.topology import Topology


class Context:
    """
    What the lookup, topology and watch resources share.

    :param topology: the :class:`glimpse.view.topology.Topology`.
    :param hub: the :class:`glimpse.http.hub.Hub`.
    :param checks: the :class:`glimpse.view.history.CheckHistory`, or ``None``.
    :param dns_zone: the DNS zone.
    :param cap: most instances a wildcard lookup returns.
    :param stream_buffer: bytes a stream holds for a slow client before
        closing it.
    :param max_streams_per_client: long-polls and streams one client may
        have open at once.
    :param steering: the :class:`glimpse.view.steering.Steering` (panic,
        failover for the zone ``any``), or ``None``.
    :ivar held: the long-polls and streams each client has open.
    """

    def __init__(self, topology: Topology, hub: Hub, checks: CheckHistory | None, dns_zone: str,
                 cap: int = 1000, stream_buffer: int = 1 << 20,
                 max_streams_per_client: int = HTTPLimits().max_streams_per_client,
                 steering: Steering | None = None) -> None:
        self.topology = topology
        self.steering = steering
        self.hub = hub
        self.checks = checks
        self.dns_zone = dns_zone
        self.cap = cap
        self.stream_buffer = stream_buffer
        self.held = ClientSlots(max_streams_per_client)


def followed_lookup(ctx: Context, address: Address, healthy: bool,
                    meta: MetaFilter = ()) -> Followed:
    """
    The :class:`~glimpse.http.follow.Followed` lookup of an address.

    :param healthy: only the healthy instances.
    :param meta: only the instances whose meta has these ``(key, value)``.
    """
    topology, steering = ctx.topology, ctx.steering

    def compute() -> Deferred[dict[str, Any]]:
        return lookup_body(topology, address, ctx.dns_zone, healthy, ctx.cap, ctx.checks,
                           steering, meta)

    key = ("lookup", address.relative(), healthy, meta)
    if address.zone == ANY_ZONE and steering is not None:
        # Failover reads the job in every zone: any of them may change the
        # answer (which zone answers, and with which instances).
        def matches_any(zone: str, name: str | None) -> bool:
            return name is None or name == address.consul_service

        return Followed(
            key=key, compute=compute, matches=matches_any,
            jobs=lambda: [(z, address.consul_service) for z in steering.zones_with(address)],
            field="instances", item_key="id", check=lambda: any_or_error(steering, address))

    def matches(zone: str, name: str | None) -> bool:
        return zone == address.zone and (name is None or name in jobs_of(topology, address))

    return Followed(
        key=key, compute=compute, matches=matches,
        jobs=lambda: [(address.zone, n) for n in jobs_of(topology, address)],
        field="instances", item_key="id",
        check=lambda: jobs_or_error(topology, address.zone, jobs_of(topology, address)))


class LookupResource(JSONResource):
    """
    ``/v1/lookup/`` (and ``/v1/watch/``, ``/v1/explain/``): one child per
    address.

    :param ctx: the :class:`Context`.
    :param kind: ``lookup``, ``watch`` or ``explain``.
    """

    def __init__(self, ctx: Context, kind: str = "lookup") -> None:
        super().__init__()
        self._ctx = ctx
        self._kind = kind

    def getChild(self, path: bytes, request: Request) -> Resource:
        """
        The :class:`AddressResource` of the address ``path``; 400 for what is
        not one, 404 for a longer path.
        """
        if request.postpath:
            return ErrorResource(404, "not found", "an address is one path segment: "
                                 f"/v1/{self._kind}/http.web.prod.shop.ams")
        try:
            address = parse_address(path.decode("utf-8", "replace"), self._ctx.dns_zone,
                                    wildcard=True)
        except InvalidName as e:
            return ErrorResource(400, "invalid address", str(e))
        return AddressResource(self._ctx, address, self._kind)

    def render_GET(self, request: Request) -> NoReturn:
        """
        ``/v1/lookup/`` alone: a 400 saying what to append.
        """
        raise HTTPError(400, "no address",
                        f"append one: /v1/{self._kind}/http.web.prod.shop.ams")


class AddressResource(JSONResource):
    """
    One address: its lookup, its stream, or its explanation.

    :param ctx: the :class:`Context`.
    :param address: the address, possibly with ``*`` labels.
    :param kind: ``lookup``, ``watch`` or ``explain``.
    """

    isLeaf = True

    def __init__(self, ctx: Context, address: Address, kind: str) -> None:
        super().__init__()
        self._ctx = ctx
        self._address = address
        self._kind = kind

    def render_GET(self, request: Request) -> int:
        """
        Answer (``?healthy=``, ``?meta.<key>=<value>``, and ``?index=`` for a
        long-poll), stream, or explain the address, as the parent's ``kind``
        says.
        """
        ctx = self._ctx
        meta = parse_meta(request)
        if self._kind == "explain":
            d = maybeDeferred(explain_body, ctx.topology, self._address, ctx.dns_zone,
                              ctx.steering, meta)
            return render_deferred(request, d.addCallback(lambda body: (200, body)))
        followed = followed_lookup(ctx, self._address, parse_bool(request, "healthy"), meta)
        if self._kind == "watch":
            return stream(request, ctx.hub, followed, ctx.stream_buffer, ctx.held)
        return answer(request, ctx.hub, followed, ctx.held)
