"""
Subscriptions to answers: long-polls and Server-Sent Event streams.

A *subject* is one answer (a lookup of an address, or a topology path),
shared by everyone who follows it: however many clients wait on or stream
one address, Glimpse recomputes it once per change of the view, from the
view, and the view keeps one Consul watch per job.  A subject is
recomputed only for changes of the jobs its answer reads, and it wakes its
followers only when the answer itself differs, so churn elsewhere in the
topology costs them nothing.

Streams get a ``snapshot`` (the whole answer), then ``add`` / ``remove`` /
``update`` events per item (instance, or topology child), and a
``summary`` (the answer without its items) when anything else changed
(``truncated``, a topology's total counts), each with an ``id`` of the
form ``<subject token>-<sequence>``.  Replaying them on the snapshot gives
the current answer.  While the view cannot serve: an ``unavailable``
event, then a fresh ``snapshot`` once it can again.
"""

from __future__ import annotations

import json
import secrets
from collections import deque
from collections.abc import Callable, Hashable, Iterable
from typing import TYPE_CHECKING, Any, Protocol, cast

from twisted.application import service
from twisted.internet.defer import Deferred, maybeDeferred
from twisted.internet.task import LoopingCall
from twisted.logger import Logger

from glimpse.http._json import HTTPError, error_body
from glimpse.http.bodies import body_index
from glimpse.http.events import item_events, sse_event

if TYPE_CHECKING:
    from twisted.internet.interfaces import IReactorTime
    from twisted.python.failure import Failure

    from glimpse.view.topology import Topology

log = Logger()

#: What identifies a subject among the hub's.
Key = tuple[Hashable, ...]
#: Computes an answer: a Deferred of its body, failing with an
#: :class:`HTTPError`.
Compute = Callable[[], Deferred[dict[str, Any]]]
#: ``matches(zone, name)``: whether a change of the view can change an
#: answer (``name`` is ``None`` for a change of the zone's catalog).
Matches = Callable[[str, str | None], bool]
#: Returns the ``(zone, consul service)`` pairs an answer reads.
Jobs = Callable[[], Iterable[tuple[str, str]]]
#: An error answer: its status and its body.
ErrorAnswer = tuple[int, dict[str, Any]]


class Follower(Protocol):
    """
    What the hub asks of a stream that follows a subject
    (:class:`glimpse.http.follow.Stream`).
    """

    def send(self, data: bytes) -> None:
        """
        Write encoded events to the client.
        """

    def close(self, reason: str) -> None:
        """
        End the stream, saying why.
        """


