"""
The UDP port of the DNS server: Twisted's, with the read loop handed to
the fast path (:meth:`glimpse.dns.fastpath.FastDatagramProtocol.read_datagrams`).

Everything else (binding, the socket's options, stopping) stays Twisted's;
the service binds in ``privilegedStartService`` as ``UDPServer`` does, so
port 53 can be bound before twistd drops privileges.
"""

from __future__ import annotations

import socket
from typing import Any, Protocol

from twisted.application import service
from twisted.internet import udp
from twisted.internet.defer import Deferred
from twisted.logger import Logger

#: Datagrams read per readiness event before the reactor gets its turn:
#: about a millisecond of queries.
READ_BUDGET = 256


class DatagramReader(Protocol):
    """
    A datagram protocol that reads its own socket: what a
    :class:`FastUDPPort` hands its reads to (the fast path's
    :meth:`glimpse.dns.fastpath.FastDatagramProtocol.read_datagrams`).
    """

    def read_datagrams(self, sock: socket.socket, max_size: int, budget: int) -> None:
        """
        Read and answer up to ``budget`` datagrams waiting on ``sock``.

        :param sock: the port's non-blocking socket.
        :param max_size: the largest datagram read whole.
        :param budget: at most this many datagrams.
        """


class FastUDPPort(udp.Port):
    """
    A UDP port whose protocol reads its own datagrams: ``doRead`` calls the
    protocol's ``read_datagrams(socket, max_size, budget)``
    (:class:`DatagramReader`).
    """

    #: Where a failing read is logged.
    log = Logger()

    def doRead(self) -> None:
        """
        Let the protocol drain up to :data:`READ_BUDGET` datagrams.  Nothing it
        raises may reach the reactor, which would stop the port.
        """
        try:
            self.protocol.read_datagrams(self.socket, self.maxPacketSize, READ_BUDGET)
        except Exception:
            self.log.failure("Reading DNS datagrams failed")


class FastUDPServer(service.Service):
    """
    Listen on a :class:`FastUDPPort` while running.

    :param port: the UDP port number (0: any free one).
    :param protocol: a datagram protocol that is a :class:`DatagramReader`.
    :param interface: the address to bind.
    :param reactor: an :class:`twisted.internet.interfaces.IReactorFDSet`
        provider.
    """

    def __init__(self, port: int, protocol: DatagramReader, interface: str,
                 reactor: Any) -> None:
        self._args = (port, protocol, interface)
        self._reactor = reactor
        #: The listening :class:`FastUDPPort` while running, else ``None``.
        self.port: FastUDPPort | None = None

    def privilegedStartService(self) -> None:
        """
        Bind (before twistd drops privileges, like ``UDPServer``).
        """
        super().privilegedStartService()
        self._listen()

    def startService(self) -> None:
        """
        Bind, unless already bound.
        """
        super().startService()
        self._listen()

    def stopService(self) -> Deferred[None] | None:
        """
        Stop listening.

        :return: what the port's ``stopListening`` returns (a
            :class:`Deferred` that fires once it has stopped), or ``None``
            when it was not listening.
        """
        super().stopService()
        port, self.port = self.port, None
        if port is None:
            return None
        return port.stopListening()

    def _listen(self) -> None:
        if self.port is None:
            number, protocol, interface = self._args
            self.port = FastUDPPort(number, protocol, interface, reactor=self._reactor)
            self.port.startListening()
