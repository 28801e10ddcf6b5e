"""
The DNS fast path: pre-encoded answers for the common query, in front of
the twisted.names path, which stays the authority for everything.

A *plain* query is QUERY, QR=0, no AA/TC, QDCOUNT=1, no answer or authority
records, and either no additional record or exactly one OPT record of
version 0 with no flags and no options, and nothing after it.  For a plain
query the answer depends only on the lower-cased name, the type, whether
EDNS was used and the view; so the first time one is asked it goes through
twisted.names, and its encoded answer is kept under that key (ID and RD
left out).  The next query with the key gets those bytes with its own ID,
RD bit and question bytes copied in (so a 0x20-randomised name comes back
as it was asked; the records' owner names are compression pointers into the
question, so they echo it too), whole when it fits the client's size, else
the pre-encoded truncated form.  A change of a job drops that job's answers
and every answer carrying the SOA (whose serial it moves), a change of a
zone's catalog drops them all (answers are encoded once per view change, not
per query; the other jobs' answers stay); while any watch
is failing the fast path steps aside for that watch's zone (for every zone
when the local agent is out of reach), so that ``max-stale`` is applied by
the slow path exactly, and a lost zone does not slow down the others.

The name's end is found with one ``find`` of the zero byte rather than by
walking labels: a key only matches when its bytes equal a cached key, and
cached keys are stored only after twisted.names decoded the same bytes to
the same question, so a name with a zero inside a label can only miss.
"""

from __future__ import annotations

import socket
from collections.abc import Callable
from time import perf_counter_ns
from typing import TYPE_CHECKING, cast

from twisted.internet.task import LoopingCall
from twisted.logger import Logger
from twisted.names import dns

from glimpse.address import relative_labels
from glimpse.dns import mmsg
from glimpse.dns.answers import ADDRESS, classify
from glimpse.dns.kept import Job, KeptAnswer, KeptAnswers, kept_while_degraded
from glimpse.dns.protocols import GlimpseDatagramProtocol, _DatagramTransport
from glimpse.dns.request import ClientAddress, RequestContext
from glimpse.dns.wire import CLASSIC_UDP_SIZE, UDP_SIZE

if TYPE_CHECKING:
    from twisted.internet.interfaces import IReactorTime

    from glimpse.dns.server import GlimpseServerFactory
    from glimpse.view.topology import Topology

#: What the fast path returns for a query it handed to twisted.names: true
#: (handled) but not ``True`` (answered here, and timed here).
MISSED = "missed"

