"""
Keeping the jobs in use fresh within the Consul budget: the jobs used most
hold a blocking watch each (a connection each, at most
``blocking_slots``); every other job is read again by the
:class:`~glimpse.view.refresh.Refresher`'s cached reads.  Every few seconds
:meth:`Jobs.rebalance` hands the watches to the jobs used most.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from twisted.internet.interfaces import IReactorTime
from twisted.internet.task import LoopingCall

from glimpse.consul import ConsulClient, ConsulError, Response
from glimpse.view.model import instances_from_health
from glimpse.view.refresh import Refresher
from glimpse.view.watch import BlockingWatch
from glimpse.view.zone import JobView, ZoneView

#: Seconds between two rounds of :meth:`Jobs.rebalance`.
REBALANCE_INTERVAL = 2.0

#: The most blocking watches one round of :meth:`Jobs.rebalance` moves.
MAX_SWAPS = 4


class Jobs:
    """
    The jobs in use, each kept fresh by a blocking watch or by cached reads.

    :param consul: the :class:`glimpse.consul.ConsulClient`.
    :param clock: ``IReactorTime``.
    :param zones: the view's zones (shared: jobs live in ``zone.jobs``).
    :param on_change: called with ``(zone, name)`` when a job's instances
        changed.
    :param new_watch: makes a :class:`~glimpse.view.watch.BlockingWatch` from
        ``(fetch, on_answer, on_error)``.
    :param unavailable: makes the error a lookup waiting for a job's first
        answer fails with when Consul cannot be asked.
    :param blocking_slots: the most jobs with a blocking watch at once.
    :param refresh: keyword arguments for the
        :class:`~glimpse.view.refresh.Refresher`.
    :ivar refresher: the :class:`~glimpse.view.refresh.Refresher`.
    """

    def __init__(self, consul: ConsulClient, clock: IReactorTime, zones: dict[str, ZoneView],
                 on_change: Callable[[str, str], object],
                 new_watch: Callable[..., BlockingWatch],
                 unavailable: Callable[[str], Exception],
                 blocking_slots: int, refresh: dict[str, Any] | None = None) -> None:
        self._consul = consul
        self._clock = clock
        self._zones = zones
        self._on_change = on_change
        self._new_watch = new_watch
        self._unavailable = unavailable
        self.blocking_slots = blocking_slots
        self.refresher = Refresher(clock, consul.health_cached, self._polled_answer,
                                   self._polled_error, **(refresh or {}))
        #: The jobs holding a blocking watch, counted on every new job:
        #: thousands of jobs must not make that a scan of them all.
        self._blocking: set[JobView] = set()
        self._rebalancer = LoopingCall(self.rebalance)
        self._rebalancer.clock = clock
        # Promotions of jobs that just changed, between two rebalances: a
        # whole zone flapping at once must not churn every watch.
        self._quick_promotions = 0

    def start(self) -> None:
        """
        Start the cached reads and the rebalancing.
        """
        self.refresher.start()
        self._rebalancer.start(REBALANCE_INTERVAL, now=False)

    def stop(self) -> None:
        """
        Stop the cached reads and the rebalancing (the zones stop the
        blocking watches).
        """
        self.refresher.stop()
        self._blocking.clear()
        if self._rebalancer.running:
            self._rebalancer.stop()

    def watch(self, zone: ZoneView, name: str) -> JobView:
        """
        Start keeping a job of ``zone`` fresh: with a blocking watch while
        there are slots for one, else with cached reads; either way its
        first answer comes at once.

        :param zone: the zone's view.
        :param name: the job's Consul service name.
        :return: its :class:`JobView` (added to ``zone.jobs``).
        """
        job = JobView(zone.name, name)
        zone.jobs[name] = job
        if self.blocking_count() < self.blocking_slots:
            self._block(job)
        else:
            self.refresher.add((zone.name, name), now=True)
        return job

    def _block(self, job: JobView) -> None:
        """
        Give ``job`` a blocking watch, starting from the answer it has.
        """
        zone, name = job.zone, job.name
        self._blocking.add(job)
        watch = job.watch = self._new_watch(
            lambda index, wait: self._consul.health_service(zone, name, index, wait),
            lambda response: self._job_answer(job, response),
            lambda err: self._job_error(job, err))
        watch.start(job.index or 0 if job.fresh.loaded else 0)

    def blocking_count(self) -> int:
        """
        How many jobs have a blocking watch now.
        """
        return len(self._blocking)

    def polled_count(self) -> int:
        """
        How many jobs in use are kept fresh by cached reads instead.
        """
        return len(self.refresher)

    def poll_period(self) -> float:
        """
        Seconds between two cached reads of a job without a blocking watch.
        """
        return self.refresher.period

    def _job(self, key: tuple[str, str]) -> JobView | None:
        zone = self._zones.get(key[0])
        return zone.jobs.get(key[1]) if zone is not None else None

    def _polled_answer(self, key: tuple[str, str], response: Response) -> None:
        job = self._job(key)
        if job is not None and job.watch is None:
            self._job_answer(job, response)

    def _polled_error(self, key: tuple[str, str], err: ConsulError) -> None:
        job = self._job(key)
        if job is not None and job.watch is None:
            self._job_error(job, err)

    def _job_answer(self, job: JobView, response: Response) -> None:
        job.fresh.ok()
        if response.index is not None:
            job.index = response.index
        if response.unchanged:
            return
        instances = instances_from_health(response.body)
        changed = instances != job.instances
        job.instances = instances
        waiters, job.waiters = job.waiters, []
        for waiter in waiters:
            waiter.callback(instances)
        if changed:
            now = self._clock.seconds()
            job.note_change(now)
            if job.watch is None:
                self._promote_changed(job, now)
            self._on_change(job.zone, job.name)

    def _job_error(self, job: JobView, err: object) -> None:
        job.fresh.failed(self._clock.seconds(), err)
        if not job.fresh.loaded:
            waiters, job.waiters = job.waiters, []
            for waiter in waiters:
                waiter.errback(self._unavailable(
                    f"Consul cannot be asked about {job.name} in {job.zone}: {err}"))

    def forget(self, job: JobView) -> None:
        """
        Stop keeping a job fresh (it went unused, or its zone left).

        :param job: the job, already out of its zone's ``jobs``.
        """
        job.stop()
        self._blocking.discard(job)
        self.refresher.remove((job.zone, job.name))

    def forget_zone(self, zone: ZoneView) -> None:
        """
        Stop keeping a zone's jobs fresh (the zone left Consul).

        :param zone: the zone, already out of the view.
        """
        for job in list(zone.jobs.values()):
            self.forget(job)

    def _promote_changed(self, job: JobView, now: float) -> None:
        """
        A polled job whose instances just changed takes a blocking watch at
        once (a free one, or that of the watched job used least, if it is
        used clearly less), so its next changes show without waiting for a
        read: at most :data:`MAX_SWAPS` such promotions between rebalances.
        """
        if self._quick_promotions >= MAX_SWAPS:
            return
        if len(self._blocking) >= self.blocking_slots:
            if not self._blocking:
                return
            least = min(self._blocking, key=lambda j: j.score(now))
            if job.score(now) <= 1.5 * least.score(now) + 0.5:
                return
            self._demote(least)
        self._quick_promotions += 1
        self._promote(job)

    def rebalance(self) -> None:
        """
        Give the blocking watches to the jobs used most: fill free slots
        with the polled jobs used most, then swap at most
        :data:`MAX_SWAPS` watched jobs for polled ones used clearly more
        (half as much again), so that jobs used about as much do not trade
        places every round.
        """
        now = self._clock.seconds()
        self._quick_promotions = 0
        jobs = [job for zone in self._zones.values() for job in zone.jobs.values()]
        blocking = sorted((j for j in jobs if j.watch is not None), key=lambda j: j.score(now))
        polled = sorted((j for j in jobs if j.watch is None and j.fresh.loaded),
                        key=lambda j: -j.score(now))
        free = max(0, self.blocking_slots - len(blocking))
        for job in polled[:free]:
            self._promote(job)
        pairs = zip(polled[free:], blocking, strict=False)
        for swaps, (candidate, incumbent) in enumerate(pairs):
            if swaps >= MAX_SWAPS or candidate.score(now) <= 1.5 * incumbent.score(now) + 0.5:
                break
            self._demote(incumbent)
            self._promote(candidate)

    def _promote(self, job: JobView) -> None:
        index = self.refresher.remove((job.zone, job.name))
        job.index = job.index or index
        self._block(job)

    def _demote(self, job: JobView) -> None:
        job.stop()
        self._blocking.discard(job)
        self.refresher.add((job.zone, job.name), index=job.index, now=False)