class Subject:
    """
    One answer that clients follow.

    :param key: what identifies it in the hub.
    :param compute: a callable returning a Deferred of the body, failing
        with an :class:`HTTPError`.
    :param matches: ``matches(zone, name)``: whether a change of the view
        can change this answer.
    :param field: the body's list of items.
    :param item_key: an item's id.
    :param jobs: a callable returning the ``(zone, consul service)`` pairs
        the answer reads, to keep their watches alive.
    :param history: events kept for resuming streams.
    """

    def __init__(self, key: Key, compute: Compute, matches: Matches, field: str, item_key: str,
                 jobs: Jobs, history: int = 1000) -> None:
        self.key = key
        self.token = secrets.token_hex(4)
        self._compute = compute
        self.matches = matches
        self.field = field
        self.item_key = item_key
        self.jobs = jobs
        self.body: dict[str, Any] | None = None
        self.error: ErrorAnswer | None = None
        self.seq = 0
        self.log: deque[tuple[int, str, Any]] = deque(maxlen=history)
        self.waiters: list[Waiter] = []
        self.streams: set[Follower] = set()
        self.idle_since: float | None = None
        #: Asked for since the last heartbeat (its jobs are kept watched).
        self.used = True
        #: The index of the current answer (or error), and the answer as
        #: the HTTP API sends it: computed once per change, not per request.
        self.index: int | None = None
        self.encoded: bytes | None = None
        self._running: Deferred[Subject] | None = None
        self._again = False
        self.ready: Deferred[Subject] | None = None

    def event_id(self, seq: int | None = None) -> str:
        """
        The ``id:`` of the event at ``seq`` (default: the latest).
        """
        return f"{self.token}-{self.seq if seq is None else seq}"

    def refresh(self) -> Deferred[Subject]:
        """
        Recompute the answer (once at a time: a change during a computation
        makes one more), then tell followers what changed.

        :return: a Deferred that fires when this answer is current.
        """
        if self._running is not None:
            self._again = True
            return self._running
        done: Deferred[Subject] = Deferred()
        self._running = done

        def computed(result: dict[str, Any]) -> None:
            self._settle(result, None)

        def failed(failure: Failure) -> None:
            failure.trap(HTTPError)
            e = cast(HTTPError, failure.value)
            self._settle(None, (e.code, error_body(e.error, e.detail)))

        def finished(_: object) -> None:
            self._running = None
            if self._again:
                self._again = False
                self.refresh().chainDeferred(done)
            else:
                done.callback(self)

        d = maybeDeferred(self._compute)
        d.addCallbacks(computed, failed)
        d.addErrback(lambda f: log.failure("Recomputing {key} failed", f, key=self.key))
        d.addBoth(finished)
        if self.ready is None:
            self.ready = done
        return done

    def _settle(self, body: dict[str, Any] | None, error: ErrorAnswer | None) -> None:
        old_body, old_index = self.body, self.index
        index = body_index(body if error is None else error)
        if index == old_index:
            return
        self.body, self.error, self.index = body, error, index
        self.encoded = json.dumps(body if error is None else error[1], indent=2,
                                  sort_keys=True).encode("utf-8") + b"\n"
        out: list[tuple[str, Any]]
        if error is not None:
            out = [("unavailable", dict(error[1], status=error[0]))]
        else:
            events = item_events(old_body, body, self.field, self.item_key)
            out = [("snapshot", body)] if events is None else events
        for kind, data in out:
            self.seq += 1
            self.log.append((self.seq, kind, data))
            payload = sse_event(kind, data, self.event_id())
            for stream in list(self.streams):
                stream.send(payload)
        waiters, self.waiters = self.waiters, []
        for waiter in waiters:
            waiter.fire(self)

    def current(self) -> Deferred[Subject]:
        """
        A Deferred firing with this subject once its answer is current (at
        once unless it is being recomputed).
        """
        d: Deferred[Subject] = Deferred()
        running = self._running or self.ready
        if running is None or running.called:
            d.callback(self)
        else:

            def relay(subject: Subject) -> Subject:
                d.callback(subject)
                return subject

            running.addCallback(relay)
        return d

    def since(self, last_id: str | None) -> list[bytes] | None:
        """
        The encoded events after ``last_id``, or ``None`` when they are no
        longer kept (or the id is not one of this subject's).
        """
        token, _, digits = (last_id or "").rpartition("-")
        if token != self.token or not digits.isdigit():
            return None
        seq = int(digits)
        if seq > self.seq or (self.log and seq < self.log[0][0] - 1) or (
                not self.log and seq != self.seq):
            return None
        return [sse_event(k, d, self.event_id(s)) for s, k, d in self.log if s > seq]

    def snapshot(self) -> bytes:
        """
        The encoded event that starts a stream: the whole answer.
        """
        if self.error is not None:
            return sse_event("unavailable", dict(self.error[1], status=self.error[0]),
                             self.event_id())
        return sse_event("snapshot", self.body, self.event_id())

    def busy(self) -> bool:
        """
        Whether someone still follows this subject.
        """
        return bool(self.waiters or self.streams)


