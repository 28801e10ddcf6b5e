"""
What the protocols that carry DNS ask of the server that answers
(:class:`Controller`: :class:`glimpse.dns.server.GlimpseServerFactory`), and
the plain UDP protocol (every datagram to the server, each response packed
to the client's size).  The fast path (:mod:`glimpse.dns.fastpath`) is the
UDP protocol with pre-encoded answers in front; TCP is
:mod:`glimpse.dns.stream`.
"""

from __future__ import annotations

from time import perf_counter_ns
from typing import TYPE_CHECKING, Protocol, cast

from twisted.internet.protocol import DatagramProtocol
from twisted.logger import Logger

from glimpse.dns.request import ClientAddress, RequestContext, Responder
from glimpse.dns.wire import udp_limit

if TYPE_CHECKING:
    from twisted.internet.defer import Deferred

    from glimpse.dns.wire import DNSStats


class Controller(Protocol):
    """
    What the protocols ask of the server that answers
    (:class:`glimpse.dns.server.GlimpseServerFactory`).
    """

    stats: DNSStats

    def bytes_received(self, data: bytes, protocol: Responder, address: ClientAddress | None,
                       received_ns: int) -> None:
        """
        Answer one message through ``protocol`` (FORMERR when it does not
        decode).
        """

    def message_received(self, context: RequestContext) -> Deferred[None] | None:
        """
        Answer a decoded request; a :class:`Deferred` that fires once it is
        answered (it may have already), or ``None`` when it gets no answer.
        """


# What the protocols use of their transports, which Twisted's interfaces
# leaves out: IUDPTransport.write is typed for (host, port) alone, but the
# port sends to an IPv6 client's 4-tuple too.
class _DatagramTransport(Protocol):
    def write(self, packet: bytes, addr: ClientAddress | None) -> None: ...


class GlimpseDatagramProtocol(DatagramProtocol):
    """
    DNS over UDP: every datagram goes to the factory, and each response is
    sent whole when it fits the client's size, else truncated with TC=1.
    Nothing a client sends can stop the next query from being answered.

    :param controller: the :class:`glimpse.dns.server.GlimpseServerFactory`
        that answers.
    """

    log = Logger()
    #: UDP never drops additional records on its own: TC=1 when anything
    #: does not fit (see :func:`glimpse.dns.wire.encode`).
    reduce_to: int | None = None

    def __init__(self, controller: Controller) -> None:
        self.controller = controller

    def datagramReceived(self, data: bytes, address: ClientAddress) -> None:
        """
        Answer one datagram.

        :param data: the datagram.
        :param address: its sender.
        """
        try:
            self.controller.bytes_received(data, self, address, perf_counter_ns())
        except Exception:
            self.log.failure("Handling a DNS datagram failed")

    def send_response(self, context: RequestContext, whole: bytes, short: bytes) -> None:
        """
        Send a response packed to what the client can take.

        :param context: the request answered (its OPT record says the
            client's size).
        :param whole: the encoded response.
        :param short: the same truncated (header, question, OPT, TC=1).
        """
        if len(whole) > udp_limit(context.opt):
            self.controller.stats.truncated += 1
            whole = short
        cast(_DatagramTransport, self.transport).write(whole, context.address)
