"""
Measuring Glimpse itself: the reactor's lag, the garbage collector's
pauses, and the fixed buckets they (and the DNS server's latency) count
into.  The collector that reads every part for ``/metrics`` is
:mod:`glimpse.http.collector`.
"""

from glimpse.metrics.buckets import Buckets
from glimpse.metrics.gcpauses import GCPauses
from glimpse.metrics.lag import LagProbe

__all__ = ["Buckets", "GCPauses", "LagProbe"]
