"""
Glimpse's DNS resolver: a twisted.names ``ResolverBase`` over the topology
view.  It keeps twisted.names' contract (``_lookup``, and
``AuthoritativeDomainError`` for names that do not exist) and says what a
name means and which records answer it: the apex's SOA and NS, a zone, a
node of the tree, an address (SRV, A, AAAA from the instances the view's
``Steering`` serves), an SRV target, and the zone ``any`` (failover).  The
server that answers requests with it is :mod:`glimpse.dns.server`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from twisted.internet.defer import Deferred, fail, succeed
from twisted.names import common, dns

from glimpse.address import ANY_ZONE, Address, relative_labels
from glimpse.dns.answers import (
    APEX,
    NODE,
    TARGET,
    ZONE,
    Found,
    Name,
    ZoneIdentity,
    address_found,
    classify,
    ip_answer,
    node_exists,
)
from glimpse.view.serving import served
from glimpse.view.topology import Unavailable

if TYPE_CHECKING:
    from glimpse.view.model import Instance
    from glimpse.view.steering import Choice, Steering
    from glimpse.view.topology import Topology, ZoneView

#: What the resolver finds: the answer, authority and additional sections.
Records = tuple[list[dns.RRHeader], list[dns.RRHeader], list[dns.RRHeader]]


class NameNotFound(dns.AuthoritativeDomainError):
    """
    NXDOMAIN, with the SOA for the authority section.

    :param name: the name that does not exist.
    :param soa: the zone's SOA record.
    """

    def __init__(self, name: bytes, soa: dns.RRHeader) -> None:
        super().__init__(name)
        self.soa = soa


class GlimpseResolver(common.ResolverBase):
    """
    Answer questions about the topology from the view.

    :param topology: the view (a :class:`glimpse.view.topology.Topology`).
    :param identity: a :class:`glimpse.dns.answers.ZoneIdentity`.
    :param steering: the :class:`glimpse.view.steering.Steering` whose rules
        the answers follow (``--serve-warning``, panic, failover for the zone
        ``any``), or ``None``: healthy instances only, and no ``any``.
    """

    def __init__(self, topology: Topology, identity: ZoneIdentity,
                 steering: Steering | None = None) -> None:
        super().__init__()
        self._topology = topology
        self._identity = identity
        self._steering = steering

    @property
    def dns_zone(self) -> str:
        """
        The zone this resolver is authoritative for.
        """
        return self._identity.dns_zone

    def soa(self) -> dns.RRHeader:
        """
        The current SOA record (its serial follows the view).
        """
        return self._identity.soa(self._topology.serial)

    def _nodata(self) -> Deferred[Found]:
        return succeed(Found([], [self.soa()]))

    def _nxdomain(self, name: bytes) -> Deferred[Found]:
        return fail(NameNotFound(name, self.soa()))

    def _lookup(self, name: bytes, cls: int, type: int,
                timeout: Sequence[int] | None = None) -> Deferred[Records]:
        return self.find(name, cls, type).addCallback(lambda found: found.records)

    def find(self, name: bytes, cls: int, type: int) -> Deferred[Found]:
        """
        What answers a question (:meth:`_lookup` without its contract's
        tuple): the records, and whether they were given in panic.

        :param name: the name asked, lower-cased.
        :param cls: its class.
        :param type: its type.
        :return: a Deferred firing with a :class:`glimpse.dns.answers.Found`,
            failing with :class:`NameNotFound` (NXDOMAIN),
            :class:`glimpse.view.topology.Unavailable` (SERVFAIL) or
            ``DomainError`` (outside the zone: REFUSED).
        """
        text = name.decode("ascii", "replace")
        labels = relative_labels(text, self.dns_zone)
        if labels is None or cls != dns.IN:
            return fail(dns.DomainError(name))
        if labels == ["ns"]:
            return self._ns_host(name, type)
        parsed = classify(labels)
        if parsed is None:
            return self._nxdomain(name)
        if parsed.kind == APEX:
            return self._apex(type)
        assert parsed.zone is not None  # every name below the apex has one
        if parsed.zone == ANY_ZONE and self._steering is not None:
            return self._any(name, parsed, type, self._steering)
        try:
            problem = self._topology.zone_problem(parsed.zone)
        except KeyError:
            return self._nxdomain(name)
        if problem:
            return fail(Unavailable(problem))
        zone = self._topology.zones[parsed.zone]
        if parsed.kind == ZONE:
            return self._nodata()
        if parsed.kind == NODE:
            return self._nodata() if node_exists(zone.tree, parsed.path) else self._nxdomain(name)
        if parsed.kind == TARGET:
            return self._target(name, parsed.ip, zone, type)
        assert parsed.address is not None
        return self._address(name, parsed.address, zone, type)

    def _apex(self, type: int) -> Deferred[Found]:
        soa = self.soa()
        if type in (dns.SOA, dns.ALL_RECORDS):  # ANY: the SOA alone (RFC 8482)
            return succeed(Found([soa]))
        if type == dns.NS:
            extra = self._identity.ns_address()
            return succeed(Found([self._identity.ns()], [], [extra] if extra else []))
        return self._nodata()

    def _ns_host(self, name: bytes, type: int) -> Deferred[Found]:
        record = self._identity.ns_address()
        if record is not None and type in (record.type, dns.ALL_RECORDS):
            record = dns.RRHeader(name, record.type, dns.IN, record.ttl, record.payload, auth=True)
            return succeed(Found([record]))
        return self._nodata()

    def _address(self, name: bytes, address: Address, zone: ZoneView,
                 type: int) -> Deferred[Found]:
        ports = zone.ports(address.product, address.env, address.job)
        if ports is None or address.service not in ports:
            return self._nxdomain(name)
        if type == dns.ALL_RECORDS:
            type = dns.SRV  # ANY: the SRV set and its targets (RFC 8482, section 4.2)
        if type not in (dns.SRV, dns.A, dns.AAAA):
            return self._nodata()
        d = self._topology.instances(address.zone, address.consul_service)
        return d.addCallback(lambda instances: self._records(
            name, address.zone, address, instances, type, self._identity.ttl))

    def _records(self, name: bytes, zone: str, address: Address,
                 instances: tuple[Instance, ...], type: int, ttl: int) -> Found:
        if self._steering is None:
            serving, panic = served(instances, address.service), False
        else:
            answer = self._steering.answer(zone, address.consul_service, address.service,
                                           instances)
            serving, panic = answer.served, answer.panic
        return address_found(name, zone, type, serving, self.dns_zone, ttl, self.soa(), panic)

    def _any(self, name: bytes, parsed: Name, type: int, steering: Steering) -> Deferred[Found]:
        # The zone "any": the local zone, or the zone it fails over to.
        # Its tree is every zone's; its SRV targets are in the zone that
        # answers, so "<hex>.addr.any" names nothing.
        zones = self._topology.zones
        if self._topology.local_zone not in zones:
            return fail(Unavailable("the local zone is not known yet: Consul has not answered"))
        if parsed.kind == ZONE:
            return self._nodata()
        if parsed.kind == NODE:
            found = any(node_exists(z.tree, parsed.path) for z in zones.values())
            return self._nodata() if found else self._nxdomain(name)
        address = parsed.address
        if address is None or not steering.zones_with(address):
            return self._nxdomain(name)
        if type == dns.ALL_RECORDS:
            type = dns.SRV
        if type not in (dns.SRV, dns.A, dns.AAAA):
            return self._nodata()

        def answer(choice: Choice) -> Found:
            # Failover answers live as long as negative ones, so that clients
            # come back to the local zone soon after it recovers.
            identity = self._identity
            ttl = identity.negative_ttl if choice.failover else identity.ttl
            return self._records(name, choice.zone, address, choice.instances, type, ttl)

        return steering.choose(address).addCallback(answer)

    def _target(self, name: bytes, ip: str | None, zone: ZoneView,
                type: int) -> Deferred[Found]:
        # A target exists while an instance in the zone's watched jobs has
        # its IP; anything else is a made-up name.
        known = any(i.ip == ip for job in zone.jobs.values() for i in job.instances)
        if not known or ip is None:
            return self._nxdomain(name)
        if type == dns.ALL_RECORDS:
            type = dns.A if ":" not in ip else dns.AAAA
        answers = ip_answer(name, type, [_IP(ip)], self._identity.ttl) \
            if type in (dns.A, dns.AAAA) else []
        return succeed(Found(answers)) if answers else self._nodata()


class _IP:
    """
    Just enough of an instance for :func:`glimpse.dns.answers.ip_answer`.
    """

    def __init__(self, ip: str) -> None:
        self.ip = ip
