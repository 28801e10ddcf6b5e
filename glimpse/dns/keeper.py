"""
The fast path's answers and their housekeeping, shared by its UDP protocol
(:mod:`glimpse.dns.fastpath`) and its TCP protocol (:mod:`glimpse.dns.stream`):
what twisted.names answered to a plain query is kept
(:class:`glimpse.dns.kept.KeptAnswers`) until a change of the view drops it;
every second the hits are counted, the jobs they came from are kept
watched, and the answers of a zone that lost Consul are dropped once it is
past ``max-stale``.  One set of answers serves both transports, so a name
asked over UDP is a hit over TCP too.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from twisted.internet.task import LoopingCall
from twisted.names import dns

from glimpse.address import relative_labels
from glimpse.dns.answers import ADDRESS, classify
from glimpse.dns.kept import Job, KeptAnswer, KeptAnswers, kept_while_degraded
from glimpse.dns.plain import heads, same_question

if TYPE_CHECKING:
    from twisted.internet.interfaces import IReactorTime

    from glimpse.dns.request import RequestContext
    from glimpse.dns.wire import DNSStats
    from glimpse.view.topology import Topology


class FastAnswers:
    """
    The fast path's pre-encoded answers, for both transports.

    :param stats: the :class:`glimpse.dns.wire.DNSStats` the hits are added
        to.
    :param dns_zone: the zone Glimpse is authoritative for.
    :param topology: the :class:`glimpse.view.topology.Topology` whose
        changes drop kept answers and whose jobs the hits keep watched.
    :param clock: the :class:`twisted.internet.interfaces.IReactorTime` of
        the housekeeping tick.
    :param max_entries: the kept answers are dropped when they would grow
        past this (a flood of made-up names cannot take memory without
        bound).
    :param tick: seconds between housekeeping rounds.
    """

    def __init__(self, stats: DNSStats, dns_zone: str, topology: Topology, clock: IReactorTime,
                 max_entries: int = 100_000, tick: float = 1.0) -> None:
        self.stats = stats
        self._dns_zone = dns_zone
        self._topology = topology
        #: The kept answers (read their maps through this: a prune replaces
        #: them).
        self.kept = KeptAnswers(max_entries, self.flush_stats)
        self._used: set[Job] = set()
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
        self._users = 0
        topology.add_listener(self.kept.changed)

    def attach(self) -> None:
        """
        A protocol starts using the answers: housekeeping runs while any
        does.
        """
        self._users += 1
        if not self._loop.running:
            self._loop.start(self._tick, now=False)

    def detach(self) -> None:
        """
        A protocol stops using the answers; the last one stops housekeeping.
        """
        self._users = max(0, self._users - 1)
        if not self._users and self._loop.running:
            self._loop.stop()

    def cache_size(self) -> int:
        """
        How many pre-encoded answers are kept (one per key).
        """
        return len(self.kept.by_key)

    def store(self, context: RequestContext, whole: bytes, short: bytes) -> None:
        """
        Keep twisted.names' response to a plain query the fast path missed,
        when it answers from the view.

        :param context: the request answered: its ``fast_key`` and
            ``name_end``, and the order it got (``order``, ``orders``,
            ``wholes``: :mod:`glimpse.dns.rotation`).
        :param whole: the encoded response.
        :param short: the same truncated.
        """
        key, end, request = context.fast_key, context.name_end, context.message
        if key is None or request is None or not self.enabled:
            return
        qend = end + 5
        rcode = whole[3] & 0x0F
        if rcode not in (dns.OK, dns.ENAME, dns.ESERVER) or len(short) < qend:
            return
        # Only when the response's question is byte for byte the query's
        # (apart from case): then copying the query's question is exact.
        if not same_question(whole, key, end):
            return
        zone, job = self._zone_and_job(request)
        # A lost zone's answers are kept too: its stale ones until max-stale,
        # then its SERVFAILs, so that its queries cost the other zones no
        # more than a healthy zone's; tick() drops them as its state moves.
        # Any other SERVFAIL (a first fetch that timed out) is not kept.
        if rcode == dns.ESERVER and zone not in self._degraded:
            return
        tails: list[bytes | None] = [None] * context.orders
        if context.wholes is not None:
            if any(len(other) != len(whole) for other in context.wholes):
                return  # the orders of an answer are all one size, or none is kept
            tails = [other[qend:] for other in context.wholes]
        else:
            tails[context.order] = whole[qend:]
        kept = self.kept.by_key.get(key)
        whole_heads = heads(whole)
        if (kept is not None and context.wholes is None and kept.whole_size == len(whole)
                and kept.heads == whole_heads and len(kept.tails) == context.orders
                and kept.panic == context.panic):
            # One more order of an answer kept (the view it came from is the
            # current one: a change would have dropped it).
            kept.tails[context.order] = whole[qend:]
            return
        # An answer with records (ANCOUNT) and no authority (NSCOUNT: the
        # SOA of a negative answer) is made of its job's records alone.
        alone = rcode == dns.OK and whole[6:8] != b"\0\0" and whole[8:10] == b"\0\0"
        self.kept.keep(key, KeptAnswer(
            whole_size=len(whole), heads=whole_heads, tails=tails, short_heads=heads(short),
            short_tail=short[qend:], qtype=request.queries[0].type, rcode=rcode, job=job,
            zone=zone, owner=job if alone else None, panic=context.panic))

    def _zone_and_job(self, request: dns.Message) -> tuple[str | None, Job | None]:
        # The zone label of the name (None at the apex): what a kept answer
        # depends on besides the zone list; and the job (zone, Consul
        # service) it comes from, whose health watch its hits keep alive.
        name = request.queries[0].name.name.decode("ascii", "replace")
        labels = relative_labels(name, self._dns_zone)
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
        for entry in self.kept.exact.values():
            hits = entry.hits
            if hits:
                entry.hits = 0
                self._count(entry.answer, hits)
                if entry.truncated:
                    stats.truncated += hits
        for streamed in self.kept.stream.values():
            hits = streamed.hits
            if hits:
                streamed.hits = 0
                self._count(streamed.answer, hits)

    def _count(self, answer: KeptAnswer, hits: int) -> None:
        # One kept answer's hits, from either transport.
        stats = self.stats
        stats.fast_hits += hits
        stats.responses[(answer.qtype, answer.rcode)] += hits
        if answer.panic:
            stats.panic_answers += hits
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
        self.kept.prune(kept_while_degraded(recovered, dead_zones, dead_jobs))

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
            self.kept.clear()
            self.enabled = False
            self._degraded = frozenset()
            return
        self.enabled = True
        degraded = frozenset(zone for zone in listed if zone is not None)
        recovered = self._degraded - degraded
        if degraded or recovered:
            self._prune(degraded, recovered)
        self._degraded = degraded
