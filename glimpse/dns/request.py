"""
What one DNS request carries from its arrival to its response, and what
the server answers through.  The server keeps this beside twisted.names'
:class:`twisted.names.dns.Message` instead of setting attributes on it.
"""

from __future__ import annotations

from typing import Protocol

import attrs
from twisted.names import dns

from glimpse.dns.wire import OPTHeader

#: A UDP client as the socket module gives it: ``(host, port)`` for IPv4,
#: ``(host, port, flowinfo, scope_id)`` for IPv6.
ClientAddress = tuple[str, int] | tuple[str, int, int, int]


class Responder(Protocol):
    """
    What the server answers a request through: the UDP or the TCP protocol
    (:class:`glimpse.dns.protocols.GlimpseDatagramProtocol`,
    :class:`glimpse.dns.stream.GlimpseStreamProtocol`).
    """

    #: Encode a response larger than this without its additional records
    #: (see :func:`glimpse.dns.wire.encode`), or ``None`` never to.
    reduce_to: int | None

    def send_response(self, context: RequestContext, whole: bytes, short: bytes) -> None:
        """
        Send the response to ``context``'s request: ``whole``, or ``short`` (the
        same truncated, TC=1) when ``whole`` does not fit.
        """


@attrs.define(eq=False)
class RequestContext:
    """
    One request on its way through the server.

    :ivar protocol: the :class:`Responder` it came through, which answers it.
    :ivar address: the client (:data:`ClientAddress`), or ``None`` over TCP.
    :ivar received_ns: :func:`time.perf_counter_ns` when it arrived; its
        response's latency is counted from then.  ``None``: not timed.
    :ivar message: the decoded request, or ``None`` when it did not decode
        (then only a bare header goes back).
    :ivar opt: its OPT record, split off ``message``, or ``None``.
    :ivar asked: the question's name as it was asked, case kept, once the
        lower-cased question has gone to the resolver (its answer puts the
        case back); ``None`` before.
    :ivar fast_key: for a plain query the fast path missed, its key there
        (:class:`glimpse.dns.fastpath.FastDatagramProtocol`), under which the
        response is kept; else ``None``.
    :ivar name_end: with ``fast_key``, the offset of the question name's
        final zero byte in the message.
    :ivar panic: its answer was given in panic (every instance of a job
        served), so that the fast path counts the hits of the answer it keeps.
    :ivar order: the order of the answer's records the query got
        (:mod:`glimpse.dns.rotation`), from 0 to ``orders`` - 1.
    :ivar orders: how many orders the answer has (1: it does not turn).
    :ivar wholes: with ``fast_key``, when the server encoded the answer in
        every order at once, each (``wholes[order]`` is the one sent);
        else ``None``.
    """

    protocol: Responder
    address: ClientAddress | None
    received_ns: int | None
    message: dns.Message | None = None
    opt: OPTHeader | None = None
    asked: bytes | None = None
    fast_key: bytes | None = None
    name_end: int = 0
    panic: bool = False
    order: int = 0
    orders: int = 1
    wholes: tuple[bytes, ...] | None = None
