"""
The bodies of the lookup, topology and explain answers, built from the
view.  No Consul request is made here: jobs are read through
:obj:`glimpse.view.topology.Topology.instances`, which serves from the view once a
job is watched.

Every body has an *index*: a number derived from its content alone, so two
equal answers have the same index and a changed answer (almost surely) a
different one.  Long-polls and the ``X-Glimpse-Index`` header use it.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Collection, Iterable, Mapping, Sequence
from fnmatch import fnmatchcase
from typing import TYPE_CHECKING, Any, NoReturn

from twisted.internet.defer import FirstError, gatherResults

from glimpse.address import ANY_ZONE, consul_service_name
from glimpse.http._json import HTTPError
from glimpse.view.model import STATUSES as _STATUSES
from glimpse.view.serving import MetaFilter, meta_mismatch
from glimpse.view.topology import Unavailable

if TYPE_CHECKING:
    from twisted.internet.defer import Deferred
    from twisted.python.failure import Failure

    from glimpse.address import Address
    from glimpse.view.history import CheckHistory
    from glimpse.view.model import Instance
    from glimpse.view.steering import Choice, Steering
    from glimpse.view.topology import Topology

#: A job's labels: ``(product, env, job)``.
Job = tuple[str, str, str]

#: Instance statuses in order of gravity; an instance has its worst check's.
STATUSES = _STATUSES

#: The levels of a topology path below the root.
LEVELS = ("zone", "product", "env", "job")


def body_index(body: Any) -> int:
    """
    The index of a body: 60 bits of SHA-256 over its canonical JSON.

    Equal bodies have equal indexes, so a client's index says exactly which
    answer it holds; JSON numbers stay exact in every client below 2**53,
    hence the mask.
    """
    data = json.dumps(body, sort_keys=True, separators=(",", ":")).encode("utf-8")
    return int.from_bytes(hashlib.sha256(data).digest()[:8], "big") & (2**53 - 1) or 1


def zone_or_error(topology: Topology, zone: str) -> None:
    """
    Raise the :class:`HTTPError` for a zone that cannot be served, else nothing.

    :raises HTTPError: 404 for a zone that does not exist, 503 for one whose
        view cannot serve now.
    """
    try:
        problem = topology.zone_problem(zone)
    except KeyError:
        known = ", ".join(sorted(topology.zones)) or "none yet"
        raise HTTPError(404, f"unknown zone {zone!r}", f"known zones: {known}") from None
    if problem:
        raise HTTPError(503, "Glimpse cannot serve this zone now", problem)


def jobs_or_error(topology: Topology, zone: str, names: Iterable[str]) -> None:
    """
    Raise the :class:`HTTPError` for a zone, or one of its jobs, whose view
    cannot serve, else nothing: a job whose view is older than max-stale
    answers 503 as DNS answers SERVFAIL, even while its zone's catalog is
    fresh.

    :raises HTTPError: 404 for a zone that does not exist, 503 for a view
        that cannot serve now.
    """
    zone_or_error(topology, zone)
    for name in names:
        problem = topology.job_problem(zone, name)
        if problem:
            raise HTTPError(503, "Glimpse cannot serve this job now", problem)


def _unwrap(failure: Failure) -> Failure:
    # gatherResults fails with a FirstError around the failure that counts.
    return failure.value.subFailure if isinstance(failure.value, FirstError) else failure


def _unavailable(failure: Failure) -> NoReturn:
    failure.trap(Unavailable)
    raise HTTPError(503, "Glimpse cannot serve this now", str(failure.value))


def instance_status(instance: Instance) -> str:
    """
    ``passing``, ``warning`` or ``critical``: the worst status of the
    instance's checks (an unknown status counts as critical).
    """
    return instance.status


def matching_jobs(tree: Mapping[Job, Collection[str]],
                  address: Address) -> list[tuple[Job, list[str]]]:
    """
    The jobs of a zone's tree that an address (possibly with ``*`` labels)
    names, with the named ports it selects.

    :param tree: a zone's tree: ``{(product, env, job): port names}``.
    :return: a sorted list of ``((product, env, job), [port names])``.
    """
    found = []
    for (product, env, job), ports in sorted(tree.items()):
        if not all(fnmatchcase(value, pattern) for value, pattern in (
                (product, address.product), (env, address.env), (job, address.job))):
            continue
        chosen = sorted(p for p in ports if fnmatchcase(p, address.service))
        if chosen:
            found.append(((product, env, job), chosen))
    return found


def is_wildcard(address: Address) -> bool:
    """
    Whether an address holds a ``*`` label.
    """
    return "*" in (address.service, address.job, address.env, address.product)


def jobs_of(topology: Topology, address: Address) -> list[str]:
    """
    The Consul service names a lookup of ``address`` reads: what its answer
    depends on, besides the zone's catalog.
    """
    zone = topology.zones.get(address.zone)
    if zone is None:
        return []
    if not is_wildcard(address):
        return [address.consul_service]
    return [consul_service_name(*job) for job, _ in matching_jobs(zone.tree, address)]


def lookup_body(topology: Topology, address: Address, dns_zone: str, healthy_only: bool = False,
                cap: int = 1000, checks: CheckHistory | None = None,
                steering: Steering | None = None,
                meta: MetaFilter = ()) -> Deferred[dict[str, Any]]:
    """
    The lookup answer for an address, exact or with ``*`` labels, or in the
    zone ``any`` (failover: the zone that answers, and why).

    :param dns_zone: the DNS zone, for the ``fqdn``.
    :param healthy_only: leave out the instances that are not healthy.
    :param cap: at most this many instances; more make ``truncated`` true.
    :param checks: a :class:`glimpse.view.history.CheckHistory` adding each
        check's ``last_change``, or ``None``.
    :param steering: the :class:`glimpse.view.steering.Steering` that says
        which jobs are in panic and which zone answers ``any``, or ``None``.
    :param meta: only the instances whose meta has these ``(key, value)``.
    :return: a Deferred firing with the body, failing with an :class:`HTTPError`
        (503 when the view cannot serve).
    :raises HTTPError: at once, for a zone that cannot be served or an
        exact address that does not exist (404).
    """
    if address.zone == ANY_ZONE and steering is not None:
        return _any_lookup(topology, address, dns_zone, healthy_only, cap, checks, steering,
                           meta)
    zone_or_error(topology, address.zone)
    tree = topology.zones[address.zone].tree
    if is_wildcard(address):
        selected = matching_jobs(tree, address)
    else:
        ports = tree.get((address.product, address.env, address.job))
        if ports is None or address.service not in ports:
            raise HTTPError(404, f"no address {address.relative()!r}",
                            "check the spelling; /v1/topology lists what exists")
        selected = [((address.product, address.env, address.job), [address.service])]
    ds = [topology.instances(address.zone, consul_service_name(*job)) for job, _ in selected]

    def answer(results: Sequence[tuple[Instance, ...]]) -> dict[str, Any]:
        instances: list[Instance] = []
        panic = False
        for (job, ports), found in zip(selected, results, strict=True):
            if steering is not None:
                panic = steering.panics.in_panic(address.zone, consul_service_name(*job),
                                                 found) or panic
            instances.extend(i for i in found if i.service in ports)
        return _lookup(address, dns_zone, address.zone, None, panic, instances, healthy_only,
                       cap, checks, meta)

    d = gatherResults(ds, consumeErrors=True)
    d.addErrback(_unwrap)
    return d.addCallbacks(answer, _unavailable)


def any_or_error(steering: Steering, address: Address) -> None:
    """
    Raise the :class:`HTTPError` for an ``any`` address that cannot be
    looked up, else nothing.

    :raises HTTPError: 400 for ``*`` labels, 404 when no zone has it.
    """
    if is_wildcard(address):
        raise HTTPError(400, "an 'any' address names one job and port",
                        "write it without '*', e.g. http.web.prod.shop.any; or name a zone")
    if not steering.zones_with(address):
        raise HTTPError(404, f"no address {address.relative()!r} in any zone",
                        "check the spelling; /v1/topology lists what exists")


def choose(steering: Steering, address: Address) -> Deferred[Choice]:
    """
    The zone that answers an ``any`` address (a 503 when none can).
    """
    any_or_error(steering, address)
    return steering.choose(address).addErrback(_unavailable)


def _any_lookup(topology: Topology, address: Address, dns_zone: str, healthy_only: bool,
                cap: int, checks: CheckHistory | None, steering: Steering,
                meta: MetaFilter) -> Deferred[dict[str, Any]]:
    def answer(choice: Choice) -> dict[str, Any]:
        panic = steering.panics.in_panic(choice.zone, address.consul_service, choice.instances)
        return _lookup(address, dns_zone, choice.zone, choice.failover, panic,
                       [i for i in choice.instances if i.service == address.service],
                       healthy_only, cap, checks, meta)

    return choose(steering, address).addCallback(answer)


def _lookup(address: Address, dns_zone: str, zone: str, failover: Any, panic: bool,
            instances: Sequence[Instance], healthy_only: bool, cap: int,
            checks: CheckHistory | None, meta: MetaFilter) -> dict[str, Any]:
    chosen = [i for i in instances if (i.healthy or not healthy_only)
              and (not meta or meta_mismatch(i, meta) is None)]
    return {
        "address": address.relative(),
        "fqdn": address.fqdn(dns_zone),
        "zone": zone,
        "failover": failover.to_json() if failover is not None else None,
        "panic": panic,
        "healthy_only": healthy_only,
        "truncated": len(chosen) > cap,
        "instances": [instance_json(i, zone, checks) for i in chosen[:cap]],
    }


def instance_json(instance: Instance, zone: str,
                  checks: CheckHistory | None = None) -> dict[str, Any]:
    """
    An instance as the HTTP API shows it, with each check's ``last_change``
    (``None`` when unknown).
    """
    body = instance.to_json(zone)
    body["status"] = instance_status(instance)
    for check in body["checks"]:
        check["last_change"] = checks.since(zone, instance, check["id"]) if checks else None
    return body


def _split_path(topology: Topology, path: Sequence[str]) -> None:
    """
    The validated labels of a topology path, raising 404 for a zone or node
    that does not exist.
    """
    if len(path) > len(LEVELS):
        raise HTTPError(404, "a topology path has at most four parts",
                        "use /v1/topology/<zone>/<product>/<env>/<job>")
    if path:
        zone_or_error(topology, path[0])
        tree = topology.zones[path[0]].tree
        if len(path) > 1 and not any(job[:len(path) - 1] == tuple(path[1:]) for job in tree):
            raise HTTPError(404, f"nothing at {'/'.join(path)!r}",
                            f"GET /v1/topology/{'/'.join(path[:-1])} lists what exists")


def under(path: Sequence[str], zone: str, job: Sequence[str]) -> bool:
    """
    Whether ``job`` (``(product, env, job)``) of ``zone`` is below a topology
    path.
    """
    return not path or (zone == path[0] and tuple(job[:len(path) - 1]) == tuple(path[1:]))


def _counts() -> dict[str, Any]:
    return {"instances": 0, "passing": 0, "warning": 0, "critical": 0, "draining": 0}


def _count(counts: dict[str, Any], status: str, drain: bool) -> None:
    counts["instances"] += 1
    counts[status] += 1
    counts["draining"] += int(drain)


def topology_body(topology: Topology, path: Sequence[str]) -> Deferred[dict[str, Any]]:
    """
    The topology at a path (``[]``, ``[zone]``, ... ``[zone, product, env,
    job]``): its children with counts of instances passing, warning,
    critical.  An instance is counted once, with the worst status over its
    named ports.

    :return: a Deferred firing with the body, failing with an :class:`HTTPError`
        (503 when the view cannot serve).
    :raises HTTPError: at once, for a path that does not exist (404) or a
        zone that cannot be served.
    """
    _split_path(topology, path)
    if path:
        zones = [path[0]]
    else:
        zones = sorted(z for z in topology.zones if topology.zone_problem(z) is None)
    jobs: list[tuple[str, Job]] = []
    for zone in zones:
        for job in sorted(topology.zones[zone].tree):
            if under(path, zone, job):
                jobs.append((zone, job))
    # A job whose view cannot serve (its reads fail) is left out of the
    # counts and named in "unavailable": one job never fails the others'.
    ds = [topology.instances(zone, consul_service_name(*job)).addErrback(
        lambda f: f.trap(Unavailable) and str(f.value)) for zone, job in jobs]

    def answer(results: Sequence[Sequence[Instance] | str]) -> dict[str, Any]:
        level = LEVELS[len(path)] if len(path) < len(LEVELS) else "instance"
        total = _counts()
        children: dict[str, dict[str, Any]] = {}
        unavailable = {"/".join((zone, *job)): found for (zone, job), found
                       in zip(jobs, results, strict=True) if isinstance(found, str)}
        if unavailable and len(unavailable) == len(jobs):
            raise HTTPError(503, "Glimpse cannot serve this now",
                            next(iter(unavailable.values())))
        for (zone, job), found in zip(jobs, results, strict=True):
            merged: dict[tuple[str, str, str], dict[str, Any]] = {}
            for i in () if isinstance(found, str) else found:
                key = (i.node, i.provider, i.instance)
                entry = merged.setdefault(key, {"instance": i, "status": "passing",
                                                "ports": {}})
                entry["ports"][i.service] = i.port
                status = instance_status(i)
                if STATUSES.index(status) > STATUSES.index(entry["status"]):
                    entry["status"] = status
            labels = (zone, *job)
            for (node, provider, name), entry in sorted(merged.items()):
                _count(total, entry["status"], entry["instance"].drain)
                if level == "instance":
                    children[f"{name}@{node}"] = {
                        "name": name, "node": node, "provider": provider,
                        "ip": entry["instance"].ip, "ports": entry["ports"],
                        "status": entry["status"], "drain": entry["instance"].drain}
                    continue
                child = labels[len(path)]
                counts = children.setdefault(child, dict(_counts(), name=child))
                _count(counts, entry["status"], entry["instance"].drain)
            if (level != "instance" and len(path) < len(labels)
                    and labels[len(path)] not in children):
                children[labels[len(path)]] = dict(_counts(), name=labels[len(path)])
        if not path:
            for zone in zones:
                children.setdefault(zone, dict(_counts(), name=zone))
        body = {
            "path": "/".join(path),
            "level": level,
            "counts": total,
            "children": [children[k] for k in sorted(children)],
        }
        if unavailable:
            body["unavailable"] = sorted(unavailable)
        return body

    d = gatherResults(ds, consumeErrors=True)
    d.addErrback(_unwrap)
    return d.addCallbacks(answer, _unavailable)
