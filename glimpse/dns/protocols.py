"""
The protocols that carry DNS for :class:`glimpse.dns.server.GlimpseServerFactory`:
UDP (every datagram to the factory, each response packed to the client's
size) and TCP (length-prefixed messages, answers up to 65,535 bytes).  The
fast path (:mod:`glimpse.dns.fastpath`) is the UDP protocol with pre-encoded
answers in front.
"""

from __future__ import annotations

from time import perf_counter_ns
from typing import TYPE_CHECKING, Protocol, cast

from twisted.internet.protocol import DatagramProtocol
from twisted.logger import Logger
from twisted.protocols.basic import Int16StringReceiver
from twisted.protocols.policies import TimeoutMixin

from glimpse.dns.request import ClientAddress, RequestContext, Responder
from glimpse.dns.wire import TCP_SIZE, udp_limit

if TYPE_CHECKING:
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
        Answer one message through ``protocol``.
        """


# What the protocols use of their transports, which Twisted's interfaces
# leave out: IUDPTransport.write is typed for (host, port) alone, but the
# port sends to an IPv6 client's 4-tuple too; ITransport has no
# ``disconnected``, which every TCP transport has.
class _DatagramTransport(Protocol):
    def write(self, packet: bytes, addr: ClientAddress | None) -> None: ...


class _StreamTransport(Protocol):
    disconnected: bool


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


class GlimpseStreamProtocol(Int16StringReceiver, TimeoutMixin):
    """
    DNS over TCP: length-prefixed messages, answers up to 65,535 bytes, the
    connection closed after ``timeout`` idle seconds.

    :param controller: the :class:`glimpse.dns.server.GlimpseServerFactory`
        that answers.
    :param timeout: seconds an idle connection stays open.
    """

    MAX_LENGTH = TCP_SIZE
    reduce_to: int | None = TCP_SIZE

    def __init__(self, controller: Controller, timeout: float) -> None:
        self.controller = controller
        self._timeout = timeout

    def connectionMade(self) -> None:
        """
        Start the idle timer.
        """
        self.setTimeout(self._timeout)

    def stringReceived(self, data: bytes) -> None:
        """
        Answer one message.

        :param data: the message, without its length prefix.
        """
        self.resetTimeout()
        self.controller.bytes_received(data, self, None, perf_counter_ns())

    def send_response(self, context: RequestContext, whole: bytes, short: bytes) -> None:
        """
        Send a response whole, without its additional records when they
        would take it over 65,535 bytes; only answers that alone do not
        fit go truncated, with TC=1.

        :param context: the request answered.
        :param whole: the encoded response (:func:`glimpse.dns.wire.encode`
            already left the additional records out if they did not fit).
        :param short: the same truncated.
        """
        transport = cast("_StreamTransport | None", self.transport)
        if transport is None or transport.disconnected:
            return
        self.sendString(whole if len(whole) <= TCP_SIZE else short)

    def timeoutConnection(self) -> None:
        """
        Close an idle connection.
        """
        assert self.transport is not None
        self.transport.loseConnection()
