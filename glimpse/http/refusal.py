"""
Answers that end a connection: a whole HTTP response carrying a JSON error,
and the connection that lingers after it.

A server that answers and closes at once while the client is still sending
makes the kernel reset the connection, and the client may then lose the
answer it was sent.  So the connection *lingers*: it stops sending (a TCP
FIN after the answer), reads and throws away what the client still sends,
and closes once the client's request is in, the client hangs up, or
:data:`LINGER` seconds pass.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any

from twisted.internet.interfaces import IHalfCloseableDescriptor, ISSLTransport
from twisted.internet.protocol import Protocol
from twisted.web.http import RESPONSES

from glimpse.http._json import encode_json, error_body

if TYPE_CHECKING:
    from twisted.internet.interfaces import IDelayedCall, IReactorTime, ITransport
    from twisted.python.failure import Failure

#: Seconds a connection answered with one of these errors keeps reading
#: (and discarding) what the client still sends before it is closed, so
#: that the client reads the answer rather than a connection reset.
LINGER = 2.0

#: Seconds a connection being closed may take to send its last bytes
#: before it is cut (a client that does not read must not keep it).
ABORT_AFTER = 2.0


def error_response(code: int, error: str, detail: Any,
                   headers: Iterable[tuple[bytes, bytes]] = ()) -> bytes:
    """
    A whole HTTP/1.1 response carrying a JSON error, for a connection that
    is closed after it.

    :param code: the HTTP status.
    :param error: what was wrong.
    :param detail: how to fix it.
    :param headers: more ``(name, value)`` headers, e.g. ``Retry-After``.
    """
    body = encode_json(error_body(error, detail))
    lines = [b"HTTP/1.1 %d %s" % (code, RESPONSES.get(code, b"Error")),
             b"Content-Type: application/json",
             b"Content-Length: %d" % len(body),
             b"Connection: close"]
    lines.extend(name + b": " + value for name, value in headers)
    return b"\r\n".join(lines) + b"\r\n\r\n" + body


def half_close(transport: ITransport) -> None:
    """
    Stop sending on ``transport`` once what is written is sent, and keep
    reading: a TCP connection sends its FIN.  A TLS transport claims the
    interfaces of the socket under it, but shutting that down would cut
    TLS: it is left whole (and closed after the linger).
    """
    if IHalfCloseableDescriptor.providedBy(transport) and not ISSLTransport.providedBy(
            transport):
        transport.loseWriteConnection()  # type: ignore[attr-defined]


class Refusal(Protocol):
    """
    A connection over a cap: answered at once with ``response``, then
    closed once the client's request is in (or it hangs up), or after
    ``linger`` seconds.

    :param response: the whole response (see :func:`error_response`).
    :param clock: ``IReactorTime``.
    :param linger: seconds to keep reading (and throwing away) what the
        client sends, so that it reads the answer rather than a reset; 0
        to close as soon as the answer is written.
    :param done: called once the connection is gone.
    """

    def __init__(self, response: bytes, clock: IReactorTime, linger: float,
                 done: Callable[[], None]) -> None:
        self._response = response
        self._clock = clock
        self._linger = linger
        self._done = done
        self._timer: IDelayedCall | None = None
        self._tail = b""

    def connectionMade(self) -> None:
        """
        Answer, and stop sending.
        """
        assert self.transport is not None
        self.transport.write(self._response)
        half_close(self.transport)
        self._timer = self._clock.callLater(
            self._linger or ABORT_AFTER, self.transport.abortConnection)  # type: ignore[attr-defined]
        if not self._linger:
            self.transport.loseConnection()

    def dataReceived(self, data: bytes) -> None:
        """
        Whatever the client sends is thrown away; once its request's
        headers are in, nothing more is expected: close.
        """
        seen, self._tail = self._tail + data, (self._tail + data)[-3:]
        if b"\r\n\r\n" in seen and self.transport is not None:
            self.transport.loseConnection()

    def connectionLost(self, reason: Failure | None = None) -> None:
        """
        Closed: by the client, by us, or by the linger's end.
        """
        if self._timer is not None and self._timer.active():
            self._timer.cancel()
        done, self._done = self._done, lambda: None
        done()
