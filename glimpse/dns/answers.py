"""
What a DNS name in Glimpse's zone means, and the records that answer it.
Pure: the view is passed in, nothing here does I/O.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable, Iterable, Sequence
from typing import TYPE_CHECKING, Protocol

import attrs
from twisted.names import dns

from glimpse.address import TARGET_LABEL, Address, label_problem, parse_target_label, target_name
from glimpse.view.serving import HEALTHY_PRIORITY, Served

if TYPE_CHECKING:
    from glimpse.view.model import Instance

#: The kinds of :class:`Name`.
APEX, ZONE, NODE, ADDRESS, TARGET = "apex", "zone", "node", "address", "target"

#: A record's payload, as Glimpse makes them.
Payload = dns.Record_A | dns.Record_AAAA | dns.Record_SRV | dns.Record_SOA | dns.Record_NS

# twisted.names' record classes take untyped arguments: what Glimpse passes.
_a: Callable[[str, int], dns.Record_A] = dns.Record_A
_aaaa: Callable[[str, int], dns.Record_AAAA] = dns.Record_AAAA
_srv: Callable[[int, int, int, str, int], dns.Record_SRV] = dns.Record_SRV
_soa: Callable[..., dns.Record_SOA] = dns.Record_SOA
_ns: Callable[[str, int], dns.Record_NS] = dns.Record_NS


class HasIP(Protocol):
    """
    What :func:`ip_answer` reads of an instance: its IP.
    """

    @property
    def ip(self) -> str:
        """
        The instance's IP, as text.
        """


@attrs.frozen
class Name:
    """
    A classified name inside the DNS zone.

    :ivar kind: one of ``apex``, ``zone``, ``node`` (an interior node of the
        tree: product, env or job), ``address`` or ``target``.
    :ivar zone: the zone label, for all kinds but the apex.
    :ivar path: for a node, the labels below the zone, outermost first.
    :ivar address: for an address, the :class:`Address`.
    :ivar ip: for a target, the IP it encodes.
    """

    kind: str
    zone: str | None = None
    path: tuple[str, ...] = ()
    address: Address | None = None
    ip: str | None = None


def classify(labels: Sequence[str]) -> Name | None:
    """
    Classify the labels of a name below the DNS zone (outermost first).

    :param labels: the labels (:func:`glimpse.address.relative_labels`).
    :return: a :class:`Name`, or ``None`` when the name cannot exist in any view
        (too deep, or a label that is not a valid field): NXDOMAIN.
    """
    if not labels:
        return Name(APEX)
    zone, rest = labels[0], tuple(labels[1:])
    if label_problem(zone, "zone"):
        return None
    if len(rest) == 2 and rest[0] == TARGET_LABEL:
        ip = parse_target_label(rest[1])
        return Name(TARGET, zone, ip=ip) if ip else None
    fields = ("product", "env", "job", "service")
    if len(rest) > len(fields):
        return None
    if any(label_problem(value, field) for value, field in zip(rest, fields, strict=False)):
        return None
    if not rest:
        return Name(ZONE, zone)
    if len(rest) < 4:
        return Name(NODE, zone, path=rest)
    product, env, job, service = rest
    return Name(ADDRESS, zone, address=Address(service, job, env, product, zone))


def node_exists(tree: Iterable[tuple[str, ...]], path: tuple[str, ...]) -> bool:
    """
    Whether an interior node (``(product,)``, ``(product, env)`` or
    ``(product, env, job)``) has any job below it in a zone's catalog tree.

    :param tree: the zone's jobs, as ``(product, env, job)``.
    :param path: the node.
    """
    return any(key[: len(path)] == path for key in tree)


def _header(name: bytes | str, payload: Payload, ttl: int) -> dns.RRHeader:
    return dns.RRHeader(name, payload.TYPE, dns.IN, ttl, payload, auth=True)


def address_record(name: bytes | str, ip: str, ttl: int) -> dns.RRHeader | None:
    """
    An A or AAAA record for an IP, or ``None`` when it is neither.

    :param name: the record's owner.
    :param ip: the IP, as text.
    :param ttl: the record's TTL.
    """
    try:
        parsed = ipaddress.ip_address(ip)
    except ValueError:
        return None
    payload: Payload = _a(ip, ttl) if parsed.version == 4 else _aaaa(ip, ttl)
    return _header(name, payload, ttl)


def srv_answer(name: bytes, zone: str, instances: Iterable[Instance | Served], dns_zone: str,
               ttl: int) -> tuple[list[dns.RRHeader], list[dns.RRHeader]]:
    """
    The SRV records of an address and the A/AAAA records of their targets.

    :param name: the queried name (bytes), echoed as it was asked.
    :param zone: the zone the instances are in (the targets are in it).
    :param instances: the instances to serve: each a
        :class:`glimpse.view.serving.Served` with its priority and weight,
        or an instance (priority 1, the weight of its state).
    :param dns_zone: Glimpse's DNS zone.
    :param ttl: the records' TTL.
    :return: ``(answers, additional)``.
    """
    answers: list[dns.RRHeader] = []
    additional: list[dns.RRHeader] = []
    targets: dict[str, bool] = {}
    for item in instances:
        if isinstance(item, Served):
            instance, priority, weight = item.instance, item.priority, item.weight
        else:
            instance, priority, weight = item, HEALTHY_PRIORITY, item.weight
        target = target_name(zone, instance.ip, dns_zone)
        payload = _srv(priority, weight, instance.port, target, ttl)
        answers.append(_header(name, payload, ttl))
        if target not in targets:
            targets[target] = True
            record = address_record(target, instance.ip, ttl)
            if record is not None:
                additional.append(record)
    return answers, additional


def ip_answer(name: bytes, qtype: int, instances: Iterable[HasIP],
              ttl: int) -> list[dns.RRHeader]:
    """
    The A (or AAAA) records of an address: each distinct IP once.

    :param name: the queried name, echoed as it was asked.
    :param qtype: A or AAAA: the records of the other family are left out.
    :param instances: the instances to serve, in order.
    :param ttl: the records' TTL.
    """
    version = 4 if qtype == dns.A else 6
    records: list[dns.RRHeader] = []
    seen: set[str] = set()
    for instance in instances:
        if instance.ip in seen:
            continue
        seen.add(instance.ip)
        record = address_record(name, instance.ip, ttl)
        if record is not None and record.type == (dns.A if version == 4 else dns.AAAA):
            records.append(record)
    return records


@attrs.frozen
class Found:
    """
    What the resolver finds for a question: the answer, authority and
    additional sections, and whether the answer was given in panic (every
    instance of a job served, :mod:`glimpse.view.panic`), for the counters.
    """

    answers: list[dns.RRHeader]
    authority: list[dns.RRHeader] = attrs.Factory(list)
    additional: list[dns.RRHeader] = attrs.Factory(list)
    panic: bool = False

    @property
    def records(self) -> tuple[list[dns.RRHeader], list[dns.RRHeader], list[dns.RRHeader]]:
        """
        The three sections, as twisted.names' resolvers return them.
        """
        return self.answers, self.authority, self.additional


def address_found(name: bytes, zone: str, qtype: int, serving: Sequence[Served], dns_zone: str,
                  ttl: int, soa: dns.RRHeader, panic: bool = False) -> Found:
    """
    The answer to an address's SRV, A or AAAA question: its records, or
    NODATA (the SOA in the authority section) when there are none.

    :param name: the queried name, echoed as it was asked.
    :param zone: the zone that answers (the SRV targets are in it).
    :param qtype: SRV, A or AAAA.
    :param serving: what DNS serves, by priority
        (:func:`glimpse.view.serving.served`).
    :param dns_zone: Glimpse's DNS zone.
    :param ttl: the records' TTL.
    :param soa: the SOA, for NODATA.
    :param panic: the job is in panic.
    """
    if qtype == dns.SRV:
        answers, additional = srv_answer(name, zone, serving, dns_zone, ttl)
    else:
        answers, additional = ip_answer(name, qtype, serving, ttl), []
    if not answers:
        return Found([], [soa])
    return Found(answers, [], additional, panic)


@attrs.frozen
class ZoneIdentity:
    """
    What Glimpse says about itself at the apex: its SOA and NS.

    :ivar dns_zone: the zone, canonical form.
    :ivar ns_ip: the address advertised for the name server.
    :ivar ttl: the TTL of positive answers (and of the NS records).
    :ivar negative_ttl: the SOA minimum, the TTL of negative answers.
    """

    dns_zone: str
    ns_ip: str
    ttl: int = 5
    negative_ttl: int = 5

    @property
    def ns_name(self) -> str:
        """
        The name server's name, inside the zone: ``ns.<dns_zone>``.
        """
        return f"ns.{self.dns_zone}"

    def soa(self, serial: int) -> dns.RRHeader:
        """
        The apex SOA record for a view serial.

        :param serial: the view's serial.
        """
        payload = _soa(
            mname=self.ns_name, rname=f"hostmaster.{self.dns_zone}", serial=serial,
            refresh=60, retry=30, expire=3600, minimum=self.negative_ttl,
            ttl=self.negative_ttl)
        return _header(self.dns_zone, payload, self.negative_ttl)

    def ns(self) -> dns.RRHeader:
        """
        The apex NS record.
        """
        return _header(self.dns_zone, _ns(self.ns_name, self.ttl), self.ttl)

    def ns_address(self) -> dns.RRHeader | None:
        """
        The A/AAAA record of the name server's name, or ``None`` when
        ``ns_ip`` is not an IP.
        """
        return address_record(self.ns_name, self.ns_ip, self.ttl)
