"""
``GET /v1/topology[/{zone}[/{product}[/{env}[/{job}]]]]``: the children at
each level with counts of instances passing, warning and critical; and
``/v1/watch/topology/...``, the same as a stream.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from glimpse.address import consul_service_name, label_problem, split_consul_service
from glimpse.http._json import ErrorResource, JSONResource
from glimpse.http.bodies import LEVELS, topology_body, under, zone_or_error
from glimpse.http.follow import Followed, answer, stream

if TYPE_CHECKING:
    from twisted.web.server import Request

    from glimpse.http.lookup import Context


def followed_topology(ctx: Context, path: tuple[str, ...]) -> Followed:
    """
    The :class:`~glimpse.http.follow.Followed` topology answer at ``path``
    (a tuple of labels).
    """
    topology = ctx.topology

    def matches(zone: str, name: str | None) -> bool:
        if path and zone != path[0]:
            return False
        fields = split_consul_service(name) if name else None
        return name is None or fields is None or under(path, zone, fields)

    def jobs() -> list[tuple[str, str]]:
        return [(zone, consul_service_name(*job)) for zone, view in topology.zones.items()
                for job in view.tree if under(path, zone, job)]

    def check() -> None:
        if path:
            zone_or_error(topology, path[0])

    return Followed(key=("topology", *path), compute=lambda: topology_body(topology, list(path)),
                    matches=matches, jobs=jobs, field="children", item_key="name", check=check)


class TopologyResource(JSONResource):
    """
    ``/v1/topology/...`` (or, with ``streaming``, ``/v1/watch/topology/...``).

    :param ctx: the :class:`~glimpse.http.lookup.Context`.
    :param streaming: answer with a Server-Sent Event stream.
    """

    isLeaf = True

    def __init__(self, ctx: Context, streaming: bool = False) -> None:
        super().__init__()
        self._ctx = ctx
        self._streaming = streaming

    def render_GET(self, request: Request) -> bytes | int:
        """
        The topology at the path below this resource (400 for a bad label,
        404 for a path too long), as an answer or a stream.
        """
        path = tuple(p.decode("utf-8", "replace").lower() for p in request.postpath or () if p)
        # A path longer than LEVELS is refused below, after its labels are checked.
        for label, level in zip(path, LEVELS, strict=False):
            problem = label_problem(label, level)
            if problem:
                return ErrorResource(400, f"invalid {level}", problem).render(request)
        if len(path) > len(LEVELS):
            return ErrorResource(404, "a topology path has at most four parts",
                                 "use /v1/topology/<zone>/<product>/<env>/<job>").render(request)
        followed = followed_topology(self._ctx, path)
        if self._streaming:
            return stream(request, self._ctx.hub, followed, self._ctx.stream_buffer,
                          self._ctx.held)
        return answer(request, self._ctx.hub, followed, self._ctx.held)
