"""
Glimpse's view of the topology: one per zone, kept current by Consul
blocking queries, so that lookups never become Consul requests at steady
state.

Per zone there is one catalog watch (which jobs and named ports exist) and
one health watch per job that is in use: started by its first lookup and
dropped after it has gone unused for ``idle_timeout`` seconds.  While Consul
cannot be reached the last view keeps answering for ``max_stale`` seconds;
after that, lookups fail with :class:`Unavailable`.
"""

import attrs
from twisted.internet.defer import Deferred, fail, succeed
from twisted.internet.task import LoopingCall
from twisted.logger import Logger

from glimpse.consul import ConsulError
from glimpse.mapping import split_consul_service
from glimpse.view.model import instances_from_health
from glimpse.view.watch import BlockingWatch


@attrs.define
class Unavailable(Exception):
    """
    A lookup cannot be answered: Consul is out of reach and the view is
    missing or older than ``max_stale``.  DNS says SERVFAIL, HTTP 503.
    """

    reason: str

    def __str__(self):
        return self.reason


def catalog_tree(services):
    """
    The jobs and named ports of a ``/v1/catalog/services`` answer.

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
class _Freshness:
    """
    When a source last failed, to tell a fresh view from a stale one.
    """

    loaded: bool = False
    failing_since: float = None
    error: str = None

    def ok(self):
        self.loaded = True
        self.failing_since = None
        self.error = None

    def failed(self, now, error):
        if self.failing_since is None:
            self.failing_since = now
        self.error = str(error)

    def problem(self, now, max_stale, what):
        """
        Why this source cannot serve, or ``None`` when it can.
        """
        if not self.loaded:
            return f"no view of {what} yet" + (f": {self.error}" if self.error else "")
        if self.failing_since is not None and now - self.failing_since > max_stale:
            return (f"the view of {what} is older than {max_stale:g}s "
                    f"(max-stale): {self.error}")
        return None

    def age(self, now):
        return 0.0 if self.failing_since is None else now - self.failing_since


class JobView:
    """
    The instances of one job in one zone, with every check.
    """

    def __init__(self, zone, name):
        self.zone = zone
        self.name = name
        self.instances = ()
        self.fresh = _Freshness()
        self.last_used = 0.0
        self.watch = None
        self.waiters = []


class ZoneView:
    """
    One zone's catalog (the tree of jobs and ports) and its watched jobs.
    """

    def __init__(self, name):
        self.name = name
        self.tree = {}
        self.fresh = _Freshness()
        self.watch = None
        self.jobs = {}

    def ports(self, product, env, job):
        """
        The named ports of a job, or ``None`` when the job does not exist.
        """
        return self.tree.get((product, env, job))


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
    :param watch_options: more keyword arguments for each :class:`BlockingWatch`.
    """

    log = Logger()

    def __init__(self, consul, clock, max_stale=300.0, idle_timeout=600.0,
                 fetch_timeout=5.0, wait=60.0, zones_interval=30.0, **watch_options):
        self._consul = consul
        self._clock = clock
        self.max_stale = max_stale
        self.idle_timeout = idle_timeout
        self.fetch_timeout = fetch_timeout
        self._wait = wait
        self._watch_options = watch_options
        self.local_zone = None
        self.zones = {}
        self._zones_fresh = _Freshness()
        self._listeners = []
        self.serial = int(clock.seconds())
        self._zones_loop = LoopingCall(self._refresh_zones)
        self._zones_loop.clock = clock
        self._zones_interval = zones_interval
        self._sweeper = LoopingCall(self.expire_idle)
        self._sweeper.clock = clock
        self._reachable = None
        #: Zones missing from the last zone list (dropped if still missing
        #: from the next).
        self._unlisted = set()

    # Lifecycle

    def start(self):
        """
        Learn the zones and start watching each zone's catalog.
        """
        self._zones_loop.start(self._zones_interval, now=True)
        self._sweeper.start(max(1.0, self.idle_timeout / 4), now=False)

    def stop(self):
        """
        Stop every watch and loop.
        """
        for loop in (self._zones_loop, self._sweeper):
            if loop.running:
                loop.stop()
        for zone in self.zones.values():
            zone.watch.stop()
            for job in zone.jobs.values():
                job.watch.stop()

    def add_listener(self, listener):
        """
        Call ``listener(zone, service_name)`` after each change of the view;
        ``service_name`` is ``None`` when the zone's catalog changed.
        """
        self._listeners.append(listener)

    def _changed(self, zone, name):
        self.serial = max(self.serial + 1, int(self._clock.seconds()))
        for listener in self._listeners:
            try:
                listener(zone, name)
            except Exception:
                self.log.failure("A view listener failed")

    def _set_reachable(self, reachable, error=None):
        # One log line per state change, never per request.
        if reachable != self._reachable:
            if reachable:
                self.log.info("Consul is reachable (local zone {zone})", zone=self.local_zone)
            else:
                self.log.warn("Consul is unreachable: {error}", error=str(error))
            self._reachable = reachable

    def _refresh_zones(self):
        if self.local_zone is None:
            d = self._consul.agent_self().addCallback(lambda agent: agent.datacenter)
        else:
            d = succeed(self.local_zone)

        def got_local(zone):
            self.local_zone = zone
            return self._consul.datacenters()

        def got_zones(names):
            self._zones_fresh.ok()
            self._set_reachable(True)
            for name in names:
                if name not in self.zones:
                    self._add_zone(name)
            self._drop_gone_zones(set(names))

        def failed(failure):
            if not failure.check(ConsulError):
                self.log.failure("Refreshing the zones failed", failure)
            self._zones_fresh.failed(self._clock.seconds(), failure.value)
            self._set_reachable(False, failure.value)
            # Retry soon rather than at the next interval: Consul may just be
            # starting.
            if self._zones_loop.running:
                self._clock.callLater(1.0, self._retry_zones)

        return d.addCallback(got_local).addCallbacks(got_zones, failed)

    def _retry_zones(self):
        if not self._zones_fresh.loaded and self._zones_loop.running:
            self._refresh_zones()

    def _drop_gone_zones(self, listed):
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
                zone = self.zones.pop(name)
                zone.watch.stop()
                for job in zone.jobs.values():
                    job.watch.stop()
                self.log.info("Zone {zone} left Consul: dropped", zone=name)
                self._changed(name, None)

    def _new_watch(self, fetch, on_answer, on_error):
        return BlockingWatch(self._clock, fetch, on_answer, on_error,
                             wait=self._wait, **self._watch_options)

    def _add_zone(self, name):
        zone = ZoneView(name)
        self.zones[name] = zone
        self.log.info("Watching zone {zone}", zone=name)

        def answer(response):
            zone.fresh.ok()
            if response.unchanged:
                return
            tree = catalog_tree(response.body)
            if tree != zone.tree:
                zone.tree = tree
                self._changed(name, None)

        def error(err):
            zone.fresh.failed(self._clock.seconds(), err)

        zone.watch = self._new_watch(
            lambda index, wait: self._consul.catalog_services(name, index, wait),
            answer, error)
        zone.watch.start()

    # Lookups

    def job_problem(self, zone_name, service_name):
        """
        Why a watched job's view cannot serve now (older than max-stale, or
        never loaded), or ``None`` (also for a job that is not watched).
        """
        zone = self.zones.get(zone_name)
        job = zone.jobs.get(service_name) if zone is not None else None
        if job is None:
            return None
        return job.fresh.problem(self._clock.seconds(), self.max_stale,
                                 f"{service_name} in {zone_name}")

    def zone_problem(self, zone_name):
        """
        Why lookups in a zone cannot be served now, or ``None``.

        :raises KeyError: when the zone does not exist (NXDOMAIN, 404).
        """
        now = self._clock.seconds()
        if not self._zones_fresh.loaded:
            return self._zones_fresh.problem(now, self.max_stale, "the zones")
        zone = self.zones[zone_name]
        return zone.fresh.problem(now, self.max_stale, f"zone {zone_name}")

    def instances(self, zone_name, service_name):
        """
        The instances of one job, from the view.

        :return: a Deferred firing with a tuple of
            :class:`glimpse.view.model.Instance`; at once when the job is watched and
            fresh, else after its first fetch (bounded by ``fetch_timeout``).
            It fails with :class:`Unavailable` when the view cannot serve.
        """
        zone = self.zones[zone_name]
        now = self._clock.seconds()
        job = zone.jobs.get(service_name)
        if job is None:
            job = self._watch_job(zone, service_name)
        job.last_used = now
        if job.fresh.loaded:
            problem = job.fresh.problem(now, self.max_stale, f"{service_name} in {zone_name}")
            return fail(Unavailable(problem)) if problem else succeed(job.instances)
        waiter = Deferred(lambda d: job.waiters.remove(d))
        job.waiters.append(waiter)

        def timed_out(failure, timeout):
            raise Unavailable(
                f"no answer from Consul for {service_name} in {zone_name} "
                f"within {timeout:g}s" + (f": {job.fresh.error}" if job.fresh.error else ""))

        waiter.addTimeout(self.fetch_timeout, self._clock, onTimeoutCancel=timed_out)
        return waiter

    def cached_instances(self, zone_name, service_name):
        """
        The instances of a watched, loaded job, or ``None``; never waits.
        """
        zone = self.zones.get(zone_name)
        job = zone.jobs.get(service_name) if zone else None
        return job.instances if job is not None and job.fresh.loaded else None

    def _watch_job(self, zone, name):
        job = JobView(zone.name, name)
        zone.jobs[name] = job

        def answer(response):
            job.fresh.ok()
            if response.unchanged:
                return
            instances = instances_from_health(response.body)
            changed = instances != job.instances
            job.instances = instances
            waiters, job.waiters = job.waiters, []
            for waiter in waiters:
                waiter.callback(instances)
            if changed:
                self._changed(zone.name, name)

        def error(err):
            job.fresh.failed(self._clock.seconds(), err)
            if not job.fresh.loaded:
                waiters, job.waiters = job.waiters, []
                for waiter in waiters:
                    waiter.errback(Unavailable(f"Consul cannot be asked about {name} "
                                               f"in {zone.name}: {err}"))

        job.watch = self._new_watch(
            lambda index, wait: self._consul.health_service(zone.name, name, index, wait),
            answer, error)
        job.watch.start()
        return job

    def touch(self, zone_name, service_name):
        """
        Mark a job as used without looking it up (the DNS fast path's hits).
        """
        zone = self.zones.get(zone_name)
        job = zone.jobs.get(service_name) if zone else None
        if job is not None:
            job.last_used = self._clock.seconds()

    def degraded(self):
        """
        The zones whose view is not kept current now: their catalog watch or
        a job's health watch is failing.  Empty (false) when every watch is
        fine; it holds ``None`` as well when the zone list itself cannot be
        refreshed (the local agent is out of reach: every zone).  The DNS
        fast path checks these zones' (and their jobs') ``max-stale`` every
        second, so a lost zone is answered as cheaply as the others.

        :return: a frozenset of zone names (and maybe ``None``).
        """
        degraded = set()
        if self._zones_fresh.failing_since is not None:
            degraded.update([None, *self.zones])
        for name, zone in self.zones.items():
            if zone.fresh.failing_since is not None or any(
                    job.fresh.failing_since is not None for job in zone.jobs.values()):
                degraded.add(name)
        return frozenset(degraded)

    def expire_idle(self):
        """
        Drop the health watches of jobs unused for ``idle_timeout`` seconds.
        """
        now = self._clock.seconds()
        for zone in self.zones.values():
            for name, job in list(zone.jobs.items()):
                if now - job.last_used > self.idle_timeout and not job.waiters:
                    job.watch.stop()
                    del zone.jobs[name]
                    self._changed(zone.name, name)

    def watch_count(self):
        """
        How many blocking queries Glimpse keeps running.
        """
        return sum(1 + len(z.jobs) for z in self.zones.values())
