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

from time import perf_counter_ns

from twisted.internet.defer import fail, maybeDeferred, succeed
from twisted.internet.protocol import DatagramProtocol
from twisted.logger import Logger
from twisted.names import common, dns, server
from twisted.protocols.basic import Int16StringReceiver
from twisted.protocols.policies import TimeoutMixin

from glimpse.address import relative_labels
from glimpse.dns.answers import (
    APEX,
    NODE,
    TARGET,
    ZONE,
    classify,
    healthy_for,
    ip_answer,
    node_exists,
    srv_answer,
)
from glimpse.dns.wire import (
    TCP_SIZE,
    DNSStats,
    echo_case,
    encode,
    header_reply,
    request_problem,
    response_for,
    split_opt,
    udp_limit,
)
from glimpse.view.topology import Unavailable


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

    :param topology: a :class:`glimpse.view.topology.Topology`.
    :param identity: a :class:`glimpse.dns.answers.ZoneIdentity`.
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
        if type in (dns.SOA, dns.ALL_RECORDS):  # ANY: the SOA alone (RFC 8482)
            return succeed(([soa], [], []))
        if type == dns.NS:
            extra = self._identity.ns_address()
            return succeed(([self._identity.ns()], [], [extra] if extra else []))
        return self._nodata()

    def _ns_host(self, name, type):
        record = self._identity.ns_address()
        if record is not None and type in (record.type, dns.ALL_RECORDS):
            record = dns.RRHeader(name, record.type, dns.IN, record.ttl, record.payload, auth=True)
            return succeed(([record], [], []))
        return self._nodata()

    def _address(self, name, address, zone, type):
        ports = zone.ports(address.product, address.env, address.job)
        if ports is None or address.service not in ports:
            return self._nxdomain(name)
        if type == dns.ALL_RECORDS:
            type = dns.SRV  # ANY: the SRV set and its targets (RFC 8482, section 4.2)
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
        if type == dns.ALL_RECORDS:
            type = dns.A if ":" not in parsed.ip else dns.AAAA
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
    An authoritative-only server: no recursion, no cache, RFC rcodes for
    everything that is not a plain query (see :mod:`glimpse.dns.wire`), and
    responses encoded by the protocol that carries them (UDP packs to the
    client's size with TC=1, TCP sends up to 65,535 bytes).

    :param resolver: a :class:`GlimpseResolver`.
    :param stats: the :class:`DNSStats` to count in (a new one by default); the
        metrics exporter reads ``factory.stats``.
    :param tcp_timeout: seconds an idle DNS-over-TCP connection stays open.
    """

    log = Logger()

    def __init__(self, resolver, stats=None, tcp_timeout=30.0):
        super().__init__(authorities=[resolver])
        self.resolver = resolver
        self.canRecurse = False
        self.stats = stats if stats is not None else DNSStats()
        self.tcp_timeout = tcp_timeout

    def buildProtocol(self, addr):
        """
        A DNS-over-TCP connection.
        """
        return GlimpseStreamProtocol(self, self.tcp_timeout)

    def allowQuery(self, message, protocol, address):
        """
        Answer only questions about names inside the DNS zone: never an open
        resolver.
        """
        name = message.queries[0].name.name.decode("ascii", "replace")
        return relative_labels(name, self.resolver.dns_zone) is not None

    def bytesReceived(self, data, protocol, address):
        """
        Decode one DNS message and answer it; a packet that does not decode
        gets FORMERR when its header can be read, and is dropped otherwise.

        :param protocol: the protocol to answer through (its
            ``send_response``).
        :param address: the client, or ``None`` over TCP.
        """
        received = perf_counter_ns()
        request = dns.Message()
        try:
            request.fromStr(data)
        except Exception:
            reply = header_reply(data, dns.EFORMAT)
            if reply is None:
                self.stats.dropped += 1
            else:
                self.stats.responses[(0, dns.EFORMAT)] += 1
                protocol.send_response(None, None, reply, reply, address)
            return
        request.received_ns = received
        self.messageReceived(request, protocol, address)

    def messageReceived(self, message, proto, address=None):
        """
        Answer a decoded message: an rcode for what is not a plain query in
        the zone, else what the resolver finds.
        """
        if message.answer:
            # A response sent to a server: FORMERR, unless it already is an
            # error (never bounce errors back and forth).
            if message.rCode:
                self.stats.dropped += 1
                return None
            return self._reply(proto, address, message, None, dns.EFORMAT)
        opt, problem = split_opt(message)
        if problem is None:
            problem = request_problem(message, opt)
        if problem is None and not self.allowQuery(message, proto, address):
            problem = dns.EREFUSED
        if problem is not None:
            return self._reply(proto, address, message, opt, problem)
        # Resolve and encode the lower-cased question, then put the asked
        # bytes back (echo_case): name compression then does not depend on
        # the question's case, so both paths give the same bytes.
        query = message.queries[0]
        asked = query.name.name
        message.queries = [dns.Query(asked.lower(), query.type, query.cls)]
        context = (proto, address, message, opt, asked)
        d = maybeDeferred(self.resolver._lookup, asked.lower(), query.cls, query.type)
        d.addCallbacks(self._found, self._failed, callbackArgs=context, errbackArgs=context)
        return d

    def _found(self, result, proto, address, message, opt, asked):
        answers, authority, additional = result
        self._reply(proto, address, message, opt, dns.OK, True, answers, authority, additional,
                    asked=asked)

    def _failed(self, failure, proto, address, message, opt, asked):
        if failure.check(NameNotFound):
            self._reply(proto, address, message, opt, dns.ENAME, True,
                        authority=[failure.value.soa], asked=asked)
        elif failure.check(Unavailable):
            # The view logs why, once; not per query.
            self._reply(proto, address, message, opt, dns.ESERVER, asked=asked)
        elif failure.check(dns.DomainError):
            self._reply(proto, address, message, opt, dns.EREFUSED, asked=asked)
        else:
            self.log.failure("Answering {query} failed", failure, query=message.queries)
            self._reply(proto, address, message, opt, dns.ESERVER, asked=asked)

    def _reply(self, proto, address, request, opt, rcode, auth=False,
               answers=(), authority=(), additional=(), asked=None):
        response = response_for(request, opt, rcode, auth, answers, authority, additional)
        whole, short = encode(response, proto.reduce_to)
        if asked is not None:
            whole, short = echo_case(whole, asked), echo_case(short, asked)
        qtype = request.queries[0].type if len(request.queries) == 1 else 0
        self.stats.responses[(qtype, rcode)] += 1
        proto.send_response(request, opt, whole, short, address)
        received = getattr(request, "received_ns", None)
        if received is not None:
            self.stats.observe(perf_counter_ns() - received)


class GlimpseDatagramProtocol(DatagramProtocol):
    """
    DNS over UDP: every datagram goes to the factory, and each response is
    sent whole when it fits the client's size, else truncated with TC=1.
    Nothing a client sends can stop the next query from being answered.

    :param controller: a :class:`GlimpseServerFactory`.
    """

    log = Logger()
    #: UDP never drops additional records on its own: TC=1 when anything
    #: does not fit (see :obj:`glimpse.dns.wire.encode`).
    reduce_to = None

    def __init__(self, controller):
        self.controller = controller

    def datagramReceived(self, data, address):
        """
        Answer one datagram.
        """
        try:
            self.controller.bytesReceived(data, self, address)
        except Exception:
            self.log.failure("Handling a DNS datagram failed")

    def send_response(self, request, opt, whole, short, address):
        """
        Send a response packed to what the client can take.

        :param request: the decoded request, or ``None`` for a bare header.
        :param opt: the request's OPT record or ``None``.
        :param whole: the encoded response.
        :param short: the same truncated (header, question, OPT, TC=1).
        """
        if len(whole) > udp_limit(opt):
            self.controller.stats.truncated += 1
            whole = short
        self.transport.write(whole, address)


class GlimpseStreamProtocol(Int16StringReceiver, TimeoutMixin):
    """
    DNS over TCP: length-prefixed messages, answers up to 65,535 bytes, the
    connection closed after ``timeout`` idle seconds.
    """

    MAX_LENGTH = TCP_SIZE
    reduce_to = TCP_SIZE

    def __init__(self, controller, timeout):
        self.controller = controller
        self._timeout = timeout

    def connectionMade(self):
        """
        Start the idle timer.
        """
        self.setTimeout(self._timeout)

    def stringReceived(self, data):
        """
        Answer one message.
        """
        self.resetTimeout()
        self.controller.bytesReceived(data, self, None)

    def send_response(self, request, opt, whole, short, address):
        """
        Send a response whole, without its additional records when they
        would take it over 65,535 bytes; only answers that alone do not
        fit go truncated, with TC=1.
        """
        if self.transport is None or self.transport.disconnected:
            return
        self.sendString(whole if len(whole) <= TCP_SIZE else short)

    def timeoutConnection(self):
        """
        Close an idle connection.
        """
        self.transport.loseConnection()
