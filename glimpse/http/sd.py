"""
``GET /v1/sd/prometheus?address=<address>``: Prometheus' HTTP service
discovery (``http_sd_configs``), served from the view like a lookup: no
Consul request per scrape once the jobs are watched.

Each named port of each instance is one target group of one target,
``ip:port``, because its labels are its own: its instance, node and meta
(Prometheus gives a group's labels to every target in it).  The labels are
``__meta_glimpse_*``, which Prometheus drops after relabelling: a scrape
config keeps what it wants with ``relabel_configs``.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, NoReturn

from twisted.internet.defer import gatherResults, maybeDeferred

from glimpse.address import InvalidName, consul_service_name, parse_address
from glimpse.http._json import ErrorResource, HTTPError, JSONResource, render_deferred
from glimpse.http.bodies import _unavailable, _unwrap, instance_status, matching_jobs, zone_or_error

if TYPE_CHECKING:
    from twisted.internet.defer import Deferred
    from twisted.web.resource import Resource
    from twisted.web.server import Request

    from glimpse.address import Address
    from glimpse.http.lookup import Context
    from glimpse.view.model import Instance
    from glimpse.view.topology import Topology

#: Every label Glimpse gives a target starts with this.
LABEL_PREFIX = "__meta_glimpse_"
#: An instance's meta key ``k`` becomes the label ``__meta_glimpse_meta_k``.
META_LABEL_PREFIX = LABEL_PREFIX + "meta_"
#: What a Prometheus label name may not hold (``[a-zA-Z_][a-zA-Z0-9_]*``);
#: the prefix makes the first character right.
_NOT_IN_LABEL = re.compile(r"[^a-zA-Z0-9_]")
#: The query parameters, each at most once.
PARAMETERS = ("address", "healthy")
_EXAMPLE = "/v1/sd/prometheus?address=*.web.prod.shop.ams"


def meta_labels(meta: Iterable[tuple[str, str]]) -> dict[str, str]:
    """
    An instance's meta as Prometheus labels: ``__meta_glimpse_meta_<key>``,
    each character a label name may not hold (``-``) made ``_``.  When two
    keys make one label (``git-sha`` and ``git_sha``), the key that needed
    no change wins; else the first in sorted order.

    :param meta: ``(key, value)`` pairs.
    :return: ``{label: value}``.
    """
    labels: dict[str, str] = {}
    for key, value in sorted(meta, key=lambda kv: (bool(_NOT_IN_LABEL.search(kv[0])), kv[0])):
        labels.setdefault(META_LABEL_PREFIX + _NOT_IN_LABEL.sub("_", key), value)
    return labels


def target(ip: str, port: int) -> str:
    """
    ``ip:port`` as Prometheus takes a target (``[ip]:port`` for IPv6).
    """
    return f"[{ip}]:{port}" if ":" in ip else f"{ip}:{port}"


def target_group(instance: Instance, zone: str) -> dict[str, Any]:
    """
    The target group of one named port of one instance.

    :param instance: the :class:`glimpse.view.model.Instance`.
    :param zone: its zone.
    :return: ``{"targets": ["ip:port"], "labels": {...}}``.
    """
    labels = {
        LABEL_PREFIX + "zone": zone,
        LABEL_PREFIX + "product": instance.product,
        LABEL_PREFIX + "env": instance.env,
        LABEL_PREFIX + "job": instance.job,
        LABEL_PREFIX + "service": instance.service,
        LABEL_PREFIX + "instance": instance.instance,
        LABEL_PREFIX + "node": instance.node,
        LABEL_PREFIX + "provider": instance.provider,
        LABEL_PREFIX + "address": ".".join((instance.service, instance.job, instance.env,
                                            instance.product, zone)),
        LABEL_PREFIX + "healthy": "true" if instance.healthy else "false",
        LABEL_PREFIX + "status": instance_status(instance),
        LABEL_PREFIX + "drain": "true" if instance.drain else "false",
    }
    labels.update(meta_labels(instance.meta))
    return {"targets": [target(instance.ip, instance.port)], "labels": labels}


def target_groups(zone: str, instances: Iterable[Instance],
                  healthy_only: bool = True) -> list[dict[str, Any]]:
    """
    The HTTP SD answer for instances of one zone: one target group per
    named port of each instance, sorted by job, port, instance and node.

    :param zone: the zone.
    :param instances: the instances of the named ports asked for.
    :param healthy_only: leave out those DNS does not serve.
    :return: the JSON list Prometheus reads.
    """
    chosen = sorted((i for i in instances if i.healthy or not healthy_only),
                    key=lambda i: (i.product, i.env, i.job, i.service, i.instance, i.node, i.id))
    return [target_group(i, zone) for i in chosen]


def _one(args: Mapping[bytes, Sequence[bytes]], name: str) -> str | None:
    values = args.get(name.encode(), [])
    if len(values) > 1:
        raise HTTPError(400, f"{name!r} given {len(values)} times",
                        f"give it once; for more addresses, give Prometheus one "
                        f"http_sd_configs entry each: {_EXAMPLE}")
    return values[0].decode("utf-8", "replace") if values else None


def parse_query(args: Mapping[bytes, Sequence[bytes]], dns_zone: str) -> tuple[Address, bool]:
    """
    The address and the ``healthy`` switch of a request.

    :param args: the request's query arguments.
    :param dns_zone: the DNS zone an address may end with.
    :return: ``(address, healthy_only)``.
    :raises HTTPError: 400, saying what to write, for an unknown, repeated
        or missing parameter or a bad value.
    """
    unknown = sorted(k.decode("utf-8", "replace") for k in args
                     if k.decode("utf-8", "replace") not in PARAMETERS)
    if unknown:
        raise HTTPError(400, f"unknown parameter {unknown[0]!r}",
                        f"the parameters are address and healthy: {_EXAMPLE}&healthy=false")
    text = _one(args, "address")
    if not text:
        raise HTTPError(400, "no address", f"add one, any label but the zone may be '*': "
                        f"{_EXAMPLE}")
    try:
        address = parse_address(text, dns_zone, wildcard=True)
    except InvalidName as e:
        raise HTTPError(400, "invalid address", str(e)) from None
    healthy = (_one(args, "healthy") or "true").lower()
    if healthy not in ("true", "false", "1", "0"):
        raise HTTPError(400, "invalid 'healthy'", "use &healthy=false for every instance, "
                        "&healthy=true (the default) for those DNS serves")
    return address, healthy in ("true", "1")


def prometheus_body(topology: Topology, address: Address,
                    healthy_only: bool = True) -> Deferred[list[dict[str, Any]]]:
    """
    The target groups of an address (exact or with ``*`` labels), from the
    view.  An address that names nothing (yet, or any more) has none: an
    empty list, so that Prometheus drops the targets of a job that is gone.

    :return: a Deferred firing with the list, failing with an
        :class:`HTTPError` (503) when the view cannot serve.
    :raises HTTPError: at once, 404 for a zone that does not exist, 503 for
        one that cannot be served.
    """
    zone_or_error(topology, address.zone)
    selected = matching_jobs(topology.zones[address.zone].tree, address)
    ds = [topology.instances(address.zone, consul_service_name(*job)) for job, _ in selected]

    def answer(results: Sequence[Sequence[Instance]]) -> list[dict[str, Any]]:
        chosen = [i for (_, ports), found in zip(selected, results, strict=True)
                  for i in found if i.service in ports]
        return target_groups(address.zone, chosen, healthy_only)

    d = gatherResults(ds, consumeErrors=True)
    d.addErrback(_unwrap)
    return d.addCallbacks(answer, _unavailable)


class PrometheusSDResource(JSONResource):
    """
    ``GET /v1/sd/prometheus?address=<address>[&healthy=false]``.

    :param ctx: the :class:`glimpse.http.lookup.Context` (the view and the
        DNS zone).
    """

    isLeaf = True

    def __init__(self, ctx: Context) -> None:
        super().__init__()
        self._ctx = ctx

    def render_GET(self, request: Request) -> int:
        """
        The target groups, healthy instances only unless ``healthy=false``.

        :raises HTTPError: 400 for bad parameters, 404 for a longer path.
        """
        if request.postpath and request.postpath != [b""]:
            raise HTTPError(404, "not found", f"the address is a parameter: {_EXAMPLE}")
        address, healthy_only = parse_query(request.args, self._ctx.dns_zone)
        d = maybeDeferred(prometheus_body, self._ctx.topology, address, healthy_only)
        return render_deferred(request, d.addCallback(lambda body: (200, body)))


class SDResource(JSONResource):
    """
    ``/v1/sd/``: service discovery for other programs; ``prometheus`` for now.

    :param ctx: the :class:`glimpse.http.lookup.Context`.
    """

    def __init__(self, ctx: Context) -> None:
        super().__init__()
        self.putChild(b"prometheus", PrometheusSDResource(ctx))

    def getChild(self, path: bytes, request: Request) -> Resource:
        """
        A format there is not (or ``/v1/sd/``): a 404 saying where to go.
        """
        return ErrorResource(404, "not found", f"Prometheus' HTTP SD is {_EXAMPLE}")

    def render_GET(self, request: Request) -> NoReturn:
        """
        ``/v1/sd`` alone: a 404 saying where to go.
        """
        raise HTTPError(404, "not found", f"Prometheus' HTTP SD is {_EXAMPLE}")
