"""
Glimpse's DNS server: a twisted.names resolver over the topology view, and
the server factory and datagram protocol around it.

The resolver keeps twisted.names' contract (``ResolverBase._lookup``,
``AuthoritativeDomainError`` for names that do not exist); the factory adds
what an authoritative-only server needs and twisted.names' does not do:
REFUSED outside the zone, the SOA in the authority section of negative
answers, AA on every in-zone answer, SERVFAIL without a traceback when the
view cannot serve, and truncation that never drops records silently.
"""

from twisted.internet.defer import fail, succeed
from twisted.internet.protocol import DatagramProtocol
from twisted.logger import Logger
from twisted.names import common, dns, server

from glimpse.address import relative_labels
from glimpse.answers import (
    ADDRESS, APEX, NODE, TARGET, ZONE, classify, healthy_for, ip_answer,
    node_exists, srv_answer,
)
from glimpse.topology import Unavailable


class NameNotFound(dns.AuthoritativeDomainError):
    """
    NXDOMAIN, with the SOA for the authority section.
    """

    def __init__(self, name, soa):
        super().__init__(name)
        self.soa = soa


class GlimpseResolver(common.ResolverBase):
    """
    Answer questions about the topology from the view.

    :param topology: a L{glimpse.topology.Topology}.
    :param identity: a L{glimpse.answers.ZoneIdentity}.
    """

    def __init__(self, topology, identity):
        super().__init__()
        self._topology = topology
        self._identity = identity

    @property
    def dns_zone(self):
        """
        The zone this resolver is authoritative for.
        """
        return self._identity.dns_zone

    def soa(self):
        """
        The current SOA record (its serial follows the view).
        """
        return self._identity.soa(self._topology.serial)

    def _nodata(self):
        return succeed(([], [self.soa()], []))

    def _nxdomain(self, name):
        return fail(NameNotFound(name, self.soa()))

    def _lookup(self, name, cls, type, timeout=None):
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
            return self._target(name, parsed, type)
        return self._address(name, parsed.address, zone, type)

    def _apex(self, type):
        soa = self.soa()
        if type == dns.SOA:
            return succeed(([soa], [], []))
        if type == dns.NS:
            extra = self._identity.ns_address()
            return succeed(([self._identity.ns()], [], [extra] if extra else []))
        return self._nodata()

    def _ns_host(self, name, type):
        record = self._identity.ns_address()
        if record is not None and record.type == type:
            record = dns.RRHeader(name, record.type, dns.IN, record.ttl, record.payload, auth=True)
            return succeed(([record], [], []))
        return self._nodata()

    def _address(self, name, address, zone, type):
        ports = zone.ports(address.product, address.env, address.job)
        if ports is None or address.service not in ports:
            return self._nxdomain(name)
        if type not in (dns.SRV, dns.A, dns.AAAA):
            return self._nodata()
        d = self._topology.instances(address.zone, address.consul_service)

        def answer(instances):
            serving = healthy_for(instances, address.service)
            ttl = self._identity.ttl
            if type == dns.SRV:
                answers, additional = srv_answer(name, address.zone, serving, self.dns_zone, ttl)
            else:
                answers, additional = ip_answer(name, type, serving, ttl), []
            if not answers:
                return ([], [self.soa()], [])
            return (answers, [], additional)

        return d.addCallback(answer)

    def _target(self, name, parsed, type):
        # A target exists while an instance in the zone's watched jobs has
        # its IP; anything else is a made-up name.
        zone = self._topology.zones[parsed.zone]
        known = any(i.ip == parsed.ip for job in zone.jobs.values() for i in job.instances)
        if not known:
            return self._nxdomain(name)
        answers = ip_answer(name, type, [_IP(parsed.ip)], self._identity.ttl) \
            if type in (dns.A, dns.AAAA) else []
        return succeed((answers, [], [])) if answers else self._nodata()


class _IP:
    """
    Just enough of an instance for :func:`ip_answer`.
    """

    def __init__(self, ip):
        self.ip = ip


