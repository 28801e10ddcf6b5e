"""
The reactor's lag: how late a timer runs, which is how long every DNS and
HTTP answer waited behind whatever held the event loop.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from twisted.application import service

from glimpse.metrics.buckets import STALL_BOUNDS, Buckets

if TYPE_CHECKING:
    from twisted.internet.base import DelayedCall

    from glimpse.metrics._clock import Clock


class LagProbe(service.Service):
    """
    How late the reactor runs a timer: one is due every ``interval``
    seconds, and how much later than due it ran is counted.  A stall of the
    event loop (a large answer decoded in one go, a slow listener) delays
    every DNS and HTTP answer by as much, so this is where it shows.

    :param clock: ``IReactorTime``.
    :param interval: seconds between probes.
    :ivar lags: the :class:`~glimpse.metrics.buckets.Buckets` the probes counted.
    """

    def __init__(self, clock: Clock, interval: float = 0.1) -> None:
        self._clock = clock
        self._interval = interval
        self._call: DelayedCall | None = None
        self._due = 0.0
        self.lags = Buckets(STALL_BOUNDS)

    def startService(self) -> None:
        """
        Start probing.
        """
        super().startService()
        self._schedule(self._clock.seconds())

    def stopService(self) -> None:
        """
        Stop probing.
        """
        super().stopService()
        if self._call is not None and self._call.active():
            self._call.cancel()
        self._call = None

    def _schedule(self, now: float) -> None:
        self._due = now + self._interval
        self._call = self._clock.callLater(self._interval, self._probe)

    def _probe(self) -> None:
        now = self._clock.seconds()
        self.lags.add(max(0.0, now - self._due))
        self._schedule(now)
