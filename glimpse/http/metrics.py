"""
``GET /metrics``: the registry the composition root made, in Prometheus'
text format.
"""

from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from glimpse.http._json import JSONResource


class MetricsResource(JSONResource):
    """
    ``GET /metrics``.

    :param registry: the ``CollectorRegistry`` to expose.
    """

    isLeaf = True

    def __init__(self, registry):
        super().__init__()
        self._registry = registry

    def render_GET(self, request):
        request.setHeader(b"content-type", CONTENT_TYPE_LATEST.encode())
        return generate_latest(self._registry)
