"""
The DNS fast path's kept answers (:obj:`glimpse.dns.fastpath`): pre-encoded answers
by key, the same answers under the exact bytes of the queries they
answered, and which of them a change of the view drops.  Bookkeeping only:
no I/O, no clock, no DNS decoding.
"""


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

    def __init__(self, max_entries, before_drop):
        #: Pre-encoded answers by (lower-cased name and the question's type
        #: and class, EDNS or not): ``(whole_size, heads, tail,
        #: short_heads, short_tail, stat_key, job, zone, owner)``.
        self.by_key = {}
        #: The same answers under the exact bytes after a query's ID (flags,
        #: counts, question and OPT as sent): ``[tail, hits, stat_key, job,
        #: zone, truncated]``, the tail a :obj:`glimpse.dns.mmsg.tail`.
        self.exact = {}
        self.max_entries = max_entries
        self._before_drop = before_drop
        # ("k", key) in by_key or ("e", key) in exact: of the answers made
        # of one job's records alone, by job; of every other.
        self._by_job = {}
        self._others = set()

    def keep(self, key, entry):
        """
        Keep ``entry`` under ``key``.  Its ``owner`` is the job ``(zone, Consul
        service)`` whose records alone make the answer, or ``None``.
        """
        if len(self.by_key) >= self.max_entries:
            self.clear()
        self.by_key[key] = entry
        self._note("k", key, entry[8])

    def keep_exact(self, exact, tail, stat_key, job, zone, truncated, owner):
        """
        Keep an answer under the exact bytes of a query it answered (one
        answer: its hit is counted), adding the hits not yet counted of the
        answer kept there before.
        """
        if len(self.exact) >= self.max_entries:
            self.clear()
        seen = self.exact.get(exact)
        hits = 1 + (seen[1] if seen is not None else 0)
        self.exact[exact] = [tail, hits, stat_key, job, zone, truncated]
        self._note("e", exact, owner)

    def _note(self, kind, key, owner):
        if owner is None:
            self._others.add((kind, key))
        else:
            self._by_job.setdefault(owner, set()).add((kind, key))

    def clear(self):
        """
        Drop every answer.
        """
        self._before_drop()
        self.by_key.clear()
        self.exact.clear()
        self._by_job.clear()
        self._others = set()

    def changed(self, zone, name):
        """
        The view changed: job ``name`` of ``zone``, or the zone's catalog when
        ``name`` is ``None`` (a :class:`glimpse.view.topology.Topology` listener).
        """
        if name is None:
            self.clear()
            return
        self._before_drop()
        dropped, self._others = self._others, set()
        dropped.update(self._by_job.pop((zone, name), ()))
        for kind, key in dropped:
            (self.by_key if kind == "k" else self.exact).pop(key, None)

    def prune(self, keep):
        """
        Keep only the answers for which ``keep(zone, job, rcode)`` is true.
        (What they leave in the index is harmless: dropping an answer
        already gone does nothing.)
        """
        self.by_key = {key: entry for key, entry in self.by_key.items()
                       if keep(entry[7], entry[6], entry[5][1])}
        self.exact = {key: entry for key, entry in self.exact.items()
                      if keep(entry[4], entry[3], entry[2][1])}
