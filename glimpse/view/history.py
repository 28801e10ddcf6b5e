"""
When each check last changed status, as Glimpse saw it: Consul 1.14 keeps
no such time, so Glimpse records it from its view's changes.
"""

from datetime import UTC, datetime

from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger

from glimpse.mapping import consul_service_name
from glimpse.view.model import Instance
from glimpse.view.topology import Topology

log = Logger()


class CheckHistory:
    """
    When each check last changed status, as Glimpse saw it.

    Consul 1.14 keeps no such time, so Glimpse records it from the view's
    changes; a check whose status has not changed since Glimpse began
    watching its job has none (``None``).  Logs one line per instance whose
    health changes.

    :param topology: the :class:`glimpse.view.topology.Topology` to follow.
    :param clock: ``IReactorTime``.
    """

    def __init__(self, topology: Topology, clock: IReactorTime) -> None:
        self._topology = topology
        self._clock = clock
        # (zone, service name) -> {(instance id, check id or None for the
        # instance's health): (status, since)}
        self._jobs: dict[tuple[str, str | None], dict[tuple[str, str | None],
                                                      tuple[object, str | None]]] = {}
        topology.add_listener(self.changed)

    def changed(self, zone: str, name: str | None) -> None:
        """
        A view listener: record the status changes of one job's checks.

        :param zone: the zone that changed.
        :param name: the job's Consul service name, or ``None`` for a change
            of the zone's catalog (nothing to record).
        """
        if name is None:
            return
        instances = self._topology.cached_instances(zone, name)
        old = self._jobs.pop((zone, name), None)
        if instances is None:
            return
        now = datetime.fromtimestamp(self._clock.seconds(), UTC).isoformat()
        table: dict[tuple[str, str | None], tuple[object, str | None]] = {}
        for instance in instances:
            for check in instance.checks:
                key = (instance.id, check.id)
                status, since = (old or {}).get(key, (None, None))
                if old is not None and status != check.status:
                    since = now
                table[key] = (check.status, since)
            was = (old or {}).get((instance.id, None))
            table[(instance.id, None)] = (instance.healthy, None)
            if was is not None and was[0] != instance.healthy:
                log.info("Instance {instance} of {job} in {zone} is now {health}",
                         instance=instance.id, job=name, zone=zone,
                         health="healthy" if instance.healthy else "unhealthy")
        self._jobs[(zone, name)] = table

    def since(self, zone: str, instance: Instance, check_id: str) -> str | None:
        """
        When a check of an instance last changed status.

        :param zone: the instance's zone.
        :param instance: the :class:`glimpse.view.model.Instance`.
        :param check_id: the check's ID.
        :return: the time (ISO 8601, UTC), or ``None`` when Glimpse has not
            seen it change.
        """
        job = consul_service_name(instance.product, instance.env, instance.job)
        return self._jobs.get((zone, job), {}).get((instance.id, check_id), (None, None))[1]
