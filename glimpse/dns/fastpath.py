"""
The DNS fast path over UDP: pre-encoded answers for the plain query
(:mod:`glimpse.dns.plain`), in front of the twisted.names path, which stays
the authority for everything.

The first time a plain query is asked it goes through twisted.names, and
its encoded answer is kept (:mod:`glimpse.dns.keeper`, shared with the TCP
fast path) under its key, ID and RD left out.  The next query with the key
gets those bytes with its own ID, RD bit and question bytes copied in (so a
0x20-randomised name comes back as it was asked; the records' owner names
are compression pointers into the question, so they echo it too), in the
order its ID picks (:mod:`glimpse.dns.rotation`), whole when it fits the
client's size, else the pre-encoded truncated form.  A query whose exact
bytes after the ID were answered before is answered with one slice and one
lookup, in batches (:mod:`glimpse.dns.mmsg`).  A change of a job drops that
job's answers and every answer carrying the SOA (whose serial it moves), a
change of a zone's catalog drops them all (answers are encoded once per
view change, not per query; the other jobs' answers stay); while any watch
is failing the fast path steps aside for that watch's zone (for every zone
when the local agent is out of reach), so that ``max-stale`` is applied by
the slow path exactly, and a lost zone does not slow down the others.
"""

from __future__ import annotations

import socket
from collections.abc import Callable
from time import perf_counter_ns
from typing import TYPE_CHECKING, cast

from twisted.logger import Logger
from twisted.names import dns

from glimpse.dns import mmsg
from glimpse.dns.keeper import FastAnswers
from glimpse.dns.plain import plain_key
from glimpse.dns.protocols import GlimpseDatagramProtocol, _DatagramTransport
from glimpse.dns.request import ClientAddress, RequestContext

if TYPE_CHECKING:
    from twisted.internet.interfaces import IReactorTime

    from glimpse.dns.server import GlimpseServerFactory
    from glimpse.view.topology import Topology

#: What the fast path returns for a query it handed to twisted.names: true
#: (handled) but not ``True`` (answered here, and timed here).
MISSED = "missed"


def _not_started(data: bytes, address: ClientAddress) -> None:
    raise RuntimeError("the fast path has no transport yet")