class Waiter:
    """
    One long-poll: fires with the subject when its answer's index is no
    longer ``index``, or when ``wait`` seconds have passed.

    :ivar deferred: fires with the subject; cancelling it ends the wait.
    """

    def __init__(self, subject: Subject, index: int, wait: float, clock: IReactorTime) -> None:
        self.deferred: Deferred[Subject] = Deferred(lambda _: self._cancelled())
        self._subject = subject
        self._index = index
        self._timer = clock.callLater(wait, self.fire, subject, True)

    def fire(self, subject: Subject, timed_out: bool = False) -> None:
        """
        Answer, if the answer differs or time is up; else keep waiting.
        """
        if self.deferred.called:
            return
        if not timed_out and subject.index == self._index:
            subject.waiters.append(self)
            return
        if self._timer.active():
            self._timer.cancel()
        if self in subject.waiters:
            subject.waiters.remove(self)
        self.deferred.callback(subject)

    def _cancelled(self) -> None:
        if self._timer.active():
            self._timer.cancel()
        if self in self._subject.waiters:
            self._subject.waiters.remove(self)


class Hub(service.Service):
    """
    Every subject followed, fed by the view's change listener.  A service:
    while it runs, streams get their heartbeats and followed jobs are kept
    watched; stopping it closes every stream.

    :param topology: the :class:`glimpse.view.topology.Topology`.
    :param clock: ``IReactorTime``.
    :param heartbeat: seconds between a stream's heartbeat comments (also
        how often followed jobs are marked as used).
    :param linger: seconds a subject with no followers is kept, so that a
        reconnecting stream can resume with ``Last-Event-ID``.
    :param history: events a subject keeps for resuming streams.
    """

    def __init__(self, topology: Topology, clock: IReactorTime, heartbeat: float = 5.0,
                 linger: float = 60.0, history: int = 1000) -> None:
        self._topology = topology
        self._clock = clock
        self.heartbeat = heartbeat
        self.linger = linger
        self.history = history
        self.subjects: dict[Key, Subject] = {}
        topology.add_listener(self._changed)
        self._loop = LoopingCall(self._beat)
        self._loop.clock = clock

    def startService(self) -> None:
        """
        Start the heartbeats.
        """
        super().startService()
        self._loop.start(self.heartbeat, now=False)

    def stopService(self) -> None:
        """
        Stop the heartbeats and close every stream.
        """
        super().stopService()
        if self._loop.running:
            self._loop.stop()
        for subject in self.subjects.values():
            for stream in list(subject.streams):
                stream.close("Glimpse is stopping")

    def subject(self, key: Key, compute: Compute, matches: Matches, field: str, item_key: str,
                jobs: Jobs) -> Subject:
        """
        The subject for ``key``, made and computed on first use; the other
        parameters are :class:`Subject`'s.
        """
        subject = self.subjects.get(key)
        if subject is None:
            subject = Subject(key, compute, matches, field, item_key, jobs, self.history)
            self.subjects[key] = subject
            subject.refresh()
        subject.idle_since = None
        subject.used = True
        return subject

    def forget_if_idle(self, subject: Subject, errors_only: bool = False) -> None:
        """
        Drop ``subject`` now if nobody follows it (with ``errors_only``, only
        when its answer is a 4xx error).
        """
        if subject.busy() or self.subjects.get(subject.key) is not subject:
            return
        if errors_only and (subject.error is None or subject.error[0] >= 500):
            return
        del self.subjects[subject.key]

    def subscribers(self) -> int:
        """
        How many streams and long-polls are open.
        """
        return sum(len(s.streams) + len(s.waiters) for s in self.subjects.values())

    def wait(self, subject: Subject, index: int, wait: float) -> Deferred[Subject]:
        """
        A Deferred firing with ``subject`` once its answer's index differs
        from ``index``, or after ``wait`` seconds.
        """
        waiter = Waiter(subject, index, wait, self._clock)
        subject.current().addCallback(waiter.fire)
        return waiter.deferred

    def _changed(self, zone: str, name: str | None) -> None:
        for subject in list(self.subjects.values()):
            if subject.matches(zone, name):
                subject.refresh()

    def _beat(self) -> None:
        now = self._clock.seconds()
        for key, subject in list(self.subjects.items()):
            for stream in list(subject.streams):
                stream.send(b": heartbeat\n\n")
            if subject.busy() or subject.used:
                subject.used = False
                subject.idle_since = None
                for zone, name in subject.jobs():
                    self._topology.touch(zone, name)
            elif subject.idle_since is None:
                subject.idle_since = now
            elif now - subject.idle_since > self.linger:
                del self.subjects[key]
