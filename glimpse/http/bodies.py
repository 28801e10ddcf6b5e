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

from twisted.internet.defer import FirstError, gatherResults, succeed

from glimpse.address import consul_service_name
from glimpse.http._json import HTTPError
from glimpse.view.topology import Unavailable

if TYPE_CHECKING:
    from twisted.internet.defer import Deferred
    from twisted.python.failure import Failure

    from glimpse.address import Address
    from glimpse.view.history import CheckHistory
    from glimpse.view.model import Instance
    from glimpse.view.topology import Topology

#: A job's labels: ``(product, env, job)``.
Job = tuple[str, str, str]

#: Instance statuses in order of gravity; an instance has its worst check's.
STATUSES = ("passing", "warning", "critical")

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
    worst = 0
    for check in instance.checks:
        rank = STATUSES.index(check.status) if check.status in STATUSES else 2
        worst = max(worst, rank)
    return STATUSES[worst]


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
                cap: int = 1000, checks: CheckHistory | None = None) -> Deferred[dict[str, Any]]:
    """
    The lookup answer for an address, exact or with ``*`` labels.

    :param dns_zone: the DNS zone, for the ``fqdn``.
    :param healthy_only: leave out the instances DNS does not serve.
    :param cap: at most this many instances; more make ``truncated`` true.
    :param checks: a :class:`glimpse.view.history.CheckHistory` adding each
        check's ``last_change``, or ``None``.
    :return: a Deferred firing with the body, failing with an :class:`HTTPError`
        (503 when the view cannot serve).
    :raises HTTPError: at once, for a zone that cannot be served or an
        exact address that does not exist (404).
    """
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

    def answer(results: Sequence[Sequence[Instance]]) -> dict[str, Any]:
        instances: list[Instance] = []
        for (_, ports), found in zip(selected, results, strict=True):
            instances.extend(i for i in found if i.service in ports
                             and (i.healthy or not healthy_only))
        return {
            "address": address.relative(),
            "fqdn": address.fqdn(dns_zone),
            "zone": address.zone,
            "healthy_only": healthy_only,
            "truncated": len(instances) > cap,
            "instances": [instance_json(i, address.zone, checks) for i in instances[:cap]],
        }

    d = gatherResults(ds, consumeErrors=True)
    d.addErrback(_unwrap)
    return d.addCallbacks(answer, _unavailable)


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


def _rule(instance: Instance, problem: str | None) -> str:
    if problem:
        return f"stale view: {problem}"
    if instance.drain:
        return "draining: the instance's meta says glimpse-drain=true"
    for check in instance.checks:
        if check.status != "passing":
            what = "node check" if check.node_level else "check"
            return f"{what} {check.name or check.id!r} is {check.status}"
    return "every check passes, the node's included"


def explain_body(topology: Topology, address: Address,
                 dns_zone: str) -> Deferred[dict[str, Any]]:
    """
    Each registered instance of an exact address, whether DNS answers with
    it, and the rule that decided.

    :return: a Deferred firing with the body, failing with an :class:`HTTPError`
        (503 when the view cannot serve).
    :raises HTTPError: at once, for a wildcard address (400) or a zone that
        does not exist (404).
    """
    if is_wildcard(address):
        raise HTTPError(400, "explain takes an exact address",
                        "name one address, without '*': http.web.prod.shop.ams")
    try:
        problem = topology.zone_problem(address.zone)
    except KeyError:
        zone_or_error(topology, address.zone)
    d: Deferred[Iterable[Instance]]
    if problem:
        # The view is too old to serve: explain from what it last held.
        cached = topology.cached_instances(address.zone, address.consul_service)
        d = succeed(cached or ())
    else:
        d = lookup_body(topology, address, dns_zone).addCallback(
            lambda _: topology.cached_instances(address.zone, address.consul_service) or ())

    def answer(instances: Iterable[Instance]) -> dict[str, Any]:
        rows = []
        for i in instances:
            if i.service != address.service:
                continue
            rows.append({"id": i.id, "instance": i.instance, "node": i.node, "ip": i.ip,
                         "port": i.port, "provider": i.provider,
                         "in_dns": problem is None and i.healthy,
                         "rule": _rule(i, problem),
                         "checks": [c.to_json() for c in i.checks]})
        return {"address": address.relative(), "fqdn": address.fqdn(dns_zone),
                "zone": address.zone, "view_problem": problem, "instances": rows}

    return d.addCallback(answer)
