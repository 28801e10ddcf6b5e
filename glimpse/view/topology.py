"""
Glimpse's view of the topology, one :class:`~glimpse.view.zone.ZoneView`
per zone, kept current without a lookup ever becoming a Consul request.

Per zone, one catalog watch (which jobs and named ports exist: the zone
list, :mod:`glimpse.view.zones`); the jobs in
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

from glimpse.address import ANY_ZONE
from glimpse.consul import ConsulClient, Response
from glimpse.view.jobs import Jobs
from glimpse.view.model import Instance
from glimpse.view.watch import BlockingWatch
from glimpse.view.zone import Freshness, ZoneView
from glimpse.view.zones import ZoneList

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
    :param catalog_interval: the least seconds between two catalog queries
        of a zone.
    :param blocking_slots: the most jobs with a blocking watch at once
        (default: the Consul client's job connections); the rest are kept
        fresh by cached reads (:mod:`glimpse.view.refresh`).
    :param refresh: keyword arguments for the
        :class:`glimpse.view.refresh.Refresher` (``min_period``, ``max_rate``).
    :param watch_options: more keyword arguments for each
        :class:`glimpse.view.watch.BlockingWatch`.
    :ivar zones: every :class:`glimpse.view.zone.ZoneView`, by name.
    :ivar serial: grows with each change of the view (the DNS SOA serial).
    """

    log = Logger()

    def __init__(self, consul: ConsulClient, clock: IReactorTime, max_stale: float = 300.0,
                 idle_timeout: float = 600.0, fetch_timeout: float = 5.0, wait: float = 60.0,
                 zones_interval: float = 30.0, catalog_interval: float = 1.0,
                 blocking_slots: int | None = None,
                 refresh: dict[str, Any] | None = None, **watch_options: Any) -> None:
        self._consul = consul
        self._clock = clock
        self.max_stale = max_stale
        self.idle_timeout = idle_timeout
        self.fetch_timeout = fetch_timeout
        self._wait = wait
        self._watch_options = watch_options
        self.zones: dict[str, ZoneView] = {}
        self._listeners: list[Listener] = []
        self.serial = int(clock.seconds())
        self._sweeper = LoopingCall(self.expire_idle)
        self._sweeper.clock = clock
        self.jobs = Jobs(consul, clock, self.zones, self._changed, self._new_watch, Unavailable,
                         consul.budget.job_slots if blocking_slots is None else blocking_slots,
                         refresh)
        self._zone_list = ZoneList(consul, clock, self.zones, self._changed,
                                   self.jobs.forget_zone, zones_interval, wait, watch_options,
                                   catalog_interval)

    @property
    def local_zone(self) -> str | None:
        """
        The local agent's datacenter, once known.
        """
        return self._zone_list.local_zone

    @property
    def zones_fresh(self) -> Freshness:
        """
        The :class:`glimpse.view.zone.Freshness` of the zone list.
        """
        return self._zone_list.fresh

    # Lifecycle

    def start(self) -> None:
        """
        Learn the zones and start watching each zone's catalog.
        """
        self._zone_list.start()
        self._sweeper.start(max(1.0, self.idle_timeout / 4), now=False)
        self.jobs.start()

    def stop(self) -> None:
        """
        Stop every watch and loop.
        """
        if self._sweeper.running:
            self._sweeper.stop()
        self.jobs.stop()
        self._zone_list.stop()

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

    def _new_watch(
        self,
        fetch: Callable[[int | None, float | None], Deferred[Response]],
        on_answer: Callable[[Response], None],
        on_error: Callable[[object], None],
    ) -> BlockingWatch:
        return BlockingWatch(self._clock, fetch, on_answer, on_error,
                             wait=self._wait, **self._watch_options)

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
