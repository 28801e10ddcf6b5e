"""
The UDP port of the DNS server: Twisted's, with the read loop handed to
the fast path (:obj:`glimpse.dns.fastpath.FastDatagramProtocol.read_datagrams`).

Everything else (binding, the socket's options, stopping) stays Twisted's;
the service binds in ``privilegedStartService`` as ``UDPServer`` does, so
port 53 can be bound before twistd drops privileges.
"""

from twisted.application import service
from twisted.internet import udp
from twisted.logger import Logger

#: Datagrams read per readiness event before the reactor gets its turn:
#: about a millisecond of queries.
READ_BUDGET = 256


class FastUDPPort(udp.Port):
    """
    A UDP port whose protocol reads its own datagrams: ``doRead`` calls the
    protocol's ``read_datagrams(socket, max_size, budget)``.
    """

    _log = Logger()

    def doRead(self):
        """
        Let the protocol drain up to :class:`READ_BUDGET` datagrams.  Nothing it
        raises may reach the reactor, which would stop the port.
        """
        try:
            self.protocol.read_datagrams(self.socket, self.maxPacketSize, READ_BUDGET)
        except Exception:
            self._log.failure("Reading DNS datagrams failed")


class FastUDPServer(service.Service):
    """
    Listen on a :class:`FastUDPPort` while running.

    :param port: the UDP port number (0: any free one).
    :param protocol: a protocol with ``read_datagrams``.
    :param interface: the address to bind.
    :param reactor: an ``IReactorFDSet`` provider.
    """

    def __init__(self, port, protocol, interface, reactor):
        self._args = (port, protocol, interface)
        self._reactor = reactor
        #: The listening :class:`FastUDPPort` while running, else ``None``.
        self.port = None

    def privilegedStartService(self):
        """
        Bind (before twistd drops privileges, like ``UDPServer``).
        """
        super().privilegedStartService()
        self._listen()

    def startService(self):
        """
        Bind, unless already bound.
        """
        super().startService()
        self._listen()

    def stopService(self):
        """
        Stop listening.
        """
        super().stopService()
        port, self.port = self.port, None
        if port is not None:
            return port.stopListening()

    def _listen(self):
        if self.port is None:
            number, protocol, interface = self._args
            self.port = FastUDPPort(number, protocol, interface, reactor=self._reactor)
            self.port.startListening()