class GlimpseServerFactory(server.DNSServerFactory):
    """
    An authoritative-only server factory: no recursion, no cache.

    :param resolver: a L{GlimpseResolver}.
    """

    log = Logger()

    def __init__(self, resolver):
        super().__init__(authorities=[resolver])
        self.resolver = resolver
        self.canRecurse = False

    def _in_zone(self, message):
        if len(message.queries) != 1:
            return False
        name = message.queries[0].name.name.decode("ascii", "replace")
        return relative_labels(name, self.resolver.dns_zone) is not None

    def allowQuery(self, message, protocol, address):
        """
        Answer only questions about names inside the DNS zone: never an open
        resolver.
        """
        return self._in_zone(message)

    def messageReceived(self, message, proto, address=None):
        """
        Dispatch a query; answer FORMERR to anything that is not one.
        """
        if message.answer or len(message.queries) != 1:
            return self._reply_code(proto, message, address, dns.EFORMAT)
        if message.opCode != dns.OP_QUERY:
            return self._reply_code(proto, message, address, dns.ENOTIMP)
        if message.queries[0].cls != dns.IN:
            return self._reply_code(proto, message, address, dns.EREFUSED)
        return super().messageReceived(message, proto, address)

    def _reply_code(self, proto, message, address, rcode):
        response = self._responseFromMessage(message=message, rCode=rcode)
        self.sendReply(proto, response, address)

    def _responseFromMessage(self, message, rCode=dns.OK, answers=None,
                             authority=None, additional=None):
        response = super()._responseFromMessage(
            message, rCode, answers, authority, additional)
        response.auth = int(rCode in (dns.OK, dns.ENAME) and self._in_zone(message))
        response.recAv = 0
        return response

    def gotResolverError(self, failure, protocol, message, address):
        """
        NXDOMAIN with the SOA; SERVFAIL without a traceback when the view
        cannot serve (the view logs that once, not per query).
        """
        if failure.check(NameNotFound):
            response = self._responseFromMessage(
                message=message, rCode=dns.ENAME, authority=[failure.value.soa])
        elif failure.check(Unavailable):
            response = self._responseFromMessage(message=message, rCode=dns.ESERVER)
        elif failure.check(dns.DomainError):
            response = self._responseFromMessage(message=message, rCode=dns.EREFUSED)
        else:
            self.log.failure("Answering {query} failed", failure, query=message.queries)
            response = self._responseFromMessage(message=message, rCode=dns.ESERVER)
        self.sendReply(protocol, response, address)

    def sendReply(self, protocol, message, address):
        """
        Send a reply; logging per query is left out on purpose.
        """
        if address is None:
            protocol.writeMessage(message)
        else:
            protocol.writeMessage(message, address)


def encode_for_udp(message, max_size):
    """
    Encode a response so that it fits C{max_size} bytes: whole, or, when it
    does not fit, the header and question alone with TC set, so that the
    client retries over TCP rather than getting a silently shortened answer.
    """
    message.maxSize = 0
    data = message.toStr()
    if len(data) <= max_size:
        return data
    truncated = dns.Message(
        id=message.id, answer=1, opCode=message.opCode, recDes=message.recDes,
        recAv=message.recAv, auth=message.auth, rCode=message.rCode, trunc=1, maxSize=0)
    truncated.queries = list(message.queries)
    return truncated.toStr()


class GlimpseDatagramProtocol(DatagramProtocol):
    """
    DNS over UDP: decode, hand to the factory, encode within the client's
    size.  A packet that does not decode gets FORMERR when its header can be
    read and is dropped otherwise; nothing a client sends can stop the next
    query from being answered.
    """

    log = Logger()

    def __init__(self, controller):
        self.controller = controller

    def datagramReceived(self, data, address):
        message = dns.Message()
        try:
            message.fromStr(data)
        except Exception:
            self._formerr(data, address)
            return
        message.maxSize = _udp_size(message)
        try:
            self.controller.messageReceived(message, self, address)
        except Exception:
            self.log.failure("Handling a DNS message failed")

    def _formerr(self, data, address):
        if len(data) < 12 or data[2] & 0x80:
            return  # no header to answer, or a response: never answer those
        reply = bytearray(data[:12])
        reply[2] = 0x80 | (data[2] & 0x79)  # QR, keep opcode and RD
        reply[3] = dns.EFORMAT
        reply[4:12] = b"\x00" * 8
        self.transport.write(bytes(reply), address)

    def writeMessage(self, message, address):
        """
        Send a response to C{address}, truncated properly for UDP.
        """
        self.transport.write(encode_for_udp(message, message.maxSize), address)


def _udp_size(message):
    # RFC 6891: the requestor's UDP payload size, never below 512.
    for record in message.additional:
        if record.type == dns.OPT:
            return max(512, record.cls)
    return 512
