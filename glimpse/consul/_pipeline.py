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

Only what Consul's answers need is parsed: a status line, headers, and a
body sized by ``Content-Length`` or sent chunked.  Anything else, a header
block or body over its limit, a request that outlives its deadline, or the
connection going away, fails every read under way with
:class:`~glimpse.consul.ConsulUnavailable`; the next read connects again.
"""

from __future__ import annotations

import re
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

#: The most bytes of a status line and headers.
MAX_HEAD = 64 * 1024
#: The most bytes of one body (a job of thousands of instances fits).
MAX_BODY = 64 * 1024 * 1024


@attrs.frozen
class RawAnswer:
    """
    One HTTP answer, undecoded.

    :ivar status: the status code.
    :ivar headers: the headers, names lower-cased (the last of repeated ones).
    :ivar body: the body.
    """

    status: int
    headers: dict[bytes, bytes]
    body: bytes


class BadAnswer(Exception):
    """
    The agent's bytes are not an HTTP answer this parser reads.
    """


class AnswerParser:
    """
    Incremental parser of HTTP/1.1 answers, in the order they come.  Pure:
    give it bytes, take what it completed.

    :ivar keep_alive: ``False`` once an answer said ``Connection: close``.
    """

    def __init__(self) -> None:
        self._buffer = bytearray()
        self._head: tuple[int, dict[bytes, bytes]] | None = None
        self._chunks: list[bytes] = []
        self._chunked_size = 0
        self.keep_alive = True

    def feed(self, data: bytes) -> list[RawAnswer]:
        """
        Take more bytes.

        :param data: what the connection received.
        :return: the answers these bytes completed, in order.
        :raises BadAnswer: for bytes that cannot be an answer.
        """
        self._buffer += data
        done: list[RawAnswer] = []
        while True:
            answer = self._next()
            if answer is None:
                return done
            done.append(answer)

    def _next(self) -> RawAnswer | None:
        if self._head is None:
            end = self._buffer.find(b"\r\n\r\n")
            if end < 0:
                if len(self._buffer) > MAX_HEAD:
                    raise BadAnswer("a header block over 64 KiB")
                return None
            self._head = _read_head(bytes(self._buffer[:end]))
            del self._buffer[:end + 4]
        status, headers = self._head
        if headers.get(b"connection", b"").lower() == b"close":
            self.keep_alive = False
        if b"chunked" in headers.get(b"transfer-encoding", b"").lower():
            body = self._chunked()
        else:
            body = self._sized(headers)
        if body is None:
            return None
        self._head = None
        return RawAnswer(status, headers, body)

    def _sized(self, headers: dict[bytes, bytes]) -> bytes | None:
        try:
            length = int(headers.get(b"content-length", b"0"))
        except ValueError:
            raise BadAnswer("a Content-Length that is not a number") from None
        if not 0 <= length <= MAX_BODY:
            raise BadAnswer(f"a body of {length} bytes")
        if len(self._buffer) < length:
            return None
        body = bytes(self._buffer[:length])
        del self._buffer[:length]
        return body

    def _chunked(self) -> bytes | None:
        while True:
            line_end = self._buffer.find(b"\r\n")
            if line_end < 0:
                return None
            try:
                size = int(bytes(self._buffer[:line_end]).split(b";")[0], 16)
            except ValueError:
                raise BadAnswer("a chunk size that is not a number") from None
            if size == 0:
                # The last chunk, then trailers (if any) up to an empty line.
                end = self._buffer.find(b"\r\n\r\n", line_end)
                if end < 0:
                    return None
                del self._buffer[:end + 4]
                body, self._chunks, self._chunked_size = b"".join(self._chunks), [], 0
                return body
            self._chunked_size += size
            if self._chunked_size > MAX_BODY:
                raise BadAnswer("a chunked body over 64 MiB")
            if len(self._buffer) < line_end + 2 + size + 2:
                self._chunked_size -= size
                return None
            self._chunks.append(bytes(self._buffer[line_end + 2:line_end + 2 + size]))
            del self._buffer[:line_end + 2 + size + 2]


_HEADER = re.compile(rb"([^:\r\n]+):[ \t]*([^\r\n]*?)[ \t]*(?:\r\n|$)")


def _read_head(head: bytes) -> tuple[int, dict[bytes, bytes]]:
    status_end = head.find(b"\r\n")
    status = head if status_end < 0 else head[:status_end]
    parts = status.split(b" ", 2)
    if len(parts) < 2 or not parts[0].startswith(b"HTTP/1.") or not parts[1].isdigit():
        raise BadAnswer(f"not a status line: {status[:80]!r}")
    if status_end < 0:
        return int(parts[1]), {}
    rest = head[status_end + 2:]
    # One pass in C over every header (a read costs tens of microseconds,
    # and there are thousands a second): every line must be a header.
    found = _HEADER.findall(rest)
    if rest.count(b"\r\n") + 1 != len(found):
        for line in rest.split(b"\r\n"):
            if b":" not in line:
                raise BadAnswer(f"not a header: {line[:80]!r}")
    return int(parts[1]), {name.strip().lower(): value for name, value in found}


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
        for answer in answers:
            self._reader._answered(answer)
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
    """

    def __init__(self, endpoint: IStreamClientEndpoint, clock: IReactorTime, host: str,
                 headers: dict[str, str] | None = None, depth: int = 64,
                 timeout: float = 10.0,
                 acquire: Callable[[], Deferred[None]] = lambda: succeed(None),
                 release: Callable[[], object] = lambda: None) -> None:
        self._endpoint = endpoint
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
        self._pump()
        return read.deferred

    def close(self) -> None:
        """
        Fail every read under way and close the connection: Glimpse is
        stopping.
        """
        self._closed = True
        self._fail_all("Glimpse is stopping")
        if self._connecting is not None:
            self._connecting.cancel()
        if self._connection is not None:
            self._connection.abort()

    def _pump(self) -> None:
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

    def _answered(self, answer: RawAnswer) -> None:
        if not self._sent:
            return  # an answer to nothing: the connection is closing
        read = self._sent.popleft()
        if not read.deferred.called:
            read.deferred.callback(answer)
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