#: Header counts of a plain query: QDCOUNT=1, and ARCOUNT 0 or 1 (an OPT).
_PLAIN = b"\x00\x01\x00\x00\x00\x00\x00\x00"
_EDNS = b"\x00\x01\x00\x00\x00\x00\x00\x01"
#: An OPT record's name (root) and type, and the rest that must be zero:
#: extended rcode, version 0, no DO flag, no options.
_OPT_HEAD = b"\x00\x00\x29"
_OPT_ZEROS = b"\x00" * 6
#: Suffix of the key of a query that had an OPT record.
_EDNS_TAG = b"E"


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
        self._topology = topology
        self._kept = KeptAnswers(max_entries, self.flush_stats)
        self._used: set[Job] = set()
        self._sendto: Callable[[bytes, ClientAddress], object] = _not_started
        # The BatchSocket on the port's socket, once read.
        self._batch: mmsg.BatchSocket | None = None
        self._dead: tuple[frozenset[str], frozenset[Job]] = (frozenset(), frozenset())
        #: False while the local agent is out of reach: everything goes to
        #: twisted.names.
        self.enabled = True
        # Zones whose watches fail: their names go to twisted.names, so a
        # lost zone neither gets stale fast answers nor slows the others.
        self._degraded: frozenset[str] = frozenset()
        self._loop = LoopingCall(self.tick)
        self._loop.clock = clock
        self._tick = tick
        topology.add_listener(self._kept.changed)

    def startProtocol(self) -> None:
        """
        Start housekeeping; send straight on the socket when there is one
        (Twisted's ``write`` re-checks the address of every datagram).
        """
        sock = getattr(self.transport, "socket", None)
        self._sendto = (sock.sendto if sock is not None
                        else cast(_DatagramTransport, self.transport).write)
        if not self._loop.running:
            self._loop.start(self._tick, now=False)

    def stopProtocol(self) -> None:
        """
        Stop housekeeping; forget the closed socket's batch buffers.
        """
        self._batch = None
        if self._loop.running:
            self._loop.stop()

    def cache_size(self) -> int:
        """
        How many pre-encoded answers are kept.
        """
        return len(self._kept.by_key)

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
            return data[:2] + entry.tail.data
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
            if self.enabled and len(data) > 16 and not data[2] & 0xFE:
                handled = self._fast(data, address, received)
                if handled is True:
                    self.stats.observe(perf_counter_ns() - received)
                if handled:
                    return
            self.controller.bytes_received(data, self, address, received)
        except Exception:
            self.log.failure("Handling a DNS datagram failed")

    def _fast(self, data: bytes, address: ClientAddress, received: int) -> bool | str:
        end = data.find(b"\x00", 12)
        qend = end + 5
        counts = data[4:12]
        size = len(data)
        if end < 0:
            return False
        if counts == _PLAIN and size == qend:
            key = data[12:end].lower() + data[end:qend]
            limit = CLASSIC_UDP_SIZE
        elif (counts == _EDNS and size == qend + 11 and data[qend:qend + 3] == _OPT_HEAD
              and data[qend + 5:] == _OPT_ZEROS):
            key = data[12:end].lower() + data[end:qend] + _EDNS_TAG
            limit = (data[qend + 3] << 8) | data[qend + 4]
            limit = UDP_SIZE if limit > UDP_SIZE else (
                CLASSIC_UDP_SIZE if limit < CLASSIC_UDP_SIZE else limit)
        else:
            return False
        answer = self._kept.by_key.get(key)
        if answer is None:
            self.stats.fast_misses += 1
            return self._miss(data, address, key, end, received)
        truncated = answer.whole_size > limit
        if truncated:
            heads, tail = answer.short_heads, answer.short_tail
        else:
            heads, tail = answer.heads, answer.tail
        rest = heads[data[2]] + data[12:qend] + tail
        self._kept.keep_exact(data[2:], mmsg.tail(rest), answer, truncated)
        try:
            self._sendto(data[:2] + rest, address)
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
        if context.fast_key is not None and context.message is not None and self.enabled:
            self._store(context.fast_key, context.name_end, context.message, whole, short,
                        context.panic)

    def _store(self, key: bytes, end: int, request: dns.Message, whole: bytes,
               short: bytes, panic: bool = False) -> None:
        qend = end + 5
        rcode = whole[3] & 0x0F
        if rcode not in (dns.OK, dns.ENAME, dns.ESERVER) or len(short) < qend:
            return
        # Only when the response's question is byte for byte the query's
        # (apart from case): then copying the query's question is exact.
        if (whole[12:end].lower() != key[: end - 12]
                or whole[end:qend] != key[end - 12: qend - 12]):
            return
        zone, job = self._zone_and_job(request)
        # A lost zone's answers are kept too: its stale ones until max-stale,
        # then its SERVFAILs, so that its queries cost the other zones no
        # more than a healthy zone's; tick() drops them as its state moves.
        # Any other SERVFAIL (a first fetch that timed out) is not kept.
        if rcode == dns.ESERVER and zone not in self._degraded:
            return
        # An answer with records (ANCOUNT) and no authority (NSCOUNT: the
        # SOA of a negative answer) is made of its job's records alone.
        alone = rcode == dns.OK and whole[6:8] != b"\0\0" and whole[8:10] == b"\0\0"
        owner = job if alone else None
        self._kept.keep(key, KeptAnswer(
            whole_size=len(whole), heads=_heads(whole), tail=whole[qend:],
            short_heads=_heads(short), short_tail=short[qend:], qtype=request.queries[0].type,
            rcode=rcode, job=job, zone=zone, owner=owner, panic=panic))

    def _zone_and_job(self, request: dns.Message) -> tuple[str | None, Job | None]:
        # The zone label of the name (None at the apex): what a kept answer
        # depends on besides the zone list; and the job (zone, Consul
        # service) it comes from, whose health watch its hits keep alive.
        name = request.queries[0].name.name.decode("ascii", "replace")
        labels = relative_labels(name, self._factory.resolver.dns_zone)
        if not labels:
            return None, None
        parsed = classify(labels)
        if parsed is None or parsed.kind != ADDRESS or parsed.address is None:
            return labels[0].lower(), None
        return labels[0].lower(), (labels[0], parsed.address.consul_service)

    def flush_stats(self) -> None:
        """
        Add the hits counted on the pre-encoded answers to ``stats`` (done
        every tick and before answers are dropped, so the counters lag by
        at most a tick), and note their jobs as used.
        """
        stats = self.stats
        for entry in self._kept.exact.values():
            hits = entry.hits
            if hits:
                entry.hits = 0
                answer = entry.answer
                stats.fast_hits += hits
                stats.responses[(answer.qtype, answer.rcode)] += hits
                if answer.panic:
                    stats.panic_answers += hits
                if entry.truncated:
                    stats.truncated += hits
                if answer.job is not None:
                    self._used.add(answer.job)

    def _prune(self, degraded: frozenset[str], recovered: frozenset[str]) -> None:
        # Called every tick while a zone is degraded: it walks the cached
        # answers (a stall with many of them) only when a zone or job has
        # crossed max-stale, or recovered, since the last walk.
        topology = self._topology
        dead_zones = frozenset(z for z in degraded if z in topology.zones
                               and topology.zone_problem(z) is not None)
        dead_jobs = frozenset((z, name) for z in degraded if z in topology.zones
                              for name in topology.zones[z].jobs
                              if topology.job_problem(z, name) is not None)
        if not recovered and (dead_zones, dead_jobs) == self._dead:
            return
        self._dead = (dead_zones, dead_jobs)
        self._kept.prune(kept_while_degraded(recovered, dead_zones, dead_jobs))

    def tick(self) -> None:
        """
        Keep the jobs of recent hits watched; step aside entirely while the
        local agent is out of reach; and drop the answers of a lost zone (or
        job) once it is past ``max-stale`` (so ``max-stale`` holds to within
        a tick), and all of a zone's answers when it recovers.
        """
        self.flush_stats()
        used, self._used = self._used, set()
        for zone, service in used:
            self._topology.touch(zone, service)
        listed = self._topology.degraded()
        if None in listed:
            # The local agent itself is out of reach: every answer may be
            # stale, and the slow path applies max-stale to each.
            self._kept.clear()
            self.enabled = False
            self._degraded = frozenset()
            return
        self.enabled = True
        degraded = frozenset(zone for zone in listed if zone is not None)
        recovered = self._degraded - degraded
        if degraded or recovered:
            self._prune(degraded, recovered)
        self._degraded = degraded


def _heads(response: bytes) -> tuple[bytes, bytes]:
    # Header bytes 2-12 (flags and counts) with RD clear and with RD set.
    flags = response[2] & 0xFE
    rest = response[3:12]
    return (bytes((flags,)) + rest, bytes((flags | 1,)) + rest)

