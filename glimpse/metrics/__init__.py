"""
Glimpse's own figures for ``/metrics``: the collector that reads every
part's counters at scrape time, the reactor's lag, the garbage collector's
pauses, and the fixed buckets they count into.
"""

from glimpse.metrics.buckets import Buckets
from glimpse.metrics.gcpauses import GCPauses
from glimpse.metrics.lag import LagProbe
from glimpse.metrics.registry import GlimpseCollector, make_registry

__all__ = ["Buckets", "GCPauses", "GlimpseCollector", "LagProbe", "make_registry"]
