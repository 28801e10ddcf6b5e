"""
Counting values into fixed buckets, as a Prometheus histogram shows them:
the DNS server's latency, the reactor's lags, the collections' pauses.
Pure.
"""

from __future__ import annotations

import bisect
from collections.abc import Sequence

__all__ = ["STALL_BOUNDS", "Buckets"]

#: Upper bounds (seconds) for how long the process stood still.
STALL_BOUNDS = (0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0)


class Buckets:
    """
    Values counted per bucket: each in the first bucket whose bound it
    does not pass, or in the last one (above every bound).

    :param bounds: the buckets' upper bounds, ascending.
    :ivar counts: values per bucket (``bounds``, then larger).
    :ivar total: the values added up.
    """

    __slots__ = ("bounds", "counts", "total")

    def __init__(self, bounds: Sequence[float]) -> None:
        self.bounds = tuple(bounds)
        self.counts = [0] * (len(self.bounds) + 1)
        self.total: float = 0

    def add(self, value: float, count: int = 1) -> None:
        """
        Count ``count`` values of ``value`` (answers sent together in one
        batch share their latency).
        """
        self.counts[bisect.bisect_left(self.bounds, value)] += count
        self.total += value * count
