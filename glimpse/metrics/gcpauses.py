"""
The garbage collector in a long-running server: what it costs, and less of it.

CPython's cyclic collector stops the process while it runs, and a full
collection walks every tracked object.  Most of them were made at startup
(modules, classes, functions: tens of thousands, before the view holds a
single instance) and live as long as the process; on a small VM each full
collection spent most of its 50-150 ms walking them again, and every DNS
answer waited meanwhile.  :class:`GCPauses` freezes what startup made
(``gc.freeze``: left out of every later collection, still freed by
reference counting; a reference cycle among them is never reclaimed, but
they are the fixed set alive at start, so that costs at most once what
startup made) and measures each collection's pause, by generation,
for ``/metrics``.

The view, built after start, is the other large set: about four objects
per instance, 400,000 with 100,000 instances, which a full collection
walked in 150-300 ms.  Freezing again once the view has settled would
leave them out too, but each such freeze would also strand, for good, the
cycles among whatever else was alive at that moment (requests, streams,
Consul queries under way), and a view that keeps changing would need one
freeze after another.  Instead the view's instances and checks are never
tracked (:mod:`glimpse.view.model`): they are frozen values that cannot be
part of a cycle, so leaving them out loses nothing, and a full collection
walks what requests and connections hold (some 40 objects per open event
stream), not the view: ``python -m bench.soak.gc_stall`` measures it.
"""

from __future__ import annotations

import gc
import time
from collections.abc import Callable
from typing import Literal, Protocol

from twisted.application import service

from glimpse.metrics.buckets import STALL_BOUNDS, Buckets


class _Collector(Protocol):
    # What GCPauses uses of the gc module (which tests replace with a fake).
    callbacks: list[Callable[[Literal["start", "stop"], dict[str, int]], object]]

    def collect(self) -> int: ...

    def freeze(self) -> None: ...

    def unfreeze(self) -> None: ...

    def get_freeze_count(self) -> int: ...


class GCPauses(service.Service):
    """
    Freeze the objects alive when the service starts and time every
    collection after that.

    :param timer: seconds, monotonic (tests pass a fake).
    :param collector: the ``gc`` module (tests pass a fake).
    :ivar pauses: per generation, the :class:`~glimpse.metrics.buckets.Buckets` its
        collections made.
    """

    def __init__(self, timer: Callable[[], float] = time.perf_counter,
                 collector: _Collector = gc) -> None:
        self._timer = timer
        self._gc = collector
        self._started: float | None = None
        self.pauses = [Buckets(STALL_BOUNDS) for _ in range(3)]
        self.frozen = 0

    def startService(self) -> None:
        """
        Collect what startup left as garbage, freeze the rest, and start
        timing collections.
        """
        super().startService()
        self._gc.collect()
        self._gc.freeze()
        self.frozen = self._gc.get_freeze_count()
        self._gc.callbacks.append(self._phase)

    def stopService(self) -> None:
        """
        Stop timing and give the frozen objects back to the collector.
        """
        super().stopService()
        if self._phase in self._gc.callbacks:
            self._gc.callbacks.remove(self._phase)
        self._gc.unfreeze()
        self.frozen = 0

    def _phase(self, phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            self._started = self._timer()
        elif self._started is not None:
            self.pauses[info["generation"]].add(self._timer() - self._started)
            self._started = None
