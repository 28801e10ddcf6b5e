"""
The topology as Glimpse sees it: instances with their health, built from
Consul's health API answers.  Pure: no I/O.

The view holds about four of these objects per instance (the instance, its
checks and their tuple): with 100,000 instances, CPython's full garbage
collection walked some 400,000 objects, 150-300 ms during which every DNS
answer waited.  They are values: frozen, made whole from strings, numbers
and earlier values, so none can ever be part of a reference cycle, and
reference counting frees each the moment the view drops it.  So they are
taken out of the collector's tracked set as they are made
(``PyObject_GC_UnTrack``, what CPython itself does for tuples and dicts of
atomic values), and a full collection no longer walks the view
(``python -m bench.soak.gc_stall``: 3-6 ms instead of 150-300 ms).  The
one rule that keeps this sound: :class:`Check` and :class:`Instance` hold
only atomic values and tuples of them (``tests/metrics/test_gcpauses.py``
checks their fields), never a mutable object or a reference back.
"""

import ctypes
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import attrs

from glimpse.mapping import (
    DEFAULT_WEIGHT,
    META_INSTANCE,
    META_PORT,
    META_PROVIDER,
    aliased_service,
    is_draining,
    is_own_meta_key,
    split_consul_service,
    weights_of,
)

PASSING = "passing"
WARNING = "warning"
CRITICAL = "critical"
#: Instance statuses in order of gravity; an instance has its worst check's.
STATUSES = (PASSING, WARNING, CRITICAL)
#: Consul's type of an alias check.
ALIAS = "alias"


def _gc_untracker() -> Callable[[object], None]:
    # CPython's PyObject_GC_UnTrack, called with the GIL held (PYFUNCTYPE);
    # elsewhere (PyPy has no pythonapi) nothing: the values stay tracked.
    try:
        return ctypes.PYFUNCTYPE(None, ctypes.py_object)(
            ("PyObject_GC_UnTrack", ctypes.pythonapi))
    except (AttributeError, OSError):
        return lambda value: None


#: Takes one acyclic value out of the collector's tracked set.
_untrack = _gc_untracker()


@attrs.frozen
class Check:
    """
    One Consul health check as it bears on an instance.

    :ivar id: Consul's check ID.
    :ivar name: the check's name.
    :ivar type: ``http``, ``tcp``, ``ttl``, ``grpc``, or empty (a node's).
    :ivar status: ``passing``, ``warning`` or ``critical``.
    :ivar output: what the check last said.
    :ivar node_level: the check belongs to the node (e.g. serfHealth), not
        to the service; a failing node check takes every instance on it out.
    """

    id: str
    name: str
    type: str
    status: str
    output: str
    node_level: bool

    def to_json(self) -> dict[str, Any]:
        """
        The check as the HTTP API shows it.

        :return: a JSON-able dict.
        """
        return {
            "id": self.id,
            "name": self.name,
            "type": self.type or ("node" if self.node_level else ""),
            "status": self.status,
            "output": self.output,
            "node_level": self.node_level,
        }


@attrs.frozen
class Instance:
    """
    One named port of one instance: one Consul registration.

    :ivar id: the registration's ID.
    :ivar product: the job's product.
    :ivar env: the job's env.
    :ivar job: the job.
    :ivar instance: the instance's name.
    :ivar service: the named port.
    :ivar provider: the provider that registered it.
    :ivar node: the Consul node it is registered on.
    :ivar ip: its address (the node's when the registration has none).
    :ivar port: its port.
    :ivar meta: the provider's own Meta, ``(key, value)`` pairs, sorted.
    :ivar checks: its checks (:class:`Check`), the node's first.
    :ivar drain: it is draining: shown over HTTP, left out of DNS.
    :ivar weight_passing: its SRV weight while every check passes (Consul's
        ``Weights.Passing``).
    :ivar weight_warning: its SRV weight while a check warns
        (``Weights.Warning``); also the weight it is served with in panic.
    """

    id: str
    product: str
    env: str
    job: str
    instance: str
    service: str
    provider: str
    node: str
    ip: str
    port: int
    meta: tuple[tuple[str, str], ...] = ()
    checks: tuple[Check, ...] = ()
    drain: bool = False
    weight_passing: int = DEFAULT_WEIGHT
    weight_warning: int = DEFAULT_WEIGHT

    @property
    def status(self) -> str:
        """
        ``passing``, ``warning`` or ``critical``: the worst status of its
        checks, the node's included (an unknown status counts as critical).
        """
        worst = 0
        for check in self.checks:
            rank = STATUSES.index(check.status) if check.status in STATUSES else 2
            worst = max(worst, rank)
        return STATUSES[worst]

    @property
    def weight(self) -> int:
        """
        The SRV weight of its current state: its passing weight while every
        check passes, else its warning weight (a warning instance served
        with ``--serve-warning``, or any instance served in panic).
        """
        return self.weight_passing if self.status == PASSING else self.weight_warning

    @property
    def healthy(self) -> bool:
        """
        Whether DNS serves this instance: every check, the node's included,
        is passing (a warning is not), and it is not draining.
        """
        return not self.drain and all(c.status == PASSING for c in self.checks)

    def to_json(self, zone: str) -> dict[str, Any]:
        """
        The instance as the HTTP API shows it.

        :param zone: the zone it is in.
        :return: a JSON-able dict.
        """
        return {
            "id": self.id,
            "instance": self.instance,
            "service": self.service,
            "host": self.node,
            "node": self.node,
            "ip": self.ip,
            "port": self.port,
            "zone": zone,
            "provider": self.provider,
            "meta": dict(self.meta),
            "drain": self.drain,
            "healthy": self.healthy,
            "weight": self.weight,
            "weights": {PASSING: self.weight_passing, WARNING: self.weight_warning},
            "checks": [c.to_json() for c in self.checks],
        }


