"""
One Consul blocking query, kept running: the loop that feeds the view.

Consul's rules for blocking queries (docs: "Blocking Queries") live in
:func:`next_index`; the loop adds a rate limit, so a flapping service cannot
make Glimpse hammer the agent, and a jittered back-off after errors.
"""

import random as _random
from collections.abc import Callable
from typing import Any

from twisted.internet.defer import CancelledError, Deferred
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger
from twisted.python.failure import Failure

from glimpse.consul import ConsulError, Response


def next_index(previous: int, returned: int | None) -> int:
    """
    The index to send with the next blocking query.

    :param previous: the index sent with the query that just returned
        (0 for the first, non-blocking one).
    :param returned: the ``X-Consul-Index`` it answered with, or ``None``.
    :return: 0 to ask again without blocking (no index, or the index went
        backwards: Consul says to start over), else the returned index,
        never below 1 (an index of 0 would not block and would spin).
    """
    if returned is None or returned < previous:
        return 0
    return max(1, returned)


def backoff_delay(failures: int, base: float, cap: float, rand: _random.Random) -> float:
    """
    Seconds to wait after ``failures`` consecutive errors: exponential from
    ``base`` up to ``cap``, times a random factor between 0.5 and 1.5, so
    that watches that failed together (a zone's servers went away) do not
    retry together: when the zone comes back, they restart spread over
    seconds, not all in the same instant.

    :param failures: consecutive errors so far (1 after the first).
    :param base: seconds after the first error, before jitter.
    :param cap: the most seconds, before jitter.
    :param rand: the source of jitter.
    :return: seconds.
    """
    delay = min(cap, base * (2 ** max(0, failures - 1)))
    return delay * (0.5 + rand.random())


class BlockingWatch:
    """
    Run a blocking query over and over, reporting each answer.

    :param clock: ``IReactorTime``.
    :param fetch: ``fetch(index, wait)`` returns a Deferred of a
        :class:`glimpse.consul.Response`; ``index`` is ``None`` for a
        non-blocking fetch.
    :param on_answer: called with each successful ``Response``; equal
        answers are reported too (a return is no proof of change), the
        caller compares.
    :param on_error: called with the exception of each failed query: a
        :class:`ConsulError` (anything else is a bug, logged as well).
    :param wait: seconds each blocking query may wait on Consul's side.
    :param min_interval: seconds between the starts of two queries at the
        sustained rate: a flapping service costs at most one query per
        interval.
    :param burst: queries that may start back to back after a quiet
        spell, so that the next change after a change (one provider apply
        often moves the index twice) is not held back by the rate limit.
    :param backoff: ``(base, cap)`` seconds for retries after errors.
    :param rand: a ``random.Random`` for jitter (tests pass a seeded one).
    :ivar index: the index the next query sends (0: not blocking).
    :ivar failures: consecutive errors so far.
    :ivar requests: queries started.
    """

    log = Logger()

    def __init__(self, clock: IReactorTime,
                 fetch: Callable[[int | None, float | None], Deferred[Response]],
                 on_answer: Callable[[Response], object],
                 on_error: Callable[[object], object], wait: float = 60.0,
                 min_interval: float = 0.1, backoff: tuple[float, float] = (0.25, 5.0),
                 rand: _random.Random | None = None, burst: int = 3) -> None:
        self._clock = clock
        self._fetch = fetch
        self._on_answer = on_answer
        self._on_error = on_error
        self._wait = wait
        self._min_interval = min_interval
        self._backoff = backoff
        self._rand = rand or _random.Random()
        self.index = 0
        self.failures = 0
        self.requests = 0
        self._running = False
        self._pending: Deferred[Response] | None = None
        # An IDelayedCall (typed Any: mypy cannot read zope interfaces).
        self._delayed: Any = None
        # A token bucket: `burst` tokens, one refilled per min_interval,
        # one taken by each query.
        self._burst = burst
        self._tokens = float(burst)
        self._refilled = clock.seconds()

    @property
    def running(self) -> bool:
        """
        Whether the loop is on.
        """
        return self._running

    def start(self, index: int = 0) -> None:
        """
        Start the loop.

        :param index: the index of an answer the caller already has, to
            block on at once; 0 to begin with a non-blocking fetch.
        """
        if not self._running:
            self._running = True
            self.index = index
            self._query()

    def stop(self) -> None:
        """
        Stop the loop and cancel whatever it is waiting for.
        """
        self._running = False
        if self._delayed is not None and self._delayed.active():
            self._delayed.cancel()
        self._delayed = None
        pending, self._pending = self._pending, None
        if pending is not None:
            pending.cancel()

    def _query(self) -> None:
        self._delayed = None
        if not self._running:
            return
        self._refill()
        self._tokens -= 1
        self.requests += 1
        index = self.index or None
        # Spread the waits: watches started together (every job a burst of
        # lookups touched) would otherwise all end their blocking queries
        # in the same second, every wait, and stall the reactor together.
        wait = self._wait * (0.75 + 0.25 * self._rand.random()) if index else None
        d = self._fetch(index, wait)
        self._pending = d
        d.addCallbacks(self._answered, self._failed, callbackArgs=(index or 0,))

    def _answered(self, response: Response, sent: int) -> None:
        self._pending = None
        if not self._running:
            return
        self.index = next_index(sent, response.index)
        self.failures = 0
        try:
            self._on_answer(response)
        except Exception:
            self.log.failure("Handling a Consul answer failed; the watch goes on")
        # The rate limit: however fast Consul answers (a flapping service
        # wakes every blocking query), start at most one query per interval.
        self._refill()
        self._schedule(max(0.0, (1 - self._tokens) * self._min_interval))

    def _failed(self, failure: Failure) -> None:
        self._pending = None
        if not self._running or failure.check(CancelledError):
            return
        if not failure.check(ConsulError):
            self.log.failure("Unexpected error in a Consul watch", failure)
        self.failures += 1
        # After an error the index may belong to a view Consul lost (agent
        # restarted): start over with a full fetch.
        self.index = 0
        try:
            self._on_error(failure.value)
        except Exception:
            self.log.failure("Handling a Consul error failed; the watch goes on")
        base, cap = self._backoff
        self._schedule(backoff_delay(self.failures, base, cap, self._rand))

    def _refill(self) -> None:
        now = self._clock.seconds()
        if self._min_interval > 0:
            gained = (now - self._refilled) / self._min_interval
            self._tokens = min(float(self._burst), self._tokens + gained)
        else:
            self._tokens = float(self._burst)
        self._refilled = now

    def _schedule(self, delay: float) -> None:
        if self._running:
            self._delayed = self._clock.callLater(delay, self._query)
