"""
What the view holds for one zone: its catalog (the tree of jobs and named
ports), the jobs it watches with their instances, and how fresh each of
them is.  :class:`glimpse.view.topology.Topology` keeps them current.
"""

from collections.abc import Iterable, Mapping

import attrs
from twisted.internet.defer import Deferred

from glimpse.consul import Response
from glimpse.mapping import split_consul_service
from glimpse.view.model import Instance
from glimpse.view.watch import BlockingWatch

#: Seconds after which a use counts half as much, in :meth:`JobView.score`.
HALF_LIFE = 30.0

#: How many uses a change of a job's instances counts as.
CHANGE_WEIGHT = 10.0

#: A job: ``(product, env, job)``.
JobKey = tuple[str, str, str]


def catalog_tree(
    services: Mapping[str, Iterable[str] | None] | None,
) -> dict[JobKey, frozenset[str]]:
    """
    The jobs and named ports of a ``/v1/catalog/services`` answer.

    :param services: the answer's body: ``{service name: [tags]}``.
    :return: ``{(product, env, job): frozenset(port names)}``, leaving out
        services Glimpse did not write.
    """
    tree = {}
    for name, tags in (services or {}).items():
        fields = split_consul_service(name)
        if fields is not None:
            tree[fields] = frozenset(tags or ())
    return tree


@attrs.define(eq=False)
class Freshness:
    """
    When a source (the zone list, a zone's catalog, a job's health) last
    failed, to tell a fresh view from a stale one.

    :ivar loaded: it has answered at least once.
    :ivar failing_since: when its current run of failures began, or ``None``
        while it answers.
    :ivar error: the last failure, or ``None`` while it answers.
    """

    loaded: bool = False
    failing_since: float | None = None
    error: str | None = None

    def ok(self) -> None:
        """
        The source answered.
        """
        self.loaded = True
        self.failing_since = None
        self.error = None

    def failed(self, now: float, error: object) -> None:
        """
        The source failed.

        :param now: the clock's time.
        :param error: the failure, kept as text for messages.
        """
        if self.failing_since is None:
            self.failing_since = now
        self.error = str(error)

    def problem(self, now: float, max_stale: float, what: str) -> str | None:
        """
        Why this source cannot serve.

        :param now: the clock's time.
        :param max_stale: seconds a view may go on answering while its
            source fails.
        :param what: the source, for the message (``zone ams``).
        :return: the reason, or ``None`` when it can serve.
        """
        if not self.loaded:
            return f"no view of {what} yet" + (f": {self.error}" if self.error else "")
        if self.failing_since is not None and now - self.failing_since > max_stale:
            return (f"the view of {what} is older than {max_stale:g}s "
                    f"(max-stale): {self.error}")
        return None

    def age(self, now: float) -> float:
        """
        How long the source has been failing.

        :param now: the clock's time.
        :return: seconds, 0 while it answers.
        """
        return 0.0 if self.failing_since is None else now - self.failing_since


class JobView:
    """
    The instances of one job in one zone, with every check.

    :param zone: the zone's name.
    :param name: the job's Consul service name.
    :ivar instances: the instances, sorted.
    :ivar fresh: the :class:`Freshness` of its health watch.
    :ivar last_used: the clock's time of its last lookup.
    :ivar watch: its blocking health watch, while it has one (else the
        view's refresher keeps it fresh with cached reads).
    :ivar waiters: lookups waiting for its first answer.
    :ivar index: the ``X-Consul-Index`` of its last answer.
    """

    def __init__(self, zone: str, name: str) -> None:
        self.zone = zone
        self.name = name
        self.instances: tuple[Instance, ...] = ()
        self.fresh = Freshness()
        self.last_used = 0.0
        self.watch: BlockingWatch | None = None
        self.waiters: list[Deferred[tuple[Instance, ...]]] = []
        self.index: int | None = None
        self._score = 0.0
        self._scored_at = 0.0

    def use(self, now: float) -> None:
        """
        Count one use (a lookup, or DNS hits) at ``now``.

        :param now: the clock's time.
        """
        self._score = self.score(now) + 1
        self._scored_at = self.last_used = now

    def note_change(self, now: float) -> None:
        """
        Count a change of its instances at ``now``: a job that just changed
        (a deploy rolling through it) is likely to change again soon, so it
        weighs as :data:`CHANGE_WEIGHT` uses.

        :param now: the clock's time.
        """
        self._score = self.score(now) + CHANGE_WEIGHT
        self._scored_at = now

    def score(self, now: float) -> float:
        """
        How much the job is used: its uses, each counting half as much per
        :data:`HALF_LIFE` seconds of age.

        :param now: the clock's time.
        """
        return self._score * 0.5 ** ((now - self._scored_at) / HALF_LIFE)

    def stop(self) -> None:
        """
        Stop its watch, if it has one.
        """
        if self.watch is not None:
            self.watch.stop()
            self.watch = None


class ZoneView:
    """
    One zone's catalog (the tree of jobs and ports) and its watched jobs.

    :param name: the zone's name.
    :ivar tree: ``{(product, env, job): frozenset(port names)}``.
    :ivar fresh: the :class:`Freshness` of its catalog watch.
    :ivar watch: its catalog watch, once started.
    :ivar jobs: the watched jobs, by Consul service name.
    :ivar known_leader: whether the server that last answered its catalog
        knew a leader (``None`` until it said).
    :ivar last_contact: seconds since that server heard from the leader:
        how old the zone's data may be (``None`` until it said).
    """

    def __init__(self, name: str) -> None:
        self.name = name
        self.tree: dict[JobKey, frozenset[str]] = {}
        self.fresh = Freshness()
        self.watch: BlockingWatch | None = None
        self.jobs: dict[str, JobView] = {}
        self.known_leader: bool | None = None
        self.last_contact: float | None = None
        #: The clock's time when a server last said (``None``: never).
        self.heard_at: float | None = None

    def heard(self, response: Response, now: float) -> None:
        """
        Take what a server of the zone said of its leader (a stale read's
        ``X-Consul-KnownLeader`` and ``X-Consul-LastContact``), if it said.

        :param response: an answer of one of the zone's servers.
        :param now: the clock's time.
        """
        if response.known_leader is not None:
            self.known_leader = response.known_leader
            self.last_contact = response.last_contact
            self.heard_at = now

    def ports(self, product: str, env: str, job: str) -> frozenset[str] | None:
        """
        The named ports of a job.

        :return: the port names, or ``None`` when the job does not exist.
        """
        return self.tree.get((product, env, job))

    def stop(self) -> None:
        """
        Stop its catalog watch and every job's health watch.
        """
        if self.watch is not None:
            self.watch.stop()
        for job in self.jobs.values():
            job.stop()
