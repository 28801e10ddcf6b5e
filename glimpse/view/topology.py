"""
Glimpse's view of the topology, one :class:`~glimpse.view.zone.ZoneView`
per zone, kept current without a lookup ever becoming a Consul request.

Per zone, one catalog watch (which jobs and named ports exist); the jobs in
use are kept fresh by :class:`~glimpse.view.jobs.Jobs` (a blocking watch
for those used most, cached reads for the rest: docs/scale.md) and dropped
after ``idle_timeout`` seconds unused.  While Consul cannot be read the last
view keeps answering for ``max_stale`` seconds; after that, lookups fail
with :class:`Unavailable`.
"""

from collections.abc import Callable
from typing import Any, NoReturn

import attrs
from twisted.internet.defer import Deferred, fail, succeed
from twisted.internet.interfaces import IReactorTime
from twisted.internet.task import LoopingCall
from twisted.logger import Logger
from twisted.python.failure import Failure

from glimpse.address import ANY_ZONE
from glimpse.consul import ConsulClient, ConsulError, Response
from glimpse.view.jobs import Jobs
from glimpse.view.model import Instance
from glimpse.view.watch import BlockingWatch
from glimpse.view.zone import Freshness, ZoneView, catalog_tree

#: The least seconds between two catalog queries of a zone.
CATALOG_MIN_INTERVAL = 1.0

#: Called with ``(zone, service name)`` after each change of the view;
#: the name is ``None`` when the zone's catalog changed (or the zone left).
Listener = Callable[[str, str | None], object]


@attrs.define
class Unavailable(Exception):
    """
    A lookup cannot be answered: Consul is out of reach and the view is
    missing or older than ``max_stale``.  DNS says SERVFAIL, HTTP 503.
    """

    reason: str

    def __str__(self) -> str:
        return self.reason


