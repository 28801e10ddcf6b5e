"""
Keeping the jobs that have no blocking watch fresh: cached reads, each job
in turn, at a bounded rate.

Glimpse holds a blocking query (one connection each) for the jobs used
most; every other job in use is read again every ``period`` seconds with a
cached read, which the client agent answers from its streaming view and
which travels pipelined with the zone's other reads on one connection
(docs/scale.md).  The rate of those reads is bounded by ``max_rate``: past
``max_rate × min_period`` jobs the period stretches instead of the load
growing.  A first read (a job's first lookup waits for it) goes ahead of
every other read of its zone and need not wait for the rate: it borrows
from the next reads, at most a second's worth, so the rate holds on
average and a burst of new jobs is answered as fast as the agent reads.
A job whose read fails is retried after a jittered back-off of its own,
and a 429 from the agent pauses every read, so nothing is ever retried in
a tight loop.  Each zone has its own queue: a zone at its limit of reads
under way (its agent-side views slow) never holds up another's.
"""

from __future__ import annotations

import heapq
import itertools
import random as _random
from collections.abc import Callable
from typing import Any

from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.logger import Logger
from twisted.python.failure import Failure

from glimpse.consul import ConsulBusy, ConsulError, Response
from glimpse.view.watch import backoff_delay

#: The least seconds between two rounds of polls (a first read goes out at
#: once): the reads due by then go out together, in one write.
TICK = 0.02

#: What a job is known by: ``(zone, Consul service name)``.
JobKey = tuple[str, str]


class _Entry:
    __slots__ = ("answered", "due", "failures", "in_flight", "index", "key", "seq", "zone")

    def __init__(self, key: JobKey, due: float, index: int | None, answered: bool) -> None:
        self.key = key
        self.zone = key[0]
        self.due = due
        self.index = index
        self.failures = 0
        self.in_flight = False
        #: Whether it has an answer (else a lookup may wait for its read).
        self.answered = answered
        #: The sequence number of its place in a queue (older places are stale).
        self.seq = -1


#: A queued read: ``(due, sequence, job)``.
_Queued = tuple[float, int, JobKey]


