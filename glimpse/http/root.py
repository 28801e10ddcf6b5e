"""
The resource tree of Glimpse's HTTP API.
"""

import glimpse
from glimpse.http._json import HTTPError, JSONResource, write_json
from glimpse.http.lookup import LookupResource
from glimpse.http.providers import ProvidersResource


class StatusResource(JSONResource):
    """
    ``GET /v1/status``: Glimpse's own health, 503 when it cannot serve.
    """

    isLeaf = True

    def __init__(self, topology, clock):
        super().__init__()
        self._topology = topology
        self._clock = clock

    def render_GET(self, request):
        zones = {}
        serving = bool(self._topology.zones)
        for name in sorted(self._topology.zones):
            problem = self._topology.zone_problem(name)
            zones[name] = {"serving": problem is None, "problem": problem,
                           "stale_seconds": self._topology.zones[name].fresh.age(
                               self._clock.seconds())}
        local = self._topology.local_zone
        if local is None or local not in zones or not zones[local]["serving"]:
            serving = False
        body = {
            "version": glimpse.__version__,
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

    def render_GET(self, request):
        raise HTTPError(404, "not found", "try /v1/lookup/<address> or /v1/status")


def make_root(topology, applier, dns_zone, clock):
    """
    Build the whole tree.
    """
    root = JSONResource()
    v1 = V1()
    root.putChild(b"v1", v1)
    v1.putChild(b"lookup", LookupResource(topology, dns_zone))
    v1.putChild(b"providers", ProvidersResource(applier))
    v1.putChild(b"status", StatusResource(topology, clock))
    return root
