"""
Pipelined reads: many ``GET`` requests in flight on one persistent HTTP/1.1
connection to the Consul agent, answered in order.

Why not treq for these: Glimpse keeps thousands of jobs fresh with cheap
``?cached`` reads that the client agent serves from its streaming views
(docs/scale.md).  Through treq a read costs about 290 µs of CPU and holds a
connection of its own while it is under way; here it costs about 30 µs, and
a whole zone's reads share one connection, so the number of connections to
the agent stays bounded however many jobs are read.  Consul's HTTP server
(Go's ``net/http``) answers pipelined requests one after another.  Writes,
blocking queries and everything else stay on treq.

Go's server reads the next request of a connection only once it has
answered the one before, so one connection is served by one goroutine at a
time: a burst of first reads (each makes the agent subscribe a new
streaming view, waiting for a server) is served faster on a few
connections.  :class:`PipelinePool` opens up to ``size`` of them per zone
while the first ones are full, and closes the extra ones again once they
are idle; at steady state a zone's reads go on one.

Answers are parsed by :mod:`glimpse.consul._parser`.  A header block or
body over its limit, a request that outlives its deadline, or the
connection going away fails every read under way on that connection with
:class:`~glimpse.consul.ConsulUnavailable`; the next read connects again.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from typing import Any, cast

import attrs
from twisted.internet.defer import CancelledError, Deferred, fail, succeed
from twisted.internet.interfaces import (
    IDelayedCall,
    IReactorTime,
    IStreamClientEndpoint,
    ITCPTransport,
)
from twisted.internet.protocol import Factory, Protocol
from twisted.python.failure import Failure

from glimpse.consul._answers import ConsulUnavailable
from glimpse.consul._parser import AnswerParser, BadAnswer, RawAnswer

__all__ = ["AnswerParser", "BadAnswer", "PipelinePool", "PipelinedReader", "RawAnswer"]


class _Connection(Protocol):
    """
    One connection: writes what its reader hands it and hands back what
    the parser completes.
    """

    def __init__(self, reader: PipelinedReader) -> None:
        self._reader = reader
        self._parser = AnswerParser()

    def send(self, requests: list[bytes]) -> None:
        """
        Write requests.
        """
        cast(ITCPTransport, self.transport).writeSequence(requests)

    def abort(self) -> None:
        """
        Close now, dropping whatever is unsent or unread.
        """
        if self.transport is not None:
            cast(ITCPTransport, self.transport).abortConnection()

    def connectionMade(self) -> None:
        self._reader._connected(self)

    def dataReceived(self, data: bytes) -> None:
        try:
            answers = self._parser.feed(data)
        except BadAnswer as e:
            self._reader._lost(self, f"the agent's answer could not be read: {e}")
            self.abort()
            return
        if answers:
            self._reader._answered(answers)
        if not self._parser.keep_alive:
            cast(ITCPTransport, self.transport).loseConnection()

    def connectionLost(self, reason: Failure | None = None) -> None:
        why = reason.getErrorMessage() if reason is not None else ""
        self._reader._lost(self, why or "the connection closed")


@attrs.define
class _Read:
    request: bytes
    deferred: Deferred[RawAnswer]
    deadline: float = 0.0


class PipelinedReader:
    """
    ``GET`` requests pipelined on one connection, made when needed and made
    again after it goes away.

    :param endpoint: connects to the agent (TLS already wrapped in for an
        ``https://`` agent).
    :param clock: ``IReactorTime``, for deadlines.
    :param host: the ``Host`` header.
    :param headers: more headers sent with every request (the ACL token).
    :param depth: the most requests written and not yet answered; more
        wait their turn.
    :param timeout: seconds an answer may take from its request's writing;
        past it the connection is closed and every read under way fails.
    :param acquire: returns a Deferred that fires when a connection may be
        opened (the client's :class:`~glimpse.consul._budget.ConnectionBudget`);
        by default at once.
    :param release: called when a connection closes, or its opening failed.
    :param idle_timeout: seconds without a read after which the connection
        is closed (its budget slot given back), or ``None`` to keep it.
    """

    def __init__(self, endpoint: IStreamClientEndpoint, clock: IReactorTime, host: str,
                 headers: dict[str, str] | None = None, depth: int = 64,
                 timeout: float = 10.0,
                 acquire: Callable[[], Deferred[None]] = lambda: succeed(None),
                 release: Callable[[], object] = lambda: None,
                 idle_timeout: float | None = None) -> None:
        self._endpoint = endpoint
        self._idle_timeout = idle_timeout
        self._idle: IDelayedCall | None = None
        self._flush: IDelayedCall | None = None
        self._clock = clock
        self._prefix = (f"Host: {host}\r\nAccept: application/json\r\n" + "".join(
            f"{name}: {value}\r\n" for name, value in (headers or {}).items())).encode()
        self._depth = depth
        self._timeout = timeout
        self._acquire = acquire
        self._release = release
        self._queued: deque[_Read] = deque()
        self._sent: deque[_Read] = deque()
        self._connection: _Connection | None = None
        self._connecting: Deferred[None] | None = None
        self._opening = False
        self._timer: IDelayedCall | None = None
        self._closed = False

    @property
    def in_flight(self) -> int:
        """
        Reads written or waiting to be.
        """
        return len(self._queued) + len(self._sent)

    def get(self, path: str) -> Deferred[RawAnswer]:
        """
        Read one path.

        :param path: the path and query, e.g. ``/v1/health/service/web?cached``.
        :return: a Deferred firing with the :class:`RawAnswer`, or failing
            with :class:`~glimpse.consul.ConsulUnavailable`.  Cancelling it
            leaves the request in the pipe (its answer is dropped).
        """
        if self._closed:
            return fail(ConsulUnavailable(path, "Glimpse is stopping"))
        request = b"GET " + path.encode("ascii") + b" HTTP/1.1\r\n" + self._prefix + b"\r\n"
        read = _Read(request, Deferred())
        self._queued.append(read)
        # Written at the end of this turn of the reactor, with every other
        # read asked for meanwhile: one send for many, not one each.
        if self._flush is None:
            self._flush = self._clock.callLater(0, self._flushed)
        return read.deferred

    def _flushed(self) -> None:
        self._flush = None
        self._pump()

    def close(self) -> None:
        """
        Fail every read under way and close the connection: Glimpse is
        stopping.
        """
        self._closed = True
        self._stop_idle()
        if self._flush is not None and self._flush.active():
            self._flush.cancel()
        self._flush = None
        self._fail_all("Glimpse is stopping")
        if self._connecting is not None:
            self._connecting.cancel()
        if self._connection is not None:
            self._connection.abort()

    def _pump(self) -> None:
        self._stop_idle()
        if self._connection is None:
            if not self._opening and self._queued:
                self._connect()
            return
        writes = []
        now = self._clock.seconds()
        while self._queued and len(self._sent) < self._depth:
            read = self._queued.popleft()
            if read.deferred.called:
                continue  # cancelled before it was written
            read.deadline = now + self._timeout
            self._sent.append(read)
            writes.append(read.request)
        if writes:
            self._connection.send(writes)
            self._arm()
        elif not self._sent and not self._queued and self._idle_timeout is not None:
            self._idle = self._clock.callLater(self._idle_timeout, self._close_idle)

    def _stop_idle(self) -> None:
        if self._idle is not None and self._idle.active():
            self._idle.cancel()
        self._idle = None

    def _close_idle(self) -> None:
        self._idle = None
        connection = self._connection
        if connection is not None and not self._sent and not self._queued:
            self._lost(connection, "idle")
            connection.abort()

    def _connect(self) -> None:
        opened = False

        def connect(_: object) -> Deferred[Any]:
            nonlocal opened
            opened = True
            return self._endpoint.connect(Factory.forProtocol(lambda: _Connection(self)))

        def connected(result: object) -> None:
            self._opening, self._connecting = False, None

        def failed(failure: Failure) -> None:
            self._opening, self._connecting = False, None
            if opened:
                self._release()
            if not failure.check(CancelledError):
                self._fail_all(f"cannot connect: {failure.getErrorMessage()}")

        # Set before the chain runs: a slot and an endpoint may both answer
        # at once (then ``connected`` clears it again at once).
        self._opening = True
        d = self._connecting = self._acquire()
        d.addCallback(connect).addCallbacks(connected, failed)

    def _connected(self, connection: _Connection) -> None:
        self._connection = connection
        if self._closed:
            connection.abort()
            return
        self._pump()

    def _answered(self, answers: list[RawAnswer]) -> None:
        for answer in answers:
            if not self._sent:
                break  # an answer to nothing: the connection is closing
            read = self._sent.popleft()
            if not read.deferred.called:
                read.deferred.callback(answer)
        # Once per batch of answers: a timer and a send, not one per answer.
        self._arm()
        self._pump()

    def _lost(self, connection: _Connection, why: str) -> None:
        if connection is not self._connection:
            return
        self._connection = None
        self._release()
        # What was written gets no answer now; what was not is sent on the
        # next connection.
        sent, self._sent = self._sent, deque()
        for read in sent:
            if not read.deferred.called:
                read.deferred.errback(ConsulUnavailable("pipelined read", why))
        self._arm()
        if not self._closed:
            self._pump()

    def _fail_all(self, why: str) -> None:
        reads = list(self._sent) + list(self._queued)
        self._sent.clear()
        self._queued.clear()
        for read in reads:
            if not read.deferred.called:
                read.deferred.errback(ConsulUnavailable("pipelined read", why))
        self._arm()

    def _arm(self) -> None:
        # One timer, for the oldest request written (answers come in order),
        # made only when none is pending: when it fires early (the oldest
        # was answered meanwhile) it is set again for the new oldest, so a
        # steady flow of reads does not make and cancel a timer each.
        if self._sent and (self._timer is None or not self._timer.active()):
            delay = max(0.0, self._sent[0].deadline - self._clock.seconds())
            self._timer = self._clock.callLater(delay, self._expired)

    def _expired(self) -> None:
        self._timer = None
        connection = self._connection
        if not self._sent or connection is None:
            return
        if self._sent[0].deadline > self._clock.seconds():
            self._arm()
            return
        self._lost(connection, f"no answer within {self._timeout:g}s")
        connection.abort()


class PipelinePool:
    """
    The pipelined connections of one zone: a read goes on the first
    connection with fewer than ``depth`` reads under way; when every open
    one is that full, another opens, up to ``size``.  Connections left
    idle close (:class:`PipelinedReader`'s ``idle_timeout``), so a burst's
    extra connections are given back to the budget once it is over.

    :param make: makes one :class:`PipelinedReader` (not yet connected).
    :param size: the most connections.
    :param depth: reads under way on one connection before the next is used.
    """

    def __init__(self, make: Callable[[], PipelinedReader], size: int = 4,
                 depth: int = 16) -> None:
        if size < 1 or depth < 1:
            raise ValueError(f"a pool needs a size and a depth, not {size} and {depth}")
        self._make = make
        self._size = size
        self._depth = depth
        self._readers: list[PipelinedReader] = []

    @property
    def in_flight(self) -> int:
        """
        Reads under way or waiting, every connection together.
        """
        return sum(reader.in_flight for reader in self._readers)

    def get(self, path: str) -> Deferred[RawAnswer]:
        """
        Read one path (see :meth:`PipelinedReader.get`).
        """
        for reader in self._readers:
            if reader.in_flight < self._depth:
                return reader.get(path)
        if len(self._readers) < self._size:
            self._readers.append(self._make())
            return self._readers[-1].get(path)
        return min(self._readers, key=lambda reader: reader.in_flight).get(path)

    def close(self) -> None:
        """
        Close every connection and fail every read under way.
        """
        for reader in self._readers:
            reader.close()