class Refresher:
    """
    The polled jobs and the loop that reads them.

    :param clock: ``IReactorTime``.
    :param read: ``read(zone, name, unchanged_index)``: a cached read of one
        job, a Deferred of a :class:`glimpse.consul.Response`.
    :param on_answer: called with ``(key, response)`` after each read.
    :param on_error: called with ``(key, error)`` after each failed read.
    :param min_period: the least seconds between two reads of one job.
    :param max_rate: the most reads a second, all jobs together.
    :param max_in_flight: the most reads under way per zone (a zone whose
        agent-side view hangs cannot hold the others' turns).
    :param backoff: ``(base, cap)`` seconds for a job's retries.
    :param rand: the source of jitter.
    """

    log = Logger()

    def __init__(self, clock: IReactorTime,
                 read: Callable[[str, str, int | None], Deferred[Response]],
                 on_answer: Callable[[JobKey, Response], object],
                 on_error: Callable[[JobKey, ConsulError], object],
                 min_period: float = 1.0, max_rate: float = 4000.0, max_in_flight: int = 128,
                 backoff: tuple[float, float] = (0.5, 10.0),
                 rand: _random.Random | None = None) -> None:
        self._clock = clock
        self._read = read
        self._on_answer = on_answer
        self._on_error = on_error
        self.min_period = min_period
        self.max_rate = max_rate
        self._max_in_flight = max_in_flight
        self._backoff = backoff
        self._rand = rand or _random.Random()
        self._entries: dict[JobKey, _Entry] = {}
        #: Per zone, two queues by turn: reads of jobs not answered yet
        #: (lookups wait for them), then the others.  Stale places are
        #: skipped.
        self._heaps: dict[str, tuple[list[_Queued], list[_Queued]]] = {}
        self._seq = itertools.count()
        self._in_flight: dict[str, int] = {}
        self._tokens = 0.0
        self._refilled = clock.seconds()
        self._paused_until = 0.0
        self._call: IDelayedCall | None = None
        self._running = False
        #: Reads started, and failed, since the start.
        self.reads = 0
        self.errors = 0

    @property
    def period(self) -> float:
        """
        Seconds between two reads of one job now: ``min_period``, or longer
        when that many jobs would pass ``max_rate``.
        """
        return max(self.min_period, len(self._entries) / self.max_rate)

    def __len__(self) -> int:
        return len(self._entries)

    def __contains__(self, key: object) -> bool:
        return key in self._entries

    def start(self) -> None:
        """
        Start reading.
        """
        self._running = True
        self._schedule(0.0)

    def stop(self) -> None:
        """
        Stop reading (reads under way finish and are dropped).
        """
        self._running = False
        if self._call is not None and self._call.active():
            self._call.cancel()
        self._call = None

    def add(self, key: JobKey, index: int | None = None, now: bool = True) -> None:
        """
        Keep a job fresh from now on.

        :param key: the job.
        :param index: the index of the answer the view holds, if any: the
            same index is not decoded again.
        :param now: read it at once (a lookup waits for it), ahead of the
            turn; else after one period.
        """
        if key in self._entries:
            return
        due = self._clock.seconds() + (0.0 if now else self.period * self._rand.random())
        entry = self._entries[key] = _Entry(key, due, index, answered=not now)
        self._push(entry)
        if now:
            self._schedule(0.0)

    def remove(self, key: JobKey) -> int | None:
        """
        Stop keeping a job fresh (a blocking watch took it over, or it went
        unused).

        :return: the index of its last answer, if any.
        """
        entry = self._entries.pop(key, None)
        return entry.index if entry is not None else None

    def _push(self, entry: _Entry) -> None:
        first, polls = self._heaps.setdefault(entry.zone, ([], []))
        entry.seq = next(self._seq)
        heapq.heappush(polls if entry.answered else first, (entry.due, entry.seq, entry.key))

    def _schedule(self, delay: float) -> None:
        if not self._running:
            return
        if self._call is not None and self._call.active():
            if self._call.getTime() <= self._clock.seconds() + delay:
                return
            self._call.cancel()
        self._call = self._clock.callLater(delay, self._tick)

    def _top(self, heap: list[_Queued]) -> _Entry | None:
        # The entry of the heap's first live place (dropping stale ones).
        while heap:
            _, seq, key = heap[0]
            entry = self._entries.get(key)
            if entry is not None and entry.seq == seq and not entry.in_flight:
                return entry
            heapq.heappop(heap)
        return None

    def _next_read(self, zone: str, now: float) -> _Entry | None:
        """
        The zone's next read that may start now: a first read when one is
        due (borrowing from the rate if need be), else a read in turn when
        a token allows; taken off its queue.
        """
        for heap, may_borrow in zip(self._heaps[zone], (True, False), strict=True):
            entry = self._top(heap)
            if entry is None or entry.due > now:
                continue
            if self._tokens >= 1 or (may_borrow and self._tokens > -self.max_rate):
                heapq.heappop(heap)
                return entry
        return None

    def _tick(self) -> None:
        self._call = None
        now = self._clock.seconds()
        if now < self._paused_until:
            self._schedule(self._paused_until - now)
            return
        # Tokens for max_rate reads a second, at most one round's worth
        # saved up (a burst of reads is a burst of answers); first reads may
        # run a second's worth into debt.
        self._tokens = min(max(1.0, self.max_rate * TICK),
                           self._tokens + (now - self._refilled) * self.max_rate)
        self._refilled = now
        # Zones in turn, one read each per round, while they have reads due
        # and room for them.
        zones = list(self._heaps)
        while zones:
            for zone in list(zones):
                entry = None
                if self._in_flight.get(zone, 0) < self._max_in_flight:
                    entry = self._next_read(zone, now)
                if entry is None:
                    zones.remove(zone)
                    continue
                self._tokens -= 1
                self._start(entry)
        self._next(now)

    def _next(self, now: float) -> None:
        # The earliest turn of a zone with room, polls at most every TICK;
        # a zone at its limit is ticked again when one of its reads ends.
        wait: float | None = None
        for zone, heaps in self._heaps.items():
            if self._in_flight.get(zone, 0) >= self._max_in_flight:
                continue
            for heap, may_borrow in zip(heaps, (True, False), strict=True):
                entry = self._top(heap)
                if entry is None:
                    continue
                turn = max(0.0 if may_borrow else TICK, entry.due - now)
                if self._tokens < 1 and not (may_borrow and self._tokens > -self.max_rate):
                    # At least a millisecond: a token a hair short of whole
                    # would otherwise come due at once, and again.
                    turn = max(turn, 0.001, (1 - self._tokens) / self.max_rate)
                wait = turn if wait is None else min(wait, turn)
        if wait is not None:
            self._schedule(wait)

    def _start(self, entry: _Entry) -> None:
        entry.in_flight = True
        self._in_flight[entry.zone] = self._in_flight.get(entry.zone, 0) + 1
        self.reads += 1
        d = self._read(entry.zone, entry.key[1], entry.index)
        d.addCallbacks(self._answered, self._failed, callbackArgs=(entry,),
                       errbackArgs=(entry,))

    def _done(self, entry: _Entry) -> bool:
        entry.in_flight = False
        self._in_flight[entry.zone] -= 1
        return self._entries.get(entry.key) is entry

    def _answered(self, response: Response, entry: _Entry) -> None:
        if not self._done(entry):
            return
        entry.failures = 0
        period = self.period
        if not entry.answered:
            # Jobs first read together (a burst of first lookups) would be
            # read together every period after: their answers would come
            # back in one burst and hold the reactor for milliseconds, a
            # DNS latency spike.  A random phase spreads them.
            entry.answered = True
            period *= 0.5 + self._rand.random()
        if response.index is not None:
            entry.index = response.index
        entry.due = self._clock.seconds() + period
        self._push(entry)
        try:
            self._on_answer(entry.key, response)
        except Exception:
            self.log.failure("Handling a cached read failed; the job stays polled")
        # The answers of one round need no turn each: one more round at most.
        self._schedule(TICK)

    def _failed(self, failure: Failure, entry: _Entry) -> None:
        if not self._done(entry):
            return
        self.errors += 1
        entry.failures += 1
        base, cap = self._backoff
        now = self._clock.seconds()
        entry.due = now + backoff_delay(entry.failures, base, cap, self._rand)
        self._push(entry)
        error: Any = failure.value
        if isinstance(error, ConsulBusy):
            # Too many connections or requests from this host: everyone
            # waits, not only this job.
            self._paused_until = max(self._paused_until,
                                     now + backoff_delay(2, base, cap, self._rand))
        if not isinstance(error, ConsulError):
            self.log.failure("Unexpected error in a cached read", failure)
            error = ConsulError("health/service?cached", repr(error))
        try:
            self._on_error(entry.key, error)
        except Exception:
            self.log.failure("Handling a failed cached read failed; the job stays polled")
        self._schedule(TICK)
