"""
The resource tree of Glimpse's HTTP API.
"""

from __future__ import annotations

import platform
from typing import TYPE_CHECKING, Any, NoReturn

import glimpse
import twisted
from glimpse.http._json import HTTPError, JSONResource, write_json
from glimpse.http.lookup import LookupResource
from glimpse.http.metrics import MetricsResource
from glimpse.http.openapi import OpenAPIResource
from glimpse.http.providers import MAX_BODY, ProvidersResource
from glimpse.http.sd import SDResource
from glimpse.http.topology import TopologyResource
from glimpse.http.zones import ZonesResource

if TYPE_CHECKING:
    from prometheus_client import CollectorRegistry, Histogram
    from twisted.internet.interfaces import IReactorTime
    from twisted.web.resource import Resource
    from twisted.web.server import Request

    from glimpse.http.lookup import Context
    from glimpse.providers.applier import Applier
    from glimpse.view.topology import Topology


class StatusResource(JSONResource):
    """
    ``GET /v1/status``: Glimpse's own health, 503 when it cannot serve;
    ``consul_error`` says what asking the local Consul agent last failed
    with (``null`` while it answers).

    :param topology: the :class:`glimpse.view.topology.Topology`.
    :param clock: ``IReactorTime``, for the views' ages.
    """

    isLeaf = True

    def __init__(self, topology: Topology, clock: IReactorTime) -> None:
        super().__init__()
        self._topology = topology
        self._clock = clock

    def render_GET(self, request: Request) -> bytes:
        """
        Versions, whether Glimpse serves (its local zone can be served), and
        each zone's state.
        """
        zones: dict[str, dict[str, Any]] = {}
        serving = bool(self._topology.zones)
        for name in sorted(self._topology.zones):
            problem = self._topology.zone_problem(name)
            zones[name] = {"serving": problem is None, "problem": problem,
                           "stale_seconds": self._topology.zones[name].fresh.age(
                               self._clock.seconds())}
        local = self._topology.local_zone
        if local is None or local not in zones or not zones[local]["serving"]:
            serving = False
        # What the local agent last failed with (the zone list, else the
        # local zone's catalog): "TLS: ..." for a CA or client certificate
        # the agent does not take, so that it is seen here, not only in the log.
        error = self._topology.zones_fresh.error
        if error is None and local is not None and local in self._topology.zones:
            error = self._topology.zones[local].fresh.error
        body = {
            "version": glimpse.__version__,
            "versions": {"glimpse": glimpse.__version__, "twisted": twisted.__version__,
                         "python": platform.python_version()},
            "consul_reachable": any(z["stale_seconds"] == 0 for z in zones.values())
            and bool(zones),
            "consul_error": error,
            "serving": serving,
            "local_zone": local,
            "zones": zones,
            "watches": self._topology.watch_count(),
        }
        return write_json(request, 200 if serving else 503, body)


class V1(JSONResource):
    """
    ``/v1/``.
    """

    def render_GET(self, request: Request) -> NoReturn:
        """
        A 404 that lists where to go.
        """
        raise HTTPError(404, "not found", "try /v1/lookup/<address>, /v1/topology, "
                        "/v1/status; /v1/openapi.json describes them all")


class Root(JSONResource):
    """
    ``/``: times every request for the latency histogram (streams, which
    last as long as the client stays, excluded).

    :param clock: ``IReactorTime``.
    :param latency: the HTTP latency histogram, or ``None``.
    """

    def __init__(self, clock: IReactorTime, latency: Histogram | None) -> None:
        super().__init__()
        self._clock = clock
        self._latency = latency

    def getChildWithDefault(self, path: bytes, request: Request) -> Resource:
        """
        The child, as for any resource; the request's time is observed when
        it finishes (long-polls and streams excepted).
        """
        latency = self._latency
        if latency is not None:
            segment = request.postpath[0] if path == b"v1" and request.postpath else path
            route = segment.decode("ascii", "replace")
            if route not in ROUTES:
                route = "other"
            # Streams and long-polls last as long as they wait: not latency.
            if route != "watch" and b"index" not in request.args:
                started = self._clock.seconds()

                def observe(_: object) -> None:
                    method = (request.method.decode("ascii", "replace")
                              if request.method in METHODS else "other")
                    latency.labels(route, method, str(request.code)).observe(
                        self._clock.seconds() - started)

                request.notifyFinish().addBoth(observe)
        return super().getChildWithDefault(path, request)


#: The routes the latency histogram tells apart (a bounded label set).
ROUTES = frozenset(["lookup", "topology", "explain", "watch", "status", "zones",
                    "providers", "openapi.json", "metrics", "sd"])
METHODS = frozenset([b"GET", b"HEAD", b"PUT", b"DELETE", b"POST"])


def _put(parent: Resource, path: bytes, child: Resource) -> None:
    parent.putChild(path, child)


def make_root(api: Context, applier: Applier, registry: CollectorRegistry,
              latency: Histogram | None, clock: IReactorTime,
              provider_token: str | None = None, max_body: int = MAX_BODY) -> Root:
    """
    Build the resource tree over parts the composition root made
    (:func:`glimpse.agent.build`); nothing here outlives a request.

    :param api: the :class:`glimpse.http.lookup.Context` the lookup, topology
        and watch resources share (the view, the hub, the check history).
    :param applier: the :class:`glimpse.providers.applier.Applier`.
    :param registry: the Prometheus registry ``/metrics`` serves.
    :param latency: the HTTP latency histogram in ``registry``, or ``None``.
    :param clock: ``IReactorTime``.
    :param provider_token: the token the provider API requires, or ``None``
        to serve it to loopback clients only.
    :param max_body: the largest provider state a PUT takes, in bytes (the
        site's ``max_body``).
    :return: the root resource.
    """
    topology = api.topology
    root = Root(clock, latency)
    v1 = V1()
    _put(root, b"v1", v1)
    _put(root, b"metrics", MetricsResource(registry))
    _put(v1, b"lookup", LookupResource(api))
    _put(v1, b"explain", LookupResource(api, "explain"))
    watch = LookupResource(api, "watch")
    _put(watch, b"topology", TopologyResource(api, streaming=True))
    _put(v1, b"watch", watch)
    _put(v1, b"topology", TopologyResource(api))
    _put(v1, b"openapi.json", OpenAPIResource())
    _put(v1, b"providers", ProvidersResource(applier, provider_token, max_body))
    _put(v1, b"status", StatusResource(topology, clock))
    _put(v1, b"zones", ZonesResource(topology, clock))
    _put(v1, b"sd", SDResource(api))
    return root