def instance_from_entry(entry: Any) -> Instance | None:
    """
    Build the :class:`Instance` of one entry of ``/v1/health/service/<name>``.

    :param entry: the decoded entry: ``{"Node": ..., "Service": ..., "Checks": ...}``.
    :return: the instance, or ``None`` for a registration Glimpse did not
        write (its Meta lacks the port name) or that is malformed.
    """
    try:
        node = entry["Node"]
        service = entry["Service"]
        meta = service.get("Meta") or {}
        fields = split_consul_service(service["Service"])
        port_name = meta.get(META_PORT)
        if fields is None or not port_name:
            return None
        checks = tuple(
            sorted(
                (
                    Check(
                        id=c["CheckID"],
                        name=c.get("Name", ""),
                        type=c.get("Type", ""),
                        status=c.get("Status", ""),
                        output=c.get("Output", ""),
                        node_level=not c.get("ServiceID"),
                    )
                    for c in entry.get("Checks") or ()
                ),
                key=lambda c: (not c.node_level, c.id),
            )
        )
        product, env, job = fields
        passing, warning = weights_of(service)
        instance = Instance(
            id=service["ID"],
            product=product,
            env=env,
            job=job,
            instance=meta.get(META_INSTANCE, service["ID"]),
            service=port_name,
            provider=meta.get(META_PROVIDER, ""),
            node=node["Node"],
            ip=service.get("Address") or node["Address"],
            port=int(service["Port"]),
            meta=tuple(
                sorted((k, v) for k, v in meta.items() if not is_own_meta_key(k))
            ),
            checks=checks,
            drain=is_draining(meta),
            weight_passing=passing,
            weight_warning=warning,
        )
    except (AttributeError, KeyError, TypeError, ValueError):
        return None
    for check in checks:
        _untrack(check)
    _untrack(checks)
    _untrack(instance)
    return instance


def with_mirrored_checks(instances: Sequence[Instance]) -> list[Instance]:
    """
    Show the checks an alias check mirrors instead of the alias check: a
    named port whose registration mirrors the one carrying its instance's
    checks (:func:`glimpse.mapping.alias_check_id`) gets the carrier's own
    checks, with their status and output.  So every port of an instance
    shows the real checks, and has, in any one answer, exactly the health
    of the others.  An alias whose carrier is not in the answer stays as
    Consul has it (critical: the service could not be found).

    :param instances: the instances of one answer.
    :return: the same instances, in the same order.
    """
    by_id = {(i.node, i.id): i for i in instances}
    out = []
    for instance in instances:
        checks: list[Check] = []
        mirrored = False
        for check in instance.checks:
            target = (aliased_service(instance.id, check.id)
                      if check.type == ALIAS and not check.node_level else None)
            carrier = by_id.get((instance.node, target)) if target else None
            if carrier is None:
                checks.append(check)
            else:
                checks.extend(c for c in carrier.checks if not c.node_level and c.type != ALIAS)
                mirrored = True
        if mirrored:
            # The node's checks first, as instance_from_entry orders them.
            checks.sort(key=lambda c: (not c.node_level, c.id))
            shown = attrs.evolve(instance, checks=tuple(checks))
            _untrack(shown.checks)
            _untrack(shown)
            out.append(shown)
        else:
            out.append(instance)
    return out


def instances_from_health(entries: Iterable[Any] | None) -> tuple[Instance, ...]:
    """
    The instances of a ``/v1/health/service/<name>`` answer, sorted by node
    and ID so that equal topologies compare equal; each named port shows
    its instance's real checks (:func:`with_mirrored_checks`).

    :param entries: the decoded answer (``None`` counts as empty).
    :return: the instances Glimpse wrote, leaving out the others.
    """
    found = (instance_from_entry(e) for e in entries or ())
    return tuple(with_mirrored_checks(
        sorted((i for i in found if i is not None), key=lambda i: (i.node, i.id))))
