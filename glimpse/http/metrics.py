"""
``GET /metrics``: the registry the composition root made, in Prometheus'
text format.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from glimpse.http._json import JSONResource

if TYPE_CHECKING:
    from prometheus_client import CollectorRegistry
    from twisted.web.server import Request


class MetricsResource(JSONResource):
    """
    ``GET /metrics``.

    :param registry: the ``CollectorRegistry`` to expose.
    """

    isLeaf = True

    def __init__(self, registry: CollectorRegistry) -> None:
        super().__init__()
        self._registry = registry

    def render_GET(self, request: Request) -> bytes:
        """
        Every metric of the registry, read now.
        """
        request.setHeader(b"content-type", CONTENT_TYPE_LATEST.encode())
        return generate_latest(self._registry)
