"""
Glimpse's DNS server: the factory that answers requests with the resolver
(:mod:`glimpse.dns.resolver`).

It is Glimpse's own, and does what an authoritative-only server needs:
REFUSED outside the zone, the SOA in the authority section of negative
answers, AA on every in-zone answer, SERVFAIL without a traceback when the
view cannot serve, truncation that never drops records silently, and
records in the order the query's ID picks (:mod:`glimpse.dns.rotation`).
The protocols it answers through are in :mod:`glimpse.dns.protocols` (UDP)
and :mod:`glimpse.dns.stream` (TCP, whose listener is
:class:`glimpse.dns.connections.StreamFactory`).
"""

from __future__ import annotations

from collections.abc import Iterable
from time import perf_counter_ns

from twisted.internet.defer import Deferred, maybeDeferred
from twisted.logger import Logger
from twisted.names import dns
from twisted.python.failure import Failure

from glimpse.address import relative_labels
from glimpse.dns.answers import Found
from glimpse.dns.request import ClientAddress, RequestContext, Responder
from glimpse.dns.resolver import GlimpseResolver, NameNotFound
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
from glimpse.view.topology import Unavailable


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

    :param resolver: a :class:`glimpse.dns.resolver.GlimpseResolver`.
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