class FastDatagramProtocol(GlimpseDatagramProtocol):
    """
    DNS over UDP with the fast path in front.

    :param controller: the :class:`glimpse.dns.server.GlimpseServerFactory`; its
        ``stats`` count fast hits and misses as well.
    :param topology: the :class:`glimpse.view.topology.Topology` whose changes drop
        kept answers (:class:`glimpse.dns.kept.KeptAnswers`) and whose jobs the
        hits keep watched.
    :param clock: the :class:`twisted.internet.interfaces.IReactorTime` of
        the housekeeping tick.
    :param max_entries: the kept answers are dropped when they would grow
        past this (a flood of made-up names cannot take memory without
        bound).
    :param tick: seconds between housekeeping rounds (keeping the jobs of
        hits watched, stepping aside while a watch fails).
    """

    log = Logger()

    def __init__(self, controller: GlimpseServerFactory, topology: Topology,
                 clock: IReactorTime, max_entries: int = 100_000, tick: float = 1.0) -> None:
        super().__init__(controller)
        self._factory = controller
        self.stats = controller.stats
        #: The pre-encoded answers, which the TCP fast path shares
        #: (:class:`glimpse.dns.stream.StreamFactory`).
        self.answers = FastAnswers(controller.stats, controller.resolver.dns_zone, topology,
                                   clock, max_entries, tick)
        self._kept = self.answers.kept
        self._sendto: Callable[[bytes, ClientAddress], object] = _not_started
        # The BatchSocket on the port's socket, once read.
        self._batch: mmsg.BatchSocket | None = None

    def startProtocol(self) -> None:
        """
        Start housekeeping; send straight on the socket when there is one
        (Twisted's ``write`` re-checks the address of every datagram).
        """
        sock = getattr(self.transport, "socket", None)
        self._sendto = (sock.sendto if sock is not None
                        else cast(_DatagramTransport, self.transport).write)
        self.answers.attach()

    def stopProtocol(self) -> None:
        """
        Stop housekeeping; forget the closed socket's batch buffers.
        """
        self._batch = None
        self.answers.detach()

    @property
    def enabled(self) -> bool:
        """
        False while the local agent is out of reach: everything goes to
        twisted.names.
        """
        return self.answers.enabled

    def cache_size(self) -> int:
        """
        How many pre-encoded answers are kept (one per key).
        """
        return self.answers.cache_size()

    def flush_stats(self) -> None:
        """
        Add the hits counted on the pre-encoded answers to ``stats``
        (:meth:`glimpse.dns.keeper.FastAnswers.flush_stats`).
        """
        self.answers.flush_stats()

    def tick(self) -> None:
        """
        One housekeeping round (:meth:`glimpse.dns.keeper.FastAnswers.tick`).
        """
        self.answers.tick()

    @property
    def batched(self) -> bool:
        """
        Whether datagrams are read and answered in batches
        (:class:`glimpse.dns.mmsg.BatchSocket`): on Linux, once a real socket
        has been read.
        """
        return self._batch is not None

    def read_datagrams(self, sock: socket.socket, max_size: int = 8192,
                       budget: int = 256) -> None:
        """
        Answer up to ``budget`` datagrams waiting on ``sock``: the loop
        :class:`glimpse.dns.udpport.FastUDPPort` runs each time its socket is
        readable.  A query with the same bytes as one answered before (apart
        from its ID) is answered right here from its pre-encoded response;
        everything else goes on to :meth:`datagramReceived`.

        On Linux the datagrams are read and answered in batches (one
        ``recvmmsg`` and one ``sendmmsg`` per batch, :mod:`glimpse.dns.mmsg`);
        elsewhere, and for a socket double, one by one.  Either way this
        skips Twisted's read loop, which costs more per datagram than a
        pre-encoded answer does.

        :param sock: a non-blocking UDP socket (or a double with ``recvfrom``
            and ``sendto``, read one by one).
        :param max_size: the largest datagram read whole.
        :param budget: at most this many datagrams per call, so that a
            flood cannot keep the reactor from its other work.
        """
        if self._batch is None and mmsg.available and isinstance(sock, socket.socket):
            self._batch = mmsg.BatchSocket(sock, max_size)
        if self._batch is not None:
            timings = self._batch.serve(self._kept.exact, self.datagramReceived, budget)
            for elapsed, count in timings:
                self.stats.observe(elapsed, count)
            return
        recvfrom, sendto, clock, hit = sock.recvfrom, sock.sendto, perf_counter_ns, self._hit
        for _ in range(budget):
            try:
                data, address = recvfrom(max_size)
            except OSError:
                return  # drained (EAGAIN); UDP has nothing else to report
            received = clock()
            response = hit(data)
            if response is None:
                self._datagram(data, address, received)
                continue
            try:
                sendto(response, address)
            except OSError:
                pass  # a full socket buffer or a vanished client: UDP drops it
            self.stats.observe(clock() - received)

    def _hit(self, data: bytes) -> bytes | None:
        # The pre-encoded response, with the query's ID, to a query with the
        # same bytes after the ID as a plain one answered before; else None.
        entry = self._kept.exact.get(data[2:])
        if entry is not None:
            entry.hits += 1
            tails = entry.tails
            return data[:2] + tails[((data[0] << 8) | data[1]) % len(tails)].data
        return None

    def datagramReceived(self, data: bytes, address: ClientAddress) -> None:
        """
        Answer a plain query from the cache; hand anything else to
        twisted.names.

        :param data: the datagram.
        :param address: its sender.
        """
        self._datagram(data, address, perf_counter_ns())

    def _datagram(self, data: bytes, address: ClientAddress, received: int) -> None:
        try:
            if self.answers.enabled:
                handled = self._fast(data, address, received)
                if handled is True:
                    self.stats.observe(perf_counter_ns() - received)
                if handled:
                    return
            self.controller.bytes_received(data, self, address, received)
        except Exception:
            self.log.failure("Handling a DNS datagram failed")

    def _fast(self, data: bytes, address: ClientAddress, received: int) -> bool | str:
        plain = plain_key(data)
        if plain is None:
            return False
        key, end, limit = plain
        answer = self._kept.by_key.get(key)
        if answer is None or (answer.whole_size <= limit and None in answer.tails):
            self.stats.fast_misses += 1
            return self._miss(data, address, key, end, received)
        question, rd = data[12:end + 5], data[2]
        truncated = answer.whole_size > limit
        tails: tuple[mmsg.Tail, ...]
        if truncated:
            tails = (mmsg.tail(answer.short_heads[rd] + question + answer.short_tail),)
        else:
            head = answer.heads[rd] + question
            tails = tuple(mmsg.tail(head + cast(bytes, tail)) for tail in answer.tails)
        self._kept.keep_exact(data[2:], tails, answer, truncated)
        try:
            self._sendto(data[:2] + tails[((data[0] << 8) | data[1]) % len(tails)].data, address)
        except OSError:
            pass
        return True

    def _miss(self, data: bytes, address: ClientAddress, key: bytes, end: int,
              received: int) -> bool | str:
        request = dns.Message()
        try:
            request.fromStr(data)
        except Exception:
            return False  # the slow path answers FORMERR
        # Timed by the factory when it answers, maybe later (first lookup).
        self._factory.message_received(RequestContext(
            self, address, received, request, fast_key=key, name_end=end))
        return MISSED

    def send_response(self, context: RequestContext, whole: bytes, short: bytes) -> None:
        """
        Send a response from twisted.names, and keep it when it answers a
        plain query from the view.

        :param context: the request answered (its ``fast_key`` is set when
            the fast path missed it).
        :param whole: the encoded response.
        :param short: the same truncated.
        """
        super().send_response(context, whole, short)
        self.answers.store(context, whole, short)
