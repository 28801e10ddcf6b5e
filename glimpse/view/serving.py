"""
Which instances DNS serves, in which SRV priority and with which weight:
the rules DNS answers by, and HTTP's lookups and explanations show.
Pure: no I/O, no clock.

- An instance is *serving* when it is not draining and every check passes,
  or (with ``--serve-warning``) when its worst check warns.  It is served
  at priority 1 with the weight of its state (:attr:`Instance.weight`).
- A job in panic (:mod:`glimpse.view.panic`) is answered with every
  registered instance that is not draining: the serving ones at priority 1,
  the rest at priority 2, with their warning weight.
- An HTTP lookup may ask for a subset by meta (``?meta.version=2``):
  :func:`meta_mismatch`.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Mapping, Sequence

import attrs

from glimpse.view.model import PASSING, WARNING, Instance

#: The SRV priority of the instances a job serves, and of the others when
#: it is in panic.
HEALTHY_PRIORITY, PANIC_PRIORITY = 1, 2

#: A meta filter: ``(key, value)`` pairs, every one of which must match.
MetaFilter = tuple[tuple[str, str], ...]


@attrs.frozen
class Served:
    """
    An instance as DNS serves it.

    :ivar instance: the :class:`glimpse.view.model.Instance`.
    :ivar priority: its SRV priority: :data:`HEALTHY_PRIORITY`, or
        :data:`PANIC_PRIORITY` for an instance served only because its job
        is in panic.
    :ivar weight: its SRV weight.
    """

    instance: Instance
    priority: int
    weight: int

    @property
    def ip(self) -> str:
        """
        The instance's IP.
        """
        return self.instance.ip

    @property
    def port(self) -> int:
        """
        The instance's port.
        """
        return self.instance.port


def is_serving(instance: Instance, serve_warning: bool = False) -> bool:
    """
    Whether DNS serves an instance outside panic: not draining, and every
    check passing (or, with ``serve_warning``, its worst check warning).

    :param instance: the instance.
    :param serve_warning: serve instances whose worst check warns.
    """
    if instance.drain:
        return False
    status = instance.status
    return status == PASSING or (serve_warning and status == WARNING)


def _ip_key(ip: str) -> tuple[int, bytes]:
    try:
        parsed = ipaddress.ip_address(ip)
        return (parsed.version, parsed.packed)
    except ValueError:
        return (9, ip.encode())


def _sorted_unique(instances: Iterable[Instance]) -> list[Instance]:
    # One per (ip, port), sorted by IP then port, so that equal views give
    # equal answers.
    seen: dict[tuple[str, int], Instance] = {}
    for instance in instances:
        seen.setdefault((instance.ip, instance.port), instance)
    return [seen[key] for key in sorted(seen, key=lambda k: (_ip_key(k[0]), k[1]))]


def served(instances: Iterable[Instance], service: str, serve_warning: bool = False,
           panic: bool = False) -> list[Served]:
    """
    What DNS answers for one named port of a job: the serving instances at
    priority 1 with the weight of their state, then, when the job is in
    panic, every other instance that is not draining at priority 2 with its
    warning weight.  One per (ip, port), each group sorted by IP and port.

    :param instances: the job's instances (every named port).
    :param service: the named port.
    :param serve_warning: serve instances whose worst check warns.
    :param panic: the job is in panic.
    :return: a list of :class:`Served`.
    """
    mine = [i for i in instances if i.service == service]
    healthy = _sorted_unique(i for i in mine if is_serving(i, serve_warning))
    answer = [Served(i, HEALTHY_PRIORITY, i.weight) for i in healthy]
    if panic:
        taken = {(i.ip, i.port) for i in healthy}
        rest = _sorted_unique(i for i in mine if not i.drain and (i.ip, i.port) not in taken
                              and not is_serving(i, serve_warning))
        answer += [Served(i, PANIC_PRIORITY, i.weight_warning) for i in rest]
    return answer


def serving_count(instances: Iterable[Instance], service: str,
                  serve_warning: bool = False) -> int:
    """
    How many (ip, port) of one named port DNS serves outside panic: what
    failover compares with ``--failover-min``.

    :param instances: the job's instances (every named port).
    :param service: the named port.
    :param serve_warning: serve instances whose worst check warns.
    """
    return len(served(instances, service, serve_warning))


def health_counts(instances: Iterable[Instance], serve_warning: bool = False) -> tuple[int, int]:
    """
    How many of a job's instances are healthy, of how many: what panic
    compares with ``--panic-threshold``.  An instance (its named ports
    together, as ``/v1/topology`` counts it) is healthy when every one of
    its ports is serving.  Draining instances are left out of both counts:
    draining is an operator's decision, not a failure.

    :param instances: the job's instances (every named port).
    :param serve_warning: a warning counts as healthy.
    :return: ``(healthy, registered)``.
    """
    each: dict[tuple[str, str, str], bool] = {}
    for i in instances:
        if i.drain:
            continue
        key = (i.node, i.provider, i.instance)
        each[key] = each.get(key, True) and is_serving(i, serve_warning)
    return sum(each.values()), len(each)


def meta_mismatch(instance: Instance, meta: MetaFilter) -> str | None:
    """
    Why an instance does not match a meta filter.

    :param instance: the instance.
    :param meta: ``(key, value)`` pairs, all of which must match.
    :return: the first mismatch, said for a person, or ``None`` when it
        matches.
    """
    own = dict(instance.meta)
    for key, value in meta:
        if key not in own:
            return f"its meta has no {key!r} (?meta.{key}={value})"
        if own[key] != value:
            return f"its meta {key} is {own[key]!r}, not {value!r}"
    return None


def matching(instances: Sequence[Instance], meta: MetaFilter) -> list[Instance]:
    """
    The instances that match a meta filter (all of them for none).

    :param instances: the instances.
    :param meta: ``(key, value)`` pairs, all of which must match.
    """
    if not meta:
        return list(instances)
    return [i for i in instances if meta_mismatch(i, meta) is None]


def fraction_text(healthy: int, total: int) -> str:
    """
    ``"1 of 4 instances healthy (25%)"``, for logs and explanations.
    """
    share = f" ({100 * healthy / total:.0f}%)" if total else ""
    return f"{healthy} of {total} instance{'s' if total != 1 else ''} healthy{share}"


def as_mapping(meta: MetaFilter) -> Mapping[str, str]:
    """
    A meta filter as a dict, for JSON bodies.
    """
    return dict(meta)
