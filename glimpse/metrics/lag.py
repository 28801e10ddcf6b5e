"""
The reactor's lag: how late a timer runs, which is how long every DNS and
HTTP answer waited behind whatever held the event loop.
"""

from __future__ import annotations

from collections import deque
from typing import TYPE_CHECKING

from twisted.application import service

from glimpse.metrics.buckets import STALL_BOUNDS, Buckets

if TYPE_CHECKING:
    from twisted.internet.interfaces import IDelayedCall, IReactorTime


class LagProbe(service.Service):
    """
    How late the reactor runs a timer: one is due every ``interval``
    seconds, and how much later than due it ran is counted.  A stall of the
    event loop (a large answer decoded in one go, a slow listener) delays
    every DNS and HTTP answer by as much, so this is where it shows.

    The histogram says how often; :meth:`longest` says how long the worst
    stall of the last ``window`` seconds was, which a histogram cannot.

    :param clock: ``IReactorTime``.
    :param interval: seconds between probes.
    :param window: seconds :meth:`longest` looks back.
    :ivar lags: the :class:`~glimpse.metrics.buckets.Buckets` the probes counted.
    """

    def __init__(self, clock: IReactorTime, interval: float = 0.1,
                 window: float = 60.0) -> None:
        self._clock = clock
        self._interval = interval
        self._window = window
        self._call: IDelayedCall | None = None
        self._due = 0.0
        self.lags = Buckets(STALL_BOUNDS)
        # (when, lag) of the probes that may still be the longest of the
        # window: each lag larger than every later one, oldest first, so
        # the first is the longest (a sliding-window maximum: at most one
        # entry per probe of the window, O(1) per probe).
        self._peaks: deque[tuple[float, float]] = deque()

    def longest(self) -> float:
        """
        The longest lag of the last ``window`` seconds (0 when none).

        :return: seconds.
        """
        self._forget(self._clock.seconds())
        return self._peaks[0][1] if self._peaks else 0.0

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
        lag = max(0.0, now - self._due)
        self.lags.add(lag)
        while self._peaks and self._peaks[-1][1] <= lag:
            self._peaks.pop()
        self._peaks.append((now, lag))
        self._forget(now)
        self._schedule(now)

    def _forget(self, now: float) -> None:
        while self._peaks and self._peaks[0][0] < now - self._window:
            self._peaks.popleft()
