"""
The HTTP API's site: twisted.web's ``Site`` with the limits of
:class:`glimpse.http.limits.HTTPLimits` applied to every connection.

twisted.web alone holds a client for as long as it trickles bytes (its idle
timeout restarts with each one), reads a whole request body (to a temporary
file above 100 KB) before any resource sees its size, and accepts
connections until the process runs out of file descriptors.  Here:

- a connection must send its request line and headers within
  ``header_timeout`` of connecting (or of the first byte of its next
  request), however its bytes trickle in, and its body within
  ``body_timeout`` after that; a kept-alive connection idle for
  ``idle_timeout`` is closed;
- a ``Content-Length`` over ``max_body`` is answered 413 as soon as the
  headers are in, before any of the body is read (and without
  ``100 Continue``), and a chunked body is cut with a 413 when it passes
  ``max_body``;
- a connection over ``max_conns`` (503) or ``max_conns_per_client`` (429)
  is answered at once with a JSON error and ``Retry-After``, then closed.

Every answer of these is a JSON error (``{"error", "detail"}``) sent with
``Connection: close`` (:mod:`glimpse.http.refusal`).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from twisted.web.http import HTTPChannel
from twisted.web.server import Request, Site

from glimpse.http.limits import ClientSlots, HTTPLimits, RefusalLog, client_key
from glimpse.http.refusal import ABORT_AFTER, LINGER, Refusal, error_response, half_close

if TYPE_CHECKING:
    from twisted.internet.interfaces import IAddress, IDelayedCall, IReactorTime
    from twisted.internet.protocol import Protocol
    from twisted.python.failure import Failure
    from twisted.web.resource import IResource

class LimitedRequest(Request):
    """
    A request whose body is counted as it arrives, against the site's
    ``max_body``.
    """

    channel: LimitedChannel

    def handleContentChunk(self, data: bytes) -> None:
        """
        Keep a piece of the body, unless it takes the body past the limit.
        """
        if self.channel.body_chunk(len(data)):
            super().handleContentChunk(data)


class LimitedChannel(HTTPChannel):
    """
    One HTTP connection, held to its site's :class:`HTTPLimits` by three
    deadlines, none of which data pushes back: the headers' (from
    connecting, or from the first byte of a next request), the body's
    (from the end of the headers), and the idle one (from the end of a
    response).  twisted.web's own idle timeout, which every byte restarts,
    is not used.

    Setting a deadline costs no timer: one timer per connection wakes at
    least as often as the shortest of the three limits and checks the
    deadline set, so that a kept-alive connection's requests do not each
    add and cancel timers of the reactor.

    :param site: the :class:`LimitedSite`.
    :param release: called once, when the connection is gone, to give
        back its slots.
    """

    requestFactory = LimitedRequest

    def __init__(self, site: LimitedSite, release: Callable[[], None]) -> None:
        super().__init__()
        self.site = site
        self.factory = site
        limits = self._limits = site.limits
        self._clock = site.reactor
        self._release = release
        self._timer: IDelayedCall | None = None
        self._tick = min(limits.header_timeout, limits.body_timeout, limits.idle_timeout)
        #: The deadline set ("headers", "body", "idle", or None) and when.
        self._deadline_kind: str | None = None
        self._due = 0.0
        self._abort: IDelayedCall | None = None
        #: Waiting for a request's headers (not handling one, not in a body).
        self._awaiting_headers = True
        #: Some of the request awaited has arrived (for the deadline's answer).
        self._started = False
        self._body_bytes = 0
        #: Answered with an error: what arrives now is thrown away.
        self._ending = False

    def callLater(self, period: float, func: Callable[..., object],
                  *args: object) -> IDelayedCall:
        """
        Call ``func`` after ``period`` seconds on the site's reactor.
        """
        return self._clock.callLater(period, func, *args)

    def _arm(self, kind: str) -> None:
        limits = self._limits
        if kind == "headers":
            seconds = limits.header_timeout
        elif kind == "body":
            seconds = limits.body_timeout
        else:
            seconds = limits.idle_timeout
        self._deadline_kind = kind
        self._due = self._clock.seconds() + seconds
        # A timer running wakes within _tick, no later than this deadline.
        if self._timer is None:
            self._timer = self.callLater(min(seconds, self._tick), self._check)

    def _disarm(self) -> None:
        # The timer, if any, finds nothing set and ends.
        self._deadline_kind = None

    def _check(self) -> None:
        self._timer = None
        kind = self._deadline_kind
        if kind is None:
            return
        left = self._due - self._clock.seconds()
        if left > 0:
            self._timer = self.callLater(min(left, self._tick), self._check)
            return
        self._deadline_kind = None
        if kind == "headers":
            self._headers_late()
        elif kind == "body":
            self._body_late()
        else:
            self._close()

    def connectionMade(self) -> None:
        """
        The headers' deadline starts now: a connection that sends nothing
        is closed at it too.
        """
        super().connectionMade()
        self._arm("headers")

    def dataReceived(self, data: bytes) -> None:
        """
        Bytes from the client: the first of a request starts its headers'
        deadline; after an error answer they are thrown away.
        """
        if self._ending:
            return
        if self._awaiting_headers:
            self._started = True
            if self._deadline_kind != "headers":
                self._arm("headers")
        super().dataReceived(data)

    def lineReceived(self, line: bytes) -> None:
        """
        A line of a request, unless an error answer ended it (the bytes
        already received are parsed on after it otherwise).
        """
        if not self._ending:
            super().lineReceived(line)

    def rawDataReceived(self, data: bytes) -> None:
        """
        A body (or pipelined requests), unless an error answer ended it.
        """
        if not self._ending:
            super().rawDataReceived(data)

    def allHeadersReceived(self) -> None:
        """
        Every header is in: a ``Content-Length`` over the limit is answered
        413 now, before any of the body is read; otherwise the body's
        deadline starts.
        """
        self._disarm()
        self._awaiting_headers = False
        self._body_bytes = 0
        if self.length is not None and self.length > self._limits.max_body:
            self._too_large(f"its Content-Length is {self.length} bytes")
            return
        super().allHeadersReceived()
        if self.length != 0:
            self._arm("body")

    def body_chunk(self, size: int) -> bool:
        """
        ``size`` more bytes of the body arrived.

        :return: ``False`` when they are to be thrown away: they take the
            body past the limit (which is then answered 413), or the
            request was already refused.
        """
        if self._ending:
            return False
        self._body_bytes += size
        if self._body_bytes > self._limits.max_body:
            self._too_large("its chunked body went past that")
            return False
        return True

    def allContentReceived(self) -> None:
        """
        The whole request is in: handle it, unless it was refused.
        """
        if self._ending:
            return
        self._disarm()
        super().allContentReceived()

    def requestDone(self, request: Request) -> None:
        """
        A response is finished: the connection waits for the next request
        (the idle deadline), or is closed.  Bytes of a next request that
        came while this one was handled are passed on now (by twisted.web,
        to :meth:`dataReceived`), which starts its headers' deadline.
        """
        self._awaiting_headers = True
        self._started = False
        self._arm("idle")
        super().requestDone(request)

    def _respondToBadRequestAndDisconnect(self) -> None:
        # twisted.web's answer to a request it cannot parse (a bad request
        # line or header, headers over 16 KB): a 400 with no body.  A JSON
        # one here, like every other error.
        self._answer_and_end(error_response(
            400, "malformed HTTP request", "send HTTP/1.1: a request line, headers of "
            "'Name: value' (at most 16 KB in all) and an empty line"), linger=False)

    def connectionLost(self, reason: Failure | None = None) -> None:
        """
        Gone: cancel every timer and give the slots back.
        """
        self._disarm()
        if self._timer is not None and self._timer.active():
            self._timer.cancel()
        self._timer = None
        if self._abort is not None and self._abort.active():
            self._abort.cancel()
        self._abort = None
        release, self._release = self._release, lambda: None
        release()
        super().connectionLost(reason)

    # Ending a connection.

    def _headers_late(self) -> None:
        if self._started:
            self._answer_and_end(error_response(
                408, f"the request's headers took more than {self._limits.header_timeout:g}s",
                "send the request line and every header at once; Glimpse closes a "
                f"connection whose headers are not in within {self._limits.header_timeout:g}s "
                "(--http-header-timeout)"), linger=False)
        else:
            # Connected and sent nothing: nothing to answer.
            self._close()

    def _body_late(self) -> None:
        self._answer_and_end(error_response(
            408, f"the request's body took more than {self._limits.body_timeout:g}s",
            "send the body at once after the headers; Glimpse closes a connection whose "
            f"body is not in within {self._limits.body_timeout:g}s (--http-body-timeout)"),
            linger=False)

    def _too_large(self, why: str) -> None:
        self._answer_and_end(error_response(
            413, f"the request body is too large: {why}",
            f"send at most {self._limits.max_body} bytes (--http-max-body)"), linger=True)

    def _answer_and_end(self, response: bytes, linger: bool) -> None:
        """
        Send ``response`` (no request of this connection is being answered
        now: twisted.web handles one at a time) and end the connection:
        after :data:`LINGER` when ``linger``, else at once.
        """
        self._disarm()
        self._ending = True
        self._dataBuffer = []
        assert self.transport is not None
        self.transport.write(response)
        if linger:
            half_close(self.transport)
            self._abort = self.callLater(LINGER, self._cut)
        else:
            self._close()

    def _close(self) -> None:
        self._disarm()
        self._ending = True
        # Set first: a transport may report the connection lost at once,
        # which cancels it.
        if self._abort is None:
            self._abort = self.callLater(ABORT_AFTER, self._cut)
        self.loseConnection()

    def _cut(self) -> None:
        self._abort = None
        if self.transport is not None:
            self.transport.abortConnection()  # type: ignore[attr-defined]


class LimitedSite(Site):
    """
    The HTTP API's ``Site``: connections held to ``limits``, no access log
    (Glimpse logs state changes, not requests).

    :param resource: the root resource.
    :param limits: the :class:`HTTPLimits`.
    :param reactor: ``IReactorTime``, for every timeout.
    :ivar connections: the connections open, per client.
    """

    requestFactory = LimitedRequest

    def __init__(self, resource: IResource, limits: HTTPLimits, reactor: IReactorTime) -> None:
        # timeout=None: twisted.web's idle timeout, which every byte
        # restarts, is off; the channel keeps its own deadlines.
        super().__init__(resource, reactor=reactor, timeout=None)
        self.limits = limits
        self.connections = ClientSlots(limits.max_conns_per_client)
        #: Refused connections still open (answered, lingering).
        self.refusing = 0
        self._refused_total = RefusalLog(
            reactor, f"connections over --http-max-conns={limits.max_conns} with 503")
        self._refused_client = RefusalLog(
            reactor, "connections over --http-max-conns-per-client="
            f"{limits.max_conns_per_client} with 429")

    def log(self, request: object) -> None:
        """
        Log nothing.
        """

    def buildProtocol(self, addr: IAddress) -> Protocol:  # type: ignore[override]
        """
        A :class:`LimitedChannel` for a new connection, or a
        :class:`Refusal` when it is over a cap.
        """
        client = client_key(addr)
        limits = self.limits
        retry = (b"Retry-After", b"%d" % limits.retry_after)
        if self.connections.total() >= limits.max_conns:
            self._refused_total.refused(client)
            return self._refusal(error_response(
                503, f"Glimpse has {limits.max_conns} HTTP connections open, its limit",
                f"retry after {limits.retry_after}s; connections slow to send their request "
                "are closed by then (an operator can raise --http-max-conns, and the "
                "open-file limit with it)", [retry]))
        if not self.connections.take(client):
            self._refused_client.refused(client)
            return self._refusal(error_response(
                429, f"too many connections from {client}: {limits.max_conns_per_client} "
                "are open", f"retry after {limits.retry_after}s; reuse connections "
                "(keep-alive) rather than opening more, close the streams you no longer "
                "read (an operator can raise --http-max-conns-per-client)", [retry]))
        return LimitedChannel(self, lambda: self.connections.give_back(client))

    def _refusal(self, response: bytes) -> Refusal:
        # Refused connections linger (see Refusal) but take file
        # descriptors too: past a quarter of the connection cap, a flood
        # of them is closed as soon as answered.
        self.refusing += 1
        linger = LINGER if self.refusing <= max(1, self.limits.max_conns // 4) else 0.0

        def done() -> None:
            self.refusing -= 1

        return Refusal(response, self.reactor, linger, done)
