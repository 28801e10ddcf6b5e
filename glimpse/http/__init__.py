"""
Glimpse's HTTP API: a twisted.web resource tree.

:func:`make_root` builds the tree over the parts the composition root made:
the :class:`Context` the lookup, topology and watch resources share, with
its subscription :class:`Hub`, and the :class:`GlimpseCollector` that
``/metrics`` reads every part through.  Resources raise :class:`HTTPError`
for an error answer; every error is JSON.
"""

from glimpse.http._json import HTTPError
from glimpse.http.collector import GlimpseCollector, make_registry
from glimpse.http.hub import Hub
from glimpse.http.lookup import Context
from glimpse.http.providers import ProvidersResource
from glimpse.http.root import make_root
from glimpse.http.zones import ZonesResource

__all__ = [
    "Context",
    "GlimpseCollector",
    "HTTPError",
    "Hub",
    "ProvidersResource",
    "ZonesResource",
    "make_registry",
    "make_root",
]
