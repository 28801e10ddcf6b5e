"""
The DNS fast path's kept answers (:mod:`glimpse.dns.fastpath`): pre-encoded answers
by key, the same answers under the exact bytes of the queries they
answered, and which of them a change of the view drops.  Bookkeeping only:
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
    again: its bytes after the question, and its header's flags and counts
    (bytes 2-12) with RD clear and with RD set, so that a query's RD bit
    picks its header (``heads[rd]``).

    :ivar whole_size: the size of the whole response, to compare with the
        client's.
    :ivar heads: the whole response's header bytes 2-12, by RD bit.
    :ivar tail: the whole response's bytes after the question.
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
    tail: bytes
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
    A :class:`KeptAnswer` as sent to one query's exact bytes: what the
    batched reads (:meth:`glimpse.dns.mmsg.BatchSocket.serve`) send to the
    next query with those bytes, and its hits not yet counted.

    :ivar tail: the response's bytes after its ID (a
        :class:`glimpse.dns.mmsg.Tail`).
    :ivar hits: how many times it was sent since the hits were last counted.
    :ivar truncated: whether it is the truncated (TC=1) form.
    :ivar answer: the :class:`KeptAnswer` it was made from.
    """

    tail: Tail
    hits: int
    truncated: bool
    answer: KeptAnswer


class KeptAnswers:
    """
    The answers the fast path keeps between changes of the view.

    A change of a job drops that job's answers and every answer not made of
    one job's records alone (negative answers carry the SOA, whose serial
    every change moves); the other jobs' answers stay.  A change of a
    zone's catalog drops everything.

    :param max_entries: both maps are emptied when either would grow past
        this: a flood of made-up names cannot take memory without bound.
    :param before_drop: called before answers are dropped (the fast path
        counts their hits then).
    """

    def __init__(self, max_entries: int, before_drop: Callable[[], object]) -> None:
        #: :class:`KeptAnswer` by (lower-cased name and the question's type
        #: and class, EDNS or not).
        self.by_key: dict[bytes, KeptAnswer] = {}
        #: :class:`ExactAnswer` by the exact bytes after a query's ID (flags,
        #: counts, question and OPT as sent).
        self.exact: dict[bytes, ExactAnswer] = {}
        self.max_entries = max_entries
        self._before_drop = before_drop
        # ("k", key) in by_key or ("e", key) in exact: of the answers made
        # of one job's records alone, by job; of every other.
        self._by_job: dict[Job, set[tuple[str, bytes]]] = {}
        self._others: set[tuple[str, bytes]] = set()

    def keep(self, key: bytes, answer: KeptAnswer) -> None:
        """
        Keep ``answer`` under ``key``.

        :param key: the question's key (lower-cased name, type and class,
            and whether it had an OPT record).
        :param answer: the answer; its ``owner`` says which change drops it.
        """
        if len(self.by_key) >= self.max_entries:
            self.clear()
        self.by_key[key] = answer
        self._note("k", key, answer.owner)

    def keep_exact(self, exact: bytes, tail: Tail, answer: KeptAnswer, truncated: bool) -> None:
        """
        Keep an answer under the exact bytes of a query it answered (one
        answer: its hit is counted), adding the hits not yet counted of the
        answer kept there before.

        :param exact: the query's bytes after its ID.
        :param tail: the response sent, after its ID.
        :param answer: the :class:`KeptAnswer` it was made from.
        :param truncated: whether the truncated form was sent.
        """
        if len(self.exact) >= self.max_entries:
            self.clear()
        seen = self.exact.get(exact)
        hits = 1 + (seen.hits if seen is not None else 0)
        self.exact[exact] = ExactAnswer(tail, hits, truncated, answer)
        self._note("e", exact, answer.owner)

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
        # An "any" name may be answered from any zone: failover.
        dropped.update(self._by_job.pop((ANY_ZONE, name), ()))
        for kind, key in dropped:
            (self.by_key if kind == "k" else self.exact).pop(key, None)

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
