"""
Panic mode: when less than ``--panic-threshold`` of a job's instances are
healthy, DNS answers every one of them (the healthy ones first), rather
than send all of a job's traffic to the few left, or answer "nobody" while
checks flap.  A job leaves panic only once its healthy share has stayed at
or above the threshold for ``--panic-hold`` seconds, so a job flapping
around the threshold is not flapped with it.

:func:`step` is the rule (pure); :class:`Panics` keeps each job's state in
the view, fed by the view's changes and by the clock.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import attrs
from twisted.internet.interfaces import IReactorTime
from twisted.internet.task import LoopingCall
from twisted.logger import Logger

from glimpse.view.model import Instance
from glimpse.view.serving import fraction_text, health_counts

if TYPE_CHECKING:
    from glimpse.view.topology import Topology

#: A job: ``(zone, Consul service name)``.
JobKey = tuple[str, str]


@attrs.frozen
class PanicState:
    """
    A job's panic state.

    :ivar panic: the job is in panic.
    :ivar since: when it entered (or, outside panic, last left) panic;
        ``None`` when it never was in panic.
    :ivar recovered_since: in panic, since when its healthy share has been
        at or above the threshold (``None`` while it is below).
    :ivar healthy: its healthy instances, when last counted.
    :ivar total: its registered instances (draining ones left out).
    """

    panic: bool
    since: float | None
    recovered_since: float | None
    healthy: int
    total: int

    def describe(self, threshold: float) -> str:
        """
        The state, said for a person (logs, ``/v1/explain``).

        :param threshold: ``--panic-threshold``.
        """
        counts = fraction_text(self.healthy, self.total)
        if self.panic:
            return f"in panic: {counts}, below {threshold:.0%}"
        return f"not in panic: {counts}"


def step(state: PanicState | None, healthy: int, total: int, threshold: float, hold: float,
         now: float) -> PanicState:
    """
    A job's next panic state.

    A job enters panic as soon as fewer than ``threshold`` of its
    ``total`` instances are healthy; it leaves only once its healthy share
    has been at or above the threshold for ``hold`` seconds.  A job with no
    instance is never in panic.

    :param state: its state so far, or ``None``.
    :param healthy: its healthy instances now.
    :param total: its registered instances now.
    :param threshold: ``--panic-threshold``, a fraction.
    :param hold: ``--panic-hold``, seconds.
    :param now: the clock's time.
    """
    below = total > 0 and healthy < threshold * total
    if state is None or not state.panic:
        if below:
            return PanicState(True, now, None, healthy, total)
        return PanicState(False, state.since if state else None, None, healthy, total)
    if below:
        return PanicState(True, state.since, None, healthy, total)
    recovered = now if state.recovered_since is None else state.recovered_since
    if now - recovered >= hold:
        return PanicState(False, now, None, healthy, total)
    return PanicState(True, state.since, recovered, healthy, total)


class Panics:
    """
    The panic state of every job in the view.

    A job's state follows the view's changes of it (a listener of the
    :class:`glimpse.view.topology.Topology`, added first so that the answers
    recomputed for a change see the state it leads to), and the clock: every
    ``tick`` seconds a job held in panic is let go once its hold is over,
    and the view is told (so DNS drops the job's kept answers and HTTP
    followers get the new answer).

    :param topology: the view (a :class:`glimpse.view.topology.Topology`).
    :param clock: ``IReactorTime``.
    :param threshold: ``--panic-threshold`` (a fraction in (0, 1]), or
        ``None``: panic mode is off.
    :param hold: ``--panic-hold``, seconds.
    :param serve_warning: a warning instance counts as healthy.
    :param tick: seconds between two checks of the held jobs.
    """

    log = Logger()

    def __init__(self, topology: Topology, clock: IReactorTime, threshold: float | None = None,
                 hold: float = 30.0, serve_warning: bool = False, tick: float = 1.0) -> None:
        self._topology = topology
        self._clock = clock
        self.threshold = threshold
        self.hold = hold
        self._serve_warning = serve_warning
        self._states: dict[JobKey, PanicState] = {}
        self._loop = LoopingCall(self.tick)
        self._loop.clock = clock
        self._tick = tick
        if threshold is not None:
            topology.add_listener(self._changed)

    def start(self) -> None:
        """
        Start letting held jobs go on time (nothing to do when off).
        """
        if self.threshold is not None and not self._loop.running:
            self._loop.start(self._tick, now=False)

    def stop(self) -> None:
        """
        Stop the clock.
        """
        if self._loop.running:
            self._loop.stop()

    def state(self, zone: str, service: str,
              instances: tuple[Instance, ...] | None = None) -> PanicState | None:
        """
        A job's panic state.  A job not counted yet (its first answer is
        being served) is counted now, from ``instances``.

        :param zone: the zone.
        :param service: the job's Consul service name.
        :param instances: its instances, as the answer being built has them.
        :return: its state, or ``None`` when panic mode is off or the job is
            unknown.
        """
        if self.threshold is None:
            return None
        key = (zone, service)
        state = self._states.get(key)
        if state is None and instances is not None:
            state = self._update(key, instances)
        return state

    def in_panic(self, zone: str, service: str,
                 instances: tuple[Instance, ...] | None = None) -> bool:
        """
        Whether DNS answers a job with every instance now.

        :param zone: the zone.
        :param service: the job's Consul service name.
        :param instances: its instances, as the answer being built has them.
        """
        state = self.state(zone, service, instances)
        return state is not None and state.panic

    def count(self) -> int:
        """
        How many jobs are in panic now.
        """
        return sum(1 for s in self._states.values() if s.panic)

    def _update(self, key: JobKey, instances: tuple[Instance, ...]) -> PanicState:
        assert self.threshold is not None
        old = self._states.get(key)
        healthy, total = health_counts(instances, self._serve_warning)
        new = step(old, healthy, total, self.threshold, self.hold, self._clock.seconds())
        self._states[key] = new
        if new.panic != (old is not None and old.panic):
            counts = fraction_text(healthy, total)
            if new.panic:
                self.log.warn("{service} in {zone} enters panic ({counts}, below {threshold:.0%}):"
                              " DNS answers every instance, the healthy ones first",
                              service=key[1], zone=key[0], counts=counts,
                              threshold=self.threshold)
            else:
                self.log.info("{service} in {zone} leaves panic ({counts} for {hold:g}s)",
                              service=key[1], zone=key[0], counts=counts, hold=self.hold)
        return new

    def _changed(self, zone: str, name: str | None) -> None:
        if name is None:
            if zone not in self._topology.zones:
                for key in [k for k in self._states if k[0] == zone]:
                    del self._states[key]
            return
        instances = self._topology.cached_instances(zone, name)
        if instances is None:
            self._states.pop((zone, name), None)
            return
        # A listener: the answers recomputed for this change come after it.
        self._update((zone, name), instances)

    def tick(self) -> None:
        """
        Let go of the jobs whose hold is over, and tell the view.
        """
        held = [k for k, s in self._states.items() if s.panic and s.recovered_since is not None]
        for key in held:
            instances = self._topology.cached_instances(*key)
            if instances is None:
                self._states.pop(key, None)
                continue
            if not self._update(key, instances).panic:
                self._topology.announce(*key)

