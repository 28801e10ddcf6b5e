"""
The zone list: which zones (Consul datacenters) there are, each zone's
catalog watch, and whether each zone's servers know a leader.

The list is read from the local agent every ``interval`` seconds (soon
again while it fails: Consul may be starting).  A zone that leaves Consul
is dropped after two reads in a row without it; a zone that is down but
listed is kept (its view serves until ``max-stale``).  A datacenter named
``any`` is ignored: Glimpse keeps that name for failover.
"""

from collections.abc import Callable
from typing import Any

from twisted.internet.defer import Deferred, succeed
from twisted.internet.interfaces import IReactorTime
from twisted.internet.task import LoopingCall
from twisted.logger import Logger
from twisted.python.failure import Failure

from glimpse.address import ANY_ZONE
from glimpse.consul import ConsulClient, ConsulError, Response
from glimpse.view.watch import BlockingWatch
from glimpse.view.zone import Freshness, ZoneView, catalog_tree


class ZoneList:
    """
    The zones, kept in ``zones`` (a dict the view shares).

    :param consul: a :class:`glimpse.consul.ConsulClient`.
    :param clock: ``IReactorTime``.
    :param zones: the view's zones by name, filled and emptied here.
    :param on_change: called with ``(zone, None)`` when a zone's catalog
        changes or the zone leaves.
    :param forget: called with a zone that left, after its watch stopped
        (its jobs' reads are stopped there).
    :param interval: seconds between two reads of the list.
    :param wait: seconds each catalog query waits on Consul's side.
    :param watch_options: more keyword arguments for each catalog
        :class:`glimpse.view.watch.BlockingWatch`.
    :param catalog_interval: the least seconds between two catalog queries
        of a zone, however often its registrations change.
    :ivar local_zone: the local agent's datacenter, once known.
    :ivar fresh: the :class:`glimpse.view.zone.Freshness` of the list.
    """

    log = Logger()

    def __init__(self, consul: ConsulClient, clock: IReactorTime, zones: dict[str, ZoneView],
                 on_change: Callable[[str, str | None], object],
                 forget: Callable[[ZoneView], object], interval: float, wait: float,
                 watch_options: dict[str, Any], catalog_interval: float = 1.0) -> None:
        self._consul = consul
        self._clock = clock
        self.zones = zones
        self._on_change = on_change
        self._forget = forget
        self._interval = interval
        self._wait = wait
        self._watch_options = watch_options
        self._catalog_interval = catalog_interval
        self.local_zone: str | None = None
        self.fresh = Freshness()
        self._loop = LoopingCall(self.refresh)
        self._loop.clock = clock
        self._reachable: bool | None = None
        #: Zones missing from the last list (dropped if still missing from
        #: the next).
        self._unlisted: set[str] = set()
        self._refused_any = False

    def start(self) -> None:
        """
        Read the list now and every ``interval`` seconds.
        """
        self._loop.start(self._interval, now=True)

    def stop(self) -> None:
        """
        Stop reading the list and every zone's catalog watch.
        """
        if self._loop.running:
            self._loop.stop()
        for zone in self.zones.values():
            zone.stop()

    def _set_reachable(self, reachable: bool, error: object = None) -> None:
        # One log line per state change, never per request.
        if reachable != self._reachable:
            if reachable:
                self.log.info("Consul is reachable (local zone {zone})", zone=self.local_zone)
            else:
                self.log.warn("Consul is unreachable: {error}", error=str(error))
            self._reachable = reachable

    def refresh(self) -> Deferred[None]:
        """
        Read the zone list once: add the new zones, drop those gone, and ask
        a zone not heard from within a round whether it has a leader.
        """
        d: Deferred[str]
        if self.local_zone is None:
            d = self._consul.agent_self().addCallback(lambda agent: agent.datacenter)
        else:
            d = succeed(self.local_zone)

        def got_local(zone: str) -> Deferred[list[str]]:
            self.local_zone = zone
            return self._consul.datacenters()

        def got_zones(names: list[str]) -> None:
            self.fresh.ok()
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
            self.fresh.failed(self._clock.seconds(), failure.value)
            self._set_reachable(False, failure.value)
            # Retry soon rather than at the next interval: Consul may just be
            # starting.
            if self._loop.running:
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
                            and now - zone.heard_at < self._interval):
            return

        def heard(response: Response) -> None:
            if name in self.zones:
                self.zones[name].heard(response, self._clock.seconds())

        def failed(failure: Failure) -> None:
            if not failure.check(ConsulError):
                self.log.failure("Asking zone {zone} for its leader failed", failure, zone=name)

        self._consul.servers(name).addCallbacks(heard, failed)

    def _retry_zones(self) -> None:
        if not self.fresh.loaded and self._loop.running:
            self.refresh()

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
                self._forget(gone)
                self.log.info("Zone {zone} left Consul: dropped", zone=name)
                self._on_change(name, None)

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
                self._on_change(name, None)

        def error(err: object) -> None:
            zone.fresh.failed(self._clock.seconds(), err)

        # At most one catalog query per catalog_interval per zone, however
        # often the catalog changes: thousands of hosts each wake once per
        # change, and each fetches the zone's whole service list.
        options = {**self._watch_options, "min_interval": max(
            self._catalog_interval, self._watch_options.get("min_interval", 0.0))}
        watch = zone.watch = BlockingWatch(
            self._clock, lambda index, wait: self._consul.catalog_services(name, index, wait),
            answer, error, wait=self._wait, **options)
        watch.start()
