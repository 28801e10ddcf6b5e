"""
Answers that steer traffic, from the view: which zone answers an ``any``
name (:mod:`glimpse.view.failover`), which jobs are in panic
(:mod:`glimpse.view.panic`), and which instances DNS serves, in which
priority and with which weight (:mod:`glimpse.view.serving`).  DNS and
HTTP ask :class:`Steering`; it never asks Consul at query time: the
zones' views are already held, and the datacenters' coordinates are read
every ``--zones-interval``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import attrs
from twisted.internet.defer import Deferred, DeferredList, fail, maybeDeferred, succeed
from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.internet.task import LoopingCall
from twisted.logger import Logger
from twisted.python.failure import Failure

from glimpse.consul import ConsulError, ConsulUnavailable
from glimpse.view.failover import (
    Decision,
    Failover,
    ZoneCount,
    datacenter_rtts,
    decide,
    zones_to_try,
)
from glimpse.view.model import Instance
from glimpse.view.panic import Panics
from glimpse.view.serving import Served, served, serving_count
from glimpse.view.topology import Unavailable

if TYPE_CHECKING:
    from typing import Any

    from glimpse.address import Address
    from glimpse.consul import ConsulClient
    from glimpse.view.topology import Topology

#: Seconds before the coordinates are asked again while none came yet.
RETRY = 2.0


@attrs.frozen
class Choice:
    """
    The zone that answers an ``any`` name, and its instances.

    :ivar zone: the zone.
    :ivar instances: the job's instances there (every named port).
    :ivar failover: why it is not the local zone, or ``None``.
    """

    zone: str
    instances: tuple[Instance, ...]
    failover: Failover | None


@attrs.frozen
class Answer:
    """
    What DNS serves for one named port of a job in one zone.

    :ivar served: the :class:`glimpse.view.serving.Served` instances, by
        priority.
    :ivar panic: the job is in panic.
    """

    served: list[Served]
    panic: bool


class Steering:
    """
    The rules that steer answers, and the state they need.

    :param topology: the view.
    :param consul: the :class:`glimpse.consul.ConsulClient`, for the
        datacenters' coordinates.
    :param clock: ``IReactorTime``.
    :param failover_min: ``--failover-min``.
    :param failover_order: ``--failover-order``, or ``None``: nearest first.
    :param serve_warning: ``--serve-warning``.
    :param panic_threshold: ``--panic-threshold``, or ``None`` for off.
    :param panic_hold: ``--panic-hold``, seconds.
    :param interval: seconds between two reads of the coordinates.
    :ivar panics: the jobs' :class:`glimpse.view.panic.Panics`.
    """

    log = Logger()

    def __init__(self, topology: Topology, consul: ConsulClient | None, clock: IReactorTime,
                 failover_min: int = 1, failover_order: Sequence[str] | None = None,
                 serve_warning: bool = False, panic_threshold: float | None = None,
                 panic_hold: float = 30.0, interval: float = 30.0) -> None:
        self._topology = topology
        self._consul = consul
        self._clock = clock
        self.failover_min = failover_min
        self.failover_order = list(failover_order) if failover_order is not None else None
        self.serve_warning = serve_warning
        # First: the answers recomputed for a change must see its panic state.
        self.panics = Panics(topology, clock, panic_threshold, panic_hold, serve_warning)
        self._coordinates: list[Any] | None = None
        self._rtts: tuple[str | None, dict[str, float]] = (None, {})
        self._order: list[str] = []
        self._failing = False
        self._retry: IDelayedCall | None = None
        self._loop = LoopingCall(self.refresh_coordinates)
        self._loop.clock = clock
        self._interval = interval

    def start(self) -> None:
        """
        Start reading coordinates (unless ``--failover-order`` makes them
        moot) and keeping panic states on time.
        """
        self.panics.start()
        if self.failover_order is None and self._consul is not None:
            self._loop.start(self._interval, now=True)

    def stop(self) -> None:
        """
        Stop every loop.
        """
        self.panics.stop()
        if self._loop.running:
            self._loop.stop()
        if self._retry is not None and self._retry.active():
            self._retry.cancel()

    # Coordinates

    def refresh_coordinates(self) -> Deferred[None]:
        """
        Read the datacenters' coordinates; when the failover order they give
        changes, tell the view (answers of ``any`` names may change).
        """
        assert self._consul is not None

        early = False

        def got(body: list[Any]) -> None:
            nonlocal early
            self._failing = False
            self._coordinates = body
            self._rtts = (None, {})
            local = self._topology.local_zone
            if local is None:
                early = True
                return
            order = self.zones_to_try(local)
            if order != self._order:
                self._order = order
                rtts = self.rtts(local)
                self.log.info("Zones {local} fails over to, nearest first: {order}",
                              local=local, order=", ".join(
                                  f"{z} ({rtts[z] * 1000:.1f} ms)" if z in rtts else z
                                  for z in order) or "none")
                self._topology.announce(local, None)

        def failed(failure: Failure) -> None:
            # Consul out of reach is the view's to say (once): only what
            # else keeps the coordinates away is said here, once.
            if not failure.check(ConsulError):
                self.log.failure("Reading the datacenters' coordinates failed", failure)
            elif not self._failing and not failure.check(ConsulUnavailable):
                self.log.warn("Cannot read Consul's datacenter coordinates ({error}); "
                              "failover keeps the zones' last known order",
                              error=str(failure.value))
            self._failing = True

        def again(_: None) -> None:
            # Soon rather than at the next interval while none came yet, or
            # while the local zone is not known (at start).
            if (self._coordinates is None or early) and self._loop.running \
                    and (self._retry is None or not self._retry.active()):
                self._retry = self._clock.callLater(RETRY, self.refresh_coordinates)

        d = self._consul.coordinate_datacenters().addCallbacks(got, failed)
        return d.addCallback(again)

    def rtts(self, local: str) -> dict[str, float]:
        """
        Round-trip times from ``local`` to the other zones, in seconds, from
        the last coordinates read (empty before any).
        """
        if self._coordinates is None:
            return {}
        if self._rtts[0] != local:
            self._rtts = (local, datacenter_rtts(local, self._coordinates))
        return self._rtts[1]

    def zones_to_try(self, local: str) -> list[str]:
        """
        The zones an ``any`` name of ``local`` fails over to, in order.
        """
        return zones_to_try(local, self._topology.zones, self.rtts(local), self.failover_order)

    # What DNS serves

    def answer(self, zone: str, service_name: str, port: str,
               instances: tuple[Instance, ...]) -> Answer:
        """
        What DNS serves for one named port of a job in one zone.

        :param zone: the zone.
        :param service_name: the job's Consul service name.
        :param port: the named port.
        :param instances: the job's instances (every named port).
        """
        panic = self.panics.in_panic(zone, service_name, instances)
        return Answer(served(instances, port, self.serve_warning, panic), panic)

    # Failover

    def zones_with(self, address: Address) -> list[str]:
        """
        The zones that have an ``any`` address's job and port: the local zone
        first, then those it fails over to, in order.
        """
        local = self._topology.local_zone
        if local is None:
            return []
        key = (address.product, address.env, address.job)
        zones = self._topology.zones
        return [z for z in [local, *self.zones_to_try(local)]
                if z in zones and address.service in zones[z].tree.get(key, ())]

    def choose(self, address: Address) -> Deferred[Choice]:
        """
        The zone that answers an ``any`` address, and its instances: from
        the views held, without a Consul request (a zone whose view of the
        job is not loaded yet is loaded, as a first lookup would).  Asking
        keeps the job watched in every zone it may fail over to.

        :param address: an address whose zone is ``any``.
        :return: a Deferred firing with a :class:`Choice`, failing with
            :class:`glimpse.view.topology.Unavailable` when no zone can
            serve.
        """
        topology = self._topology
        local = topology.local_zone
        if local is None or local not in topology.zones:
            return fail(Unavailable("the local zone is not known yet: Consul has not answered"))
        service_name = address.consul_service
        having = self.zones_with(address)
        results: dict[str, tuple[Instance, ...] | str] = {}

        def fetch(zone: str) -> Deferred[object]:
            problem = topology.zone_problem(zone)
            if problem:
                results[zone] = problem
                return succeed(None)

            def kept(instances: tuple[Instance, ...]) -> None:
                results[zone] = instances

            def unavailable(failure: Failure) -> None:
                if not failure.check(Unavailable, KeyError):
                    self.log.failure("Reading {job} in {zone} failed", failure,
                                     job=service_name, zone=zone)
                results[zone] = str(failure.value)

            d = maybeDeferred(topology.instances, zone, service_name)
            return d.addCallbacks(kept, unavailable)

        fetches = {zone: fetch(zone) for zone in having}

        def settle(_: object = None) -> Choice:
            counts: dict[str, ZoneCount] = {
                z: r if isinstance(r, str) else serving_count(r, address.service,
                                                              self.serve_warning)
                for z, r in results.items()}
            what = ".".join((address.service, address.job, address.env, address.product))
            decision = decide(local, self.zones_to_try(local), counts, self.failover_min, what,
                              self.rtts(local), self.failover_order is not None)
            if decision is None:
                raise Unavailable(str(results.get(local)))
            return self._chosen(decision, results)

        def after_local(_: object) -> Choice | Deferred[Choice]:
            # The local zone alone decides when it has enough; else every
            # zone that may answer is waited for.
            mine = results.get(local)
            if isinstance(mine, tuple) and serving_count(
                    mine, address.service, self.serve_warning) >= self.failover_min:
                return settle()
            others = [d for zone, d in fetches.items() if zone != local]
            return DeferredList(others).addCallback(settle)

        first = fetches.get(local, succeed(None))
        return first.addCallback(after_local)

    def _chosen(self, decision: Decision,
                results: dict[str, tuple[Instance, ...] | str]) -> Choice:
        found = results.get(decision.zone)
        return Choice(decision.zone, found if isinstance(found, tuple) else (),
                      decision.failover)
