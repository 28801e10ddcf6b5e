"""
``GET /v1/explain/{address}``: each registered instance of an address,
whether DNS answers with it, the rule that decided, and what every rule
says of it: its health, a warning, panic, its weight, a meta filter, and
failover (for an ``any`` address).  Served from the view.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from twisted.internet.defer import succeed

from glimpse.address import ANY_ZONE
from glimpse.http._json import HTTPError
from glimpse.http.bodies import choose, is_wildcard, lookup_body, zone_or_error
from glimpse.view.model import PASSING, WARNING
from glimpse.view.serving import PANIC_PRIORITY, MetaFilter, Served, meta_mismatch, served

if TYPE_CHECKING:
    from twisted.internet.defer import Deferred

    from glimpse.address import Address
    from glimpse.view.failover import Failover
    from glimpse.view.model import Instance
    from glimpse.view.panic import PanicState
    from glimpse.view.steering import Choice, Steering
    from glimpse.view.topology import Topology


def _health(instance: Instance) -> str:
    if instance.drain:
        return "draining: the instance's meta says glimpse-drain=true"
    for check in instance.checks:
        if check.status != PASSING:
            what = "node check" if check.node_level else "check"
            return f"{what} {check.name or check.id!r} is {check.status}"
    return "every check passes, the node's included"


class _Rules:
    """
    What the rules say of the instances of one job and port in one zone.
    """

    def __init__(self, steering: Steering | None, zone: str, service_name: str, port: str,
                 instances: tuple[Instance, ...], meta: MetaFilter) -> None:
        self.serve_warning = steering is not None and steering.serve_warning
        self.threshold = steering.panics.threshold if steering is not None else None
        self.panic: PanicState | None = None
        if steering is not None:
            self.panic = steering.panics.state(zone, service_name, instances)
        serving = served(instances, port, self.serve_warning,
                         self.panic is not None and self.panic.panic)
        self.served: dict[tuple[str, str], Served] = {
            (s.instance.node, s.instance.id): s for s in serving}
        self.meta = meta

    def row(self, i: Instance, problem: str | None, failover: str | None) -> dict[str, Any]:
        # DNS knows no meta filter: with one, "rules" says whether the
        # instance is in the subset, and the rest says what DNS does.
        chosen = self.served.get((i.node, i.id)) if problem is None and failover is None \
            else None
        miss = meta_mismatch(i, self.meta) if self.meta else None
        in_dns = chosen is not None
        return {"id": i.id, "instance": i.instance, "node": i.node, "ip": i.ip, "port": i.port,
                "provider": i.provider, "in_dns": in_dns,
                "meta_match": miss is None if self.meta else None,
                "priority": chosen.priority if chosen else None,
                "weight": chosen.weight if chosen else None,
                "rule": self._rule(i, chosen, problem, failover),
                "rules": self._each(i, chosen, miss, failover),
                "checks": [c.to_json() for c in i.checks]}

    def _rule(self, i: Instance, chosen: Served | None, problem: str | None,
              failover: str | None) -> str:
        if problem:
            return f"stale view: {problem}"
        if failover:
            return f"failover: {failover}"
        health = _health(i)
        if chosen is not None and chosen.priority == PANIC_PRIORITY:
            return f"{health}; served at priority 2: its job is {self._panic_text()}"
        if i.status == WARNING and not i.drain:
            if chosen is not None:
                return (f"{health}: served with its warning weight {chosen.weight} "
                        "(--serve-warning)")
            return f"{health} (served only with --serve-warning)"
        return health

    def _panic_text(self) -> str:
        if self.threshold is None:
            return "off (no --panic-threshold)"
        if self.panic is None:
            return "not counted yet"
        return self.panic.describe(self.threshold)

    def _each(self, i: Instance, chosen: Served | None, miss: str | None,
              failover: str | None) -> dict[str, str]:
        weights = f"passing {i.weight_passing}, warning {i.weight_warning}"
        if i.status != WARNING:
            warning = "no check warns"
        elif self.serve_warning:
            warning = "a check warns: served with its warning weight (--serve-warning)"
        else:
            warning = "a check warns: left out of DNS (Glimpse runs without --serve-warning)"
        panic = self._panic_text()
        if chosen is not None and chosen.priority == PANIC_PRIORITY:
            panic += ": served at priority 2 with its warning weight"
        return {
            "health": _health(i),
            "warning": warning,
            "panic": panic,
            "weight": (f"SRV weight {chosen.weight} (its weights: {weights})" if chosen
                       else f"not served (its weights: {weights})"),
            "meta": (f"does not match: {miss}" if miss else
                     "matches " + ", ".join(f"meta.{k}={v}" for k, v in self.meta)
                     if self.meta else "no meta filter"),
            "failover": failover or "",
        }


def explain_body(topology: Topology, address: Address, dns_zone: str,
                 steering: Steering | None = None,
                 meta: MetaFilter = ()) -> Deferred[dict[str, Any]]:
    """
    Each registered instance of an exact address, whether DNS answers with
    it, the rule that decided, and what each rule says (``rules``).

    :param steering: the :class:`glimpse.view.steering.Steering` whose rules
        DNS answers by, or ``None``.
    :param meta: a meta filter, as a lookup would apply it.
    :return: a Deferred firing with the body, failing with an :class:`HTTPError`
        (503 when the view cannot serve).
    :raises HTTPError: at once, for a wildcard address (400) or a zone that
        does not exist (404).
    """
    if is_wildcard(address):
        raise HTTPError(400, "explain takes an exact address",
                        "name one address, without '*': http.web.prod.shop.ams")
    if address.zone == ANY_ZONE and steering is not None:
        return _explain_any(topology, address, dns_zone, steering, meta)
    try:
        problem = topology.zone_problem(address.zone)
    except KeyError:
        zone_or_error(topology, address.zone)
    d: Deferred[tuple[Instance, ...]]
    if problem:
        # The view is too old to serve: explain from what it last held.
        cached = topology.cached_instances(address.zone, address.consul_service)
        d = succeed(cached or ())
    else:
        d = lookup_body(topology, address, dns_zone).addCallback(
            lambda _: topology.cached_instances(address.zone, address.consul_service) or ())

    def answer(instances: tuple[Instance, ...]) -> dict[str, Any]:
        rules = _Rules(steering, address.zone, address.consul_service, address.service,
                       instances, meta)
        pinned = f"{address.zone} is named: no failover"
        rows = [rules.row(i, problem, None) | {"zone": address.zone}
                for i in _of(instances, address.service)]
        for row in rows:
            row["rules"]["failover"] = pinned
        return _body(address, dns_zone, address.zone, None, rules, problem, rows)

    return d.addCallback(answer)


def _of(instances: Iterable[Instance], port: str) -> list[Instance]:
    return [i for i in instances if i.service == port]


def _body(address: Address, dns_zone: str, zone: str, failover: Failover | None,
          rules: _Rules, problem: str | None, rows: list[dict[str, Any]]) -> dict[str, Any]:
    return {"address": address.relative(), "fqdn": address.fqdn(dns_zone), "zone": zone,
            "failover": failover.to_json() if failover else None,
            "panic": rules.panic is not None and rules.panic.panic,
            "view_problem": problem, "instances": rows}


def _explain_any(topology: Topology, address: Address, dns_zone: str, steering: Steering,
                 meta: MetaFilter) -> Deferred[dict[str, Any]]:
    local = topology.local_zone

    def answer(choice: Choice) -> dict[str, Any]:
        name = address.consul_service
        rules = _Rules(steering, choice.zone, name, address.service, choice.instances, meta)
        if choice.failover is None:
            why = f"the local zone {choice.zone} answers: it serves at least " \
                  f"--failover-min {steering.failover_min}"
        else:
            why = f"{choice.zone} answers in place of {choice.failover.from_zone}: " \
                  f"{choice.failover.reason}"
        rows = []
        for i in _of(choice.instances, address.service):
            row = rules.row(i, None, None) | {"zone": choice.zone}
            row["rules"]["failover"] = why
            rows.append(row)
        if choice.failover is not None and local is not None:
            # The local zone's instances, left out because another answers.
            mine = topology.cached_instances(local, name) or ()
            out = _Rules(steering, local, name, address.service, mine, meta)
            for i in _of(mine, address.service):
                row = out.row(i, None, choice.failover.reason) | {"zone": local}
                row["rules"]["failover"] = why
                rows.append(row)
        return _body(address, dns_zone, choice.zone, choice.failover, rules, None, rows)

    return choose(steering, address).addCallback(answer)
