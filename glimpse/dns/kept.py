"""
The DNS fast path's kept answers (:mod:`glimpse.dns.fastpath` over UDP,
:mod:`glimpse.dns.stream` over TCP): pre-encoded answers by key, the same
answers under the exact bytes of the queries they answered (over UDP and
over TCP), and which of them a change of the view drops.  Bookkeeping only:
no I/O, no clock, no DNS decoding.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

import attrs
from twisted.names import dns

from glimpse.address import ANY_ZONE

if TYPE_CHECKING:
    from glimpse.dns.mmsg import Tail

#: A job: ``(zone, Consul service)``.
Job = tuple[str, str]


@attrs.frozen(eq=False)
class KeptAnswer:
    """
    A response encoded by twisted.names, ready to answer the same question
    again: its bytes after the question in each of its orders
    (:mod:`glimpse.dns.rotation`), and its header's flags and counts (bytes
    2-12) with RD clear and with RD set, so that a query's RD bit picks its
    header (``heads[rd]``).

    Every order of an answer has the same header and the same size.  The
    orders of an answer that fits in a UDP answer are all encoded at once;
    those of a larger one (over TCP) as queries ask for them: ``tails``
    holds ``None`` for an order not encoded yet.

    :ivar whole_size: the size of the whole response, to compare with the
        client's.
    :ivar heads: the whole response's header bytes 2-12, by RD bit.
    :ivar tails: the whole response's bytes after the question, by order
        (``tails[query ID % len(tails)]``); ``None`` where not encoded yet.
    :ivar short_heads: the truncated response's (TC=1) header bytes 2-12,
        by RD bit.
    :ivar short_tail: the truncated response's bytes after the question.
    :ivar qtype: the question's type.
    :ivar rcode: the response's rcode.
    :ivar job: the :data:`Job` the name belongs to (its watch is kept alive
        by the hits), or ``None``.
    :ivar zone: the zone label of the name, or ``None`` at the apex.
    :ivar owner: the :data:`Job` whose records alone make the answer (a
        change of that job drops it), or ``None`` when any change does
        (negative answers carry the SOA, whose serial every change moves).
        An ``any`` name's answer is owned by ``("any", service)``: a change
        of the job in any zone drops it.
    :ivar panic: it was given in panic: its hits count as panic answers.
    """

    whole_size: int
    heads: tuple[bytes, bytes]
    tails: list[bytes | None]
    short_heads: tuple[bytes, bytes]
    short_tail: bytes
    qtype: int
    rcode: int
    job: Job | None
    zone: str | None
    owner: Job | None
    panic: bool = False


@attrs.define(eq=False)
class ExactAnswer:
    """
    A :class:`KeptAnswer` as sent over UDP to one query's exact bytes: what
    the batched reads (:meth:`glimpse.dns.mmsg.BatchSocket.serve`) send to
    the next query with those bytes, and its hits not yet counted.

    :ivar tails: the response's bytes after its ID (each a
        :class:`glimpse.dns.mmsg.Tail`), by order (``tails[query ID %
        len(tails)]``): one per order of the whole answer, or the truncated
        form alone.
    :ivar hits: how many times it was sent since the hits were last counted.
    :ivar truncated: whether it is the truncated (TC=1) form.
    :ivar answer: the :class:`KeptAnswer` it was made from.
    """

    tails: tuple[Tail, ...]
    hits: int
    truncated: bool
    answer: KeptAnswer


@attrs.define(eq=False)
class StreamAnswer:
    """
    A :class:`KeptAnswer` as sent over TCP to one query's exact bytes: the
    length prefix, then the query's ID, ``head``, and the answer's tail in
    the order the ID picks (read from ``answer.tails`` when sent, so that an
    order encoded later is found there).

    :ivar prefix: the two-byte length of the response.
    :ivar head: the response's header bytes 2-12 and the question as the
        query asked it.
    :ivar hits: how many times it was sent since the hits were last counted.
    :ivar answer: the :class:`KeptAnswer` it was made from.
    """

    prefix: bytes
    head: bytes
    hits: int
    answer: KeptAnswer


class KeptAnswers:
    """
    The answers the fast path keeps between changes of the view.

    A change of a job drops that job's answers and every answer not made of
    one job's records alone (negative answers carry the SOA, whose serial
    every change moves); the other jobs' answers stay.  A change of a
    zone's catalog drops everything.

    :param max_entries: every map is emptied when one would grow past this:
        a flood of made-up names cannot take memory without bound.
    :param before_drop: called before answers are dropped (the fast path
        counts their hits then).
    """

    def __init__(self, max_entries: int, before_drop: Callable[[], object]) -> None:
        #: :class:`KeptAnswer` by (lower-cased name and the question's type
        #: and class, EDNS with or without DO, or none):
        #: :func:`glimpse.dns.plain.plain_key`.
        self.by_key: dict[bytes, KeptAnswer] = {}
        #: :class:`ExactAnswer` by the exact bytes after a UDP query's ID
        #: (flags, counts, question and OPT as sent).
        self.exact: dict[bytes, ExactAnswer] = {}
        #: :class:`StreamAnswer` by the exact bytes after a TCP query's ID.
        self.stream: dict[bytes, StreamAnswer] = {}
        self.max_entries = max_entries
        self._before_drop = before_drop
        # ("k", key) in by_key, ("e", key) in exact or ("s", key) in stream:
        # of the answers made of one job's records alone, by job; of every
        # other.
        self._by_job: dict[Job, set[tuple[str, bytes]]] = {}
        self._others: set[tuple[str, bytes]] = set()

    def keep(self, key: bytes, answer: KeptAnswer) -> None:
        """
        Keep ``answer`` under ``key``.

        :param key: the question's key (:func:`glimpse.dns.plain.plain_key`).
        :param answer: the answer; its ``owner`` says which change drops it.
        """
        if len(self.by_key) >= self.max_entries:
            self.clear()
        self.by_key[key] = answer
        self._note("k", key, answer.owner)

    def keep_exact(self, exact: bytes, tails: tuple[Tail, ...], answer: KeptAnswer,
                   truncated: bool) -> None:
        """
        Keep an answer under the exact bytes of a UDP query it answered (one
        answer: its hit is counted), adding the hits not yet counted of the
        answer kept there before.

        :param exact: the query's bytes after its ID.
        :param tails: the response after its ID, by order
            (:attr:`ExactAnswer.tails`).
        :param answer: the :class:`KeptAnswer` it was made from.
        :param truncated: whether the truncated form was sent.
        """
        if len(self.exact) >= self.max_entries:
            self.clear()
        seen = self.exact.get(exact)
        hits = 1 + (seen.hits if seen is not None else 0)
        self.exact[exact] = ExactAnswer(tails, hits, truncated, answer)
        self._note("e", exact, answer.owner)

    def keep_stream(self, exact: bytes, entry: StreamAnswer) -> None:
        """
        Keep an answer under the exact bytes of a TCP query it answers.

        :param exact: the query's bytes after its ID.
        :param entry: the :class:`StreamAnswer`.
        """
        if len(self.stream) >= self.max_entries:
            self.clear()
        self.stream[exact] = entry
        self._note("s", exact, entry.answer.owner)

    def _note(self, kind: str, key: bytes, owner: Job | None) -> None:
        if owner is None:
            self._others.add((kind, key))
        else:
            self._by_job.setdefault(owner, set()).add((kind, key))

    def clear(self) -> None:
        """
        Drop every answer.
        """
        self._before_drop()
        self.by_key.clear()
        self.exact.clear()
        self.stream.clear()
        self._by_job.clear()
        self._others = set()

    def changed(self, zone: str, name: str | None) -> None:
        """
        The view changed: job ``name`` of ``zone``, or the zone's catalog when
        ``name`` is ``None`` (a :class:`glimpse.view.topology.Topology` listener).

        :param zone: the zone label.
        :param name: the job's Consul service, or ``None``.
        """
        if name is None:
            self.clear()
            return
        self._before_drop()
        dropped, self._others = self._others, set()
        dropped.update(self._by_job.pop((zone, name), ()))
        maps: dict[str, dict[bytes, KeptAnswer] | dict[bytes, ExactAnswer]
                   | dict[bytes, StreamAnswer]] = {
            "k": self.by_key, "e": self.exact, "s": self.stream}
        # An "any" name may be answered from any zone: failover.
        dropped.update(self._by_job.pop((ANY_ZONE, name), ()))
        for kind, key in dropped:
            maps[kind].pop(key, None)

    def prune(self, keep: Callable[[str | None, Job | None, int], bool]) -> None:
        """
        Keep only the answers for which ``keep(zone, job, rcode)`` is true.
        (What they leave in the index is harmless: dropping an answer
        already gone does nothing.)

        :param keep: the rule, given an answer's ``zone``, ``job`` and
            ``rcode`` (:class:`KeptAnswer`).
        """
        self.by_key = {key: answer for key, answer in self.by_key.items()
                       if keep(answer.zone, answer.job, answer.rcode)}
        self.exact = {key: entry for key, entry in self.exact.items()
                      if keep(entry.answer.zone, entry.answer.job, entry.answer.rcode)}
        self.stream = {key: streamed for key, streamed in self.stream.items()
                       if keep(streamed.answer.zone, streamed.answer.job, streamed.answer.rcode)}


def kept_while_degraded(recovered: frozenset[str], dead_zones: frozenset[str],
                        dead_jobs: frozenset[Job]) -> Callable[[str | None, Job | None, int], bool]:
    """
    The rule of :meth:`KeptAnswers.prune` while zones are degraded: a
    recovered zone's answers may be SERVFAILs, so they all go; a lost zone's
    (or job's) SERVFAILs stay only while it is past ``max-stale``, and its
    stale answers only until then.

    :param recovered: the zones whose watches recovered since the last tick.
    :param dead_zones: the zones past ``max-stale``.
    :param dead_jobs: the jobs past ``max-stale``.
    :return: ``keep(zone, job, rcode)``.
    """
    def keep(zone: str | None, job: Job | None, rcode: int) -> bool:
        if zone == ANY_ZONE:
            # Failover reads every zone: any change of their state drops it.
            return not (recovered or dead_zones or dead_jobs)
        if zone in recovered:
            return False
        dead = zone in dead_zones or (job is not None and job in dead_jobs)
        return dead if rcode == dns.ESERVER else not dead

    return keep