class Topology:
    """
    The per-zone view, its watches, and the lookups served from it.

    :param consul: a :class:`glimpse.consul.ConsulClient`.
    :param clock: ``IReactorTime``.
    :param max_stale: seconds a view may go without Consul before lookups in
        it fail.
    :param idle_timeout: seconds a job's health watch stays without lookups.
    :param fetch_timeout: seconds the first lookup of a job waits for it.
    :param wait: seconds each blocking query waits on Consul's side.
    :param zones_interval: seconds between refreshes of the zone list.
    :param blocking_slots: the most jobs with a blocking watch at once
        (default: the Consul client's job connections); the rest are kept
        fresh by cached reads (:mod:`glimpse.view.refresh`).
    :param refresh: keyword arguments for the
        :class:`glimpse.view.refresh.Refresher` (``min_period``, ``max_rate``).
    :param watch_options: more keyword arguments for each
        :class:`glimpse.view.watch.BlockingWatch`.
    :ivar local_zone: the local agent's datacenter, once known.
    :ivar zones: every :class:`glimpse.view.zone.ZoneView`, by name.
    :ivar zones_fresh: the :class:`glimpse.view.zone.Freshness` of the zone
        list.
    :ivar serial: grows with each change of the view (the DNS SOA serial).
    """

    log = Logger()

    def __init__(self, consul: ConsulClient, clock: IReactorTime, max_stale: float = 300.0,
                 idle_timeout: float = 600.0, fetch_timeout: float = 5.0, wait: float = 60.0,
                 zones_interval: float = 30.0, blocking_slots: int | None = None,
                 refresh: dict[str, Any] | None = None, **watch_options: Any) -> None:
        self._consul = consul
        self._clock = clock
        self.max_stale = max_stale
        self.idle_timeout = idle_timeout
        self.fetch_timeout = fetch_timeout
        self._wait = wait
        self._watch_options = watch_options
        self.local_zone: str | None = None
        self.zones: dict[str, ZoneView] = {}
        self.zones_fresh = Freshness()
        self._listeners: list[Listener] = []
        self.serial = int(clock.seconds())
        self._zones_loop = LoopingCall(self._refresh_zones)
        self._zones_loop.clock = clock
        self._zones_interval = zones_interval
        self._sweeper = LoopingCall(self.expire_idle)
        self._sweeper.clock = clock
        self._reachable: bool | None = None
        #: Zones missing from the last zone list (dropped if still missing
        #: from the next).
        self._unlisted: set[str] = set()
        self._refused_any = False
        self.jobs = Jobs(consul, clock, self.zones, self._changed, self._new_watch, Unavailable,
                         consul.budget.job_slots if blocking_slots is None else blocking_slots,
                         refresh)

    # Lifecycle

    def start(self) -> None:
        """
        Learn the zones and start watching each zone's catalog.
        """
        self._zones_loop.start(self._zones_interval, now=True)
        self._sweeper.start(max(1.0, self.idle_timeout / 4), now=False)
        self.jobs.start()

    def stop(self) -> None:
        """
        Stop every watch and loop.
        """
        for loop in (self._zones_loop, self._sweeper):
            if loop.running:
                loop.stop()
        self.jobs.stop()
        for zone in self.zones.values():
            zone.stop()

    def add_listener(self, listener: Listener) -> None:
        """
        Call ``listener(zone, service_name)`` after each change of the view;
        ``service_name`` is ``None`` when the zone's catalog changed.

        :param listener: a :data:`Listener`; what it raises is logged.
        """
        self._listeners.append(listener)

    def announce(self, zone: str, name: str | None) -> None:
        """
        Tell the listeners that the answers of job ``name`` of ``zone`` (or of
        the zone, for ``None``) changed though its instances did not: its
        panic state moved, or the order zones fail over in.
        """
        self._changed(zone, name)

    def _changed(self, zone: str, name: str | None) -> None:
        self.serial = max(self.serial + 1, int(self._clock.seconds()))
        for listener in self._listeners:
            try:
                listener(zone, name)
            except Exception:
                self.log.failure("A view listener failed")

    def _set_reachable(self, reachable: bool, error: object = None) -> None:
        # One log line per state change, never per request.
        if reachable != self._reachable:
            if reachable:
                self.log.info("Consul is reachable (local zone {zone})", zone=self.local_zone)
            else:
                self.log.warn("Consul is unreachable: {error}", error=str(error))
            self._reachable = reachable

    def _refresh_zones(self) -> Deferred[None]:
        d: Deferred[str]
        if self.local_zone is None:
            d = self._consul.agent_self().addCallback(lambda agent: agent.datacenter)
        else:
            d = succeed(self.local_zone)

        def got_local(zone: str) -> Deferred[list[str]]:
            self.local_zone = zone
            return self._consul.datacenters()

        def got_zones(names: list[str]) -> None:
            self.zones_fresh.ok()
            self._set_reachable(True)
            if ANY_ZONE in names and not self._refused_any:
                self._refused_any = True  # said once, not every refresh
                self.log.error("Consul has a datacenter named {zone!r}: ignored, Glimpse keeps "
                               "that name for failover (<service>...<product>.any); rename it",
                               zone=ANY_ZONE)
            names = [n for n in names if n != ANY_ZONE]
            for name in names:
                if name not in self.zones:
                    self._add_zone(name)
            self._drop_gone_zones(set(names))
            for name in names:
                self._probe_leader(name)

        def failed(failure: Failure) -> None:
            if not failure.check(ConsulError):
                self.log.failure("Refreshing the zones failed", failure)
            self.zones_fresh.failed(self._clock.seconds(), failure.value)
            self._set_reachable(False, failure.value)
            # Retry soon rather than at the next interval: Consul may just be
            # starting.
            if self._zones_loop.running:
                self._clock.callLater(1.0, self._retry_zones)

        return d.addCallback(got_local).addCallbacks(got_zones, failed)

    def _probe_leader(self, name: str) -> None:
        # The catalog watch says whether the zone's servers know a leader only
        # when it returns (up to a minute later); when it has not said within
        # a round, ask them, so a lost quorum shows within a round or two.
        # Whether lookups are served never depends on it: reads do.
        zone = self.zones.get(name)
        now = self._clock.seconds()
        if zone is None or (zone.heard_at is not None
                            and now - zone.heard_at < self._zones_interval):
            return

        def heard(response: Response) -> None:
            if name in self.zones:
                self.zones[name].heard(response, self._clock.seconds())

        def failed(failure: Failure) -> None:
            if not failure.check(ConsulError):
                self.log.failure("Asking zone {zone} for its leader failed", failure, zone=name)

        self._consul.servers(name).addCallbacks(heard, failed)

    def _retry_zones(self) -> None:
        if not self.zones_fresh.loaded and self._zones_loop.running:
            self._refresh_zones()

    def _drop_gone_zones(self, listed: set[str]) -> None:
        # A zone Consul no longer lists (its servers left the WAN pool, or
        # were reaped) is dropped after two refreshes in a row without it:
        # its watches stop and its names become unknown (NXDOMAIN, 404).
        # A zone that is down but has not left stays listed, and is kept.
        for name in list(self.zones):
            if name in listed or name == self.local_zone:
                self._unlisted.discard(name)
            elif name not in self._unlisted:
                self._unlisted.add(name)
            else:
                self._unlisted.discard(name)
                gone = self.zones.pop(name)
                gone.stop()
                self.jobs.forget_zone(gone)
                self.log.info("Zone {zone} left Consul: dropped", zone=name)
                self._changed(name, None)

    def _new_watch(
        self,
        fetch: Callable[[int | None, float | None], Deferred[Response]],
        on_answer: Callable[[Response], None],
        on_error: Callable[[object], None],
    ) -> BlockingWatch:
        return BlockingWatch(self._clock, fetch, on_answer, on_error,
                             wait=self._wait, **self._watch_options)

    def _add_zone(self, name: str) -> None:
        zone = ZoneView(name)
        self.zones[name] = zone
        self.log.info("Watching zone {zone}", zone=name)

        def answer(response: Response) -> None:
            zone.fresh.ok()
            zone.heard(response, self._clock.seconds())
            if response.unchanged:
                return
            tree = catalog_tree(response.body)
            if tree != zone.tree:
                zone.tree = tree
                self._changed(name, None)

        def error(err: object) -> None:
            zone.fresh.failed(self._clock.seconds(), err)

        # At most one catalog query a second per zone, however often the
        # catalog changes: thousands of hosts each wake once per change.
        options = {**self._watch_options, "min_interval": max(
            CATALOG_MIN_INTERVAL, self._watch_options.get("min_interval", 0.0))}
        watch = zone.watch = BlockingWatch(
            self._clock, lambda index, wait: self._consul.catalog_services(name, index, wait),
            answer, error, wait=self._wait, **options)
        watch.start()

    # Lookups

    def job_problem(self, zone_name: str, service_name: str) -> str | None:
        """
        Why a watched job's view cannot serve now (older than max-stale, or
        never loaded).

        :param zone_name: the zone.
        :param service_name: the job's Consul service name.
        :return: the reason, or ``None`` (also for a job that is not watched).
        """
        zone = self.zones.get(zone_name)
        job = zone.jobs.get(service_name) if zone is not None else None
        if job is None:
            return None
        return job.fresh.problem(self._clock.seconds(), self.max_stale,
                                 f"{service_name} in {zone_name}")

    def zone_problem(self, zone_name: str) -> str | None:
        """
        Why lookups in a zone cannot be served now.

        :param zone_name: the zone.
        :return: the reason, or ``None`` when they can.
        :raises KeyError: when the zone does not exist (NXDOMAIN, 404).
        """
        now = self._clock.seconds()
        if not self.zones_fresh.loaded:
            return self.zones_fresh.problem(now, self.max_stale, "the zones")
        zone = self.zones[zone_name]
        return zone.fresh.problem(now, self.max_stale, f"zone {zone_name}")

    def instances(self, zone_name: str, service_name: str) -> Deferred[tuple[Instance, ...]]:
        """
        The instances of one job, from the view.

        :param zone_name: the zone.
        :param service_name: the job's Consul service name.
        :return: a Deferred firing with a tuple of
            :class:`glimpse.view.model.Instance`; at once when the job is watched and
            fresh, else after its first fetch (bounded by ``fetch_timeout``).
            It fails with :class:`Unavailable` when the view cannot serve.
        :raises KeyError: when the zone does not exist.
        """
        zone = self.zones[zone_name]
        now = self._clock.seconds()
        job = zone.jobs.get(service_name)
        if job is None:
            job = self.jobs.watch(zone, service_name)
        job.use(now)
        if job.fresh.loaded:
            problem = job.fresh.problem(now, self.max_stale, f"{service_name} in {zone_name}")
            return fail(Unavailable(problem)) if problem else succeed(job.instances)
        def cancel(waiter: Deferred[tuple[Instance, ...]]) -> None:
            # job.waiters, read when cancelled: an answer replaces the list.
            job.waiters.remove(waiter)

        waiter: Deferred[tuple[Instance, ...]] = Deferred(cancel)
        job.waiters.append(waiter)

        def timed_out(result: object, timeout: float) -> NoReturn:
            raise Unavailable(
                f"no answer from Consul for {service_name} in {zone_name} "
                f"within {timeout:g}s" + (f": {job.fresh.error}" if job.fresh.error else ""))

        waiter.addTimeout(self.fetch_timeout, self._clock, onTimeoutCancel=timed_out)
        return waiter

    def cached_instances(
        self, zone_name: str, service_name: str,
    ) -> tuple[Instance, ...] | None:
        """
        The instances of a watched, loaded job; never waits.

        :param zone_name: the zone.
        :param service_name: the job's Consul service name.
        :return: the instances, or ``None`` when the job is not watched or
            not loaded yet.
        """
        zone = self.zones.get(zone_name)
        job = zone.jobs.get(service_name) if zone else None
        return job.instances if job is not None and job.fresh.loaded else None

    def touch(self, zone_name: str, service_name: str) -> None:
        """
        Mark a job as used without looking it up (the DNS fast path's hits);
        in every zone for the zone ``any``.

        :param zone_name: the zone.
        :param service_name: the job's Consul service name.
        """
        zones = self.zones.values() if zone_name == ANY_ZONE else [self.zones.get(zone_name)]
        for zone in zones:  # an "any" name's hits keep the job of every zone watched
            job = zone.jobs.get(service_name) if zone else None
            if job is not None:
                job.use(self._clock.seconds())

    def degraded(self) -> frozenset[str | None]:
        """
        The zones whose view is not kept current now: their catalog watch or
        a job's health watch is failing.  Empty (false) when every watch is
        fine; it holds ``None`` as well when the zone list itself cannot be
        refreshed (the local agent is out of reach: every zone).  The DNS
        fast path checks these zones' (and their jobs') ``max-stale`` every
        second, so a lost zone is answered as cheaply as the others.

        :return: a frozenset of zone names (and maybe ``None``).
        """
        degraded: set[str | None] = set()
        if self.zones_fresh.failing_since is not None:
            degraded.update([None, *self.zones])
        for name, zone in self.zones.items():
            if zone.fresh.failing_since is not None or any(
                    job.fresh.failing_since is not None for job in zone.jobs.values()):
                degraded.add(name)
        return frozenset(degraded)

    def expire_idle(self) -> None:
        """
        Drop the health watches of jobs unused for ``idle_timeout`` seconds.
        """
        now = self._clock.seconds()
        for zone in self.zones.values():
            for name, job in list(zone.jobs.items()):
                if now - job.last_used > self.idle_timeout and not job.waiters:
                    del zone.jobs[name]
                    self.jobs.forget(job)
                    self._changed(zone.name, name)

    def watch_count(self) -> int:
        """
        How many blocking queries Glimpse keeps running.

        :return: one per zone, and one per job that has a blocking watch.
        """
        return len(self.zones) + self.jobs.blocking_count()
