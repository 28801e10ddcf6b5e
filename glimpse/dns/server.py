"""
Glimpse's DNS server: a twisted.names resolver over the topology view, and
the server factory that answers requests with it.

The resolver keeps twisted.names' contract (``ResolverBase._lookup``,
``AuthoritativeDomainError`` for names that do not exist); the factory is
Glimpse's own, and does what an authoritative-only server needs: REFUSED
outside the zone, the SOA in the authority section of negative answers, AA
on every in-zone answer, SERVFAIL without a traceback when the view cannot
serve, truncation that never drops records silently, and records in the
order the query's ID picks (:mod:`glimpse.dns.rotation`).  The protocols it
answers through are in :mod:`glimpse.dns.protocols` (UDP) and
:mod:`glimpse.dns.stream` (TCP, whose listener is
:class:`glimpse.dns.connections.StreamFactory`).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from time import perf_counter_ns
from typing import TYPE_CHECKING

from twisted.internet.defer import Deferred, fail, maybeDeferred, succeed
from twisted.logger import Logger
from twisted.names import common, dns
from twisted.python.failure import Failure

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
from glimpse.dns.request import ClientAddress, RequestContext, Responder
from glimpse.dns.rotation import ROTATIONS, order_of, orders, rotated
from glimpse.dns.wire import (
    UDP_SIZE,
    DNSStats,
    echo_case,
    encode,
    header_reply,
    request_problem,
    response_for,
    split_opt,
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


class GlimpseServerFactory:
    """
    An authoritative-only server: no recursion, no cache, RFC rcodes for
    everything that is not a plain query (see :mod:`glimpse.dns.wire`), and
    responses encoded by the protocol that carries them (UDP packs to the
    client's size with TC=1, TCP sends up to 65,535 bytes).

    The UDP protocol (:class:`glimpse.dns.protocols.GlimpseDatagramProtocol`,
    or the fast path's) and the TCP one
    (:class:`glimpse.dns.stream.GlimpseStreamProtocol`) hand it what they
    receive (:meth:`bytes_received`, :meth:`message_received`), and it
    answers through them (:meth:`glimpse.dns.request.Responder.send_response`).

    :param resolver: a :class:`GlimpseResolver`.
    :param stats: the :class:`glimpse.dns.wire.DNSStats` to count in (a new
        one by default); the metrics exporter reads ``factory.stats``.
    :param rotations: the most orders of one answer's records
        (``--dns-rotations``, :mod:`glimpse.dns.rotation`); 1 keeps every
        answer in one order.
    """

    log = Logger()

    def __init__(self, resolver: GlimpseResolver, stats: DNSStats | None = None,
                 rotations: int = ROTATIONS) -> None:
        self.resolver = resolver
        self.stats = stats if stats is not None else DNSStats()
        self.rotations = rotations

    def allow_query(self, message: dns.Message) -> bool:
        """
        Answer only questions about names inside the DNS zone: never an open
        resolver.

        :param message: a decoded request with one question.
        """
        name = message.queries[0].name.name.decode("ascii", "replace")
        return relative_labels(name, self.resolver.dns_zone) is not None

    def bytes_received(self, data: bytes, protocol: Responder, address: ClientAddress | None,
                       received_ns: int) -> None:
        """
        Decode one DNS message and answer it; a packet that does not decode
        gets FORMERR when its header can be read, and is dropped otherwise.

        :param data: the message as received.
        :param protocol: the protocol to answer through.
        :param address: the client, or ``None`` over TCP.
        :param received_ns: :func:`time.perf_counter_ns` when it arrived.
        """
        request = dns.Message()
        try:
            request.fromStr(data)
        except Exception:
            reply = header_reply(data, dns.EFORMAT)
            if reply is None:
                self.stats.dropped += 1
            else:
                self.stats.responses[(0, dns.EFORMAT)] += 1
                protocol.send_response(RequestContext(protocol, address, None), reply, reply)
            return
        self.message_received(RequestContext(protocol, address, received_ns, request))

    def message_received(self, context: RequestContext) -> Deferred[None] | None:
        """
        Answer a decoded request: an rcode for what is not a plain query in
        the zone, else what the resolver finds.

        :param context: the request, with its decoded ``message``.
        :return: a :class:`Deferred` that fires once it is answered, or
            ``None`` when it gets no answer.
        """
        message = context.message
        assert message is not None
        if message.answer:
            # A response sent to a server: FORMERR, unless it already is an
            # error (never bounce errors back and forth).
            if message.rCode:
                self.stats.dropped += 1
            else:
                self._reply(context, dns.EFORMAT)
            return None
        context.opt, problem = split_opt(message)
        if problem is None:
            problem = request_problem(message, context.opt)
        if problem is None and not self.allow_query(message):
            problem = dns.EREFUSED
        if problem is not None:
            self._reply(context, problem)
            return None
        # Resolve and encode the lower-cased question, then put the asked
        # bytes back (echo_case): name compression then does not depend on
        # the question's case, so both paths give the same bytes.
        query = message.queries[0]
        context.asked = asked = query.name.name
        message.queries = [dns.Query(asked.lower(), query.type, query.cls)]
        # find is _lookup (ResolverBase's override point, the one every
        # lookup* method ends in) with what the counters need besides the
        # records; query() would add a dispatch on the type and log an event
        # for each type without a lookup* method.
        d = maybeDeferred(self.resolver.find, asked.lower(), query.cls, query.type)
        return d.addCallbacks(self._found, self._failed, callbackArgs=(context,),
                              errbackArgs=(context,))

    def _found(self, found: Found, context: RequestContext) -> None:
        if found.panic:
            context.panic = True
            self.stats.panic_answers += 1
        answers, authority, additional = found.answers, found.authority, found.additional
        count = orders(len(answers), self.rotations)
        if count == 1:
            self._reply(context, dns.OK, True, answers, authority, additional)
            return
        assert context.message is not None
        order = order_of(context.message.id, len(answers), self.rotations)
        context.order, context.orders = order, count

        def encoded(k: int) -> tuple[bytes, bytes]:
            turned, extra = rotated(answers, additional, k, count)
            return self._encode(context, dns.OK, True, turned, authority, extra)

        whole, short = encoded(order)
        if context.fast_key is not None and len(whole) <= UDP_SIZE:
            # The fast path keeps every order of an answer that fits in a
            # UDP answer at once (cheap, and its UDP hits need them all);
            # those of a larger one as queries ask for them.
            context.wholes = tuple(whole if k == order else encoded(k)[0] for k in range(count))
        self._send(context, dns.OK, whole, short)

    def _failed(self, failure: Failure, context: RequestContext) -> None:
        error = failure.value
        if isinstance(error, NameNotFound):
            self._reply(context, dns.ENAME, True, authority=[error.soa])
        elif isinstance(error, Unavailable):
            # The view logs why, once; not per query.
            self._reply(context, dns.ESERVER)
        elif isinstance(error, dns.DomainError):
            self._reply(context, dns.EREFUSED)
        else:
            assert context.message is not None
            self.log.failure("Answering {query} failed", failure, query=context.message.queries)
            self._reply(context, dns.ESERVER)

    def _reply(self, context: RequestContext, rcode: int, auth: bool = False,
               answers: Iterable[dns.RRHeader] = (), authority: Iterable[dns.RRHeader] = (),
               additional: Iterable[dns.RRHeader] = ()) -> None:
        whole, short = self._encode(context, rcode, auth, answers, authority, additional)
        self._send(context, rcode, whole, short)

    def _encode(self, context: RequestContext, rcode: int, auth: bool,
                answers: Iterable[dns.RRHeader], authority: Iterable[dns.RRHeader],
                additional: Iterable[dns.RRHeader]) -> tuple[bytes, bytes]:
        request = context.message
        assert request is not None
        response = response_for(request, context.opt, rcode, auth, answers, authority,
                                additional)
        whole, short = encode(response, context.protocol.reduce_to)
        asked = context.asked
        if asked is not None:
            whole, short = echo_case(whole, asked), echo_case(short, asked)
        return whole, short

    def _send(self, context: RequestContext, rcode: int, whole: bytes, short: bytes) -> None:
        request = context.message
        assert request is not None
        qtype = request.queries[0].type if len(request.queries) == 1 else 0
        self.stats.responses[(qtype, rcode)] += 1
        context.protocol.send_response(context, whole, short)
        received = context.received_ns
        if received is not None:
            self.stats.observe(perf_counter_ns() - received)

