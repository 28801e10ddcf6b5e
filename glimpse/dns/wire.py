"""
DNS wire details Glimpse's server needs and twisted.names leaves out: the
EDNS0 OPT record of a request and of its response, the rcode rules for what
is not a plain query, encoding a response whole and truncated, and the
server's counters.  Pure: nothing here does I/O.
"""

import collections
import io

import attrs
from twisted.names import dns

from glimpse.metrics.buckets import Buckets

#: The UDP payload size Glimpse advertises in its OPT record, and the most it
#: sends over UDP whatever a client advertises: the DNS Flag Day 2020 value,
#: small enough never to fragment on common paths.
UDP_SIZE = 1232

#: What a client without EDNS can receive (RFC 1035).
CLASSIC_UDP_SIZE = 512

#: The most a DNS message over TCP can carry (two-byte length prefix).
TCP_SIZE = 65535

#: RFC 6891's BADVERS: extended rcode 16 (upper bits 1 in the OPT record).
BADVERS = 16

#: Query types that ask to dump the zone: refused, the topology is not for
#: anyone to copy wholesale.
ZONE_TRANSFERS = frozenset((dns.AXFR, dns.IXFR))

#: Meta query types (RFC 6895) Glimpse does not implement; ANY (255) is
#: answered per RFC 8482 instead, OPT as a question is malformed.
META_TYPES = frozenset(range(128, 255)) - ZONE_TRANSFERS


#: Upper bounds (ns) of the DNS latency histogram's buckets: 10 us to 5 s.
LATENCY_BOUNDS_NS = (10_000, 25_000, 50_000, 100_000, 250_000, 500_000, 1_000_000,
                     5_000_000, 25_000_000, 100_000_000, 500_000_000, 5_000_000_000)


@attrs.define
class DNSStats:
    """
    Plain counters of the DNS server, for the metrics exporter.

    :ivar responses: ``{(qtype, rcode): count}`` of every response sent, by
        both paths (rcode is the full, extended one: 16 is BADVERS; qtype is
        0 when the request had no readable question).
    :ivar fast_hits: queries answered by the fast path's pre-encoded answers.
    :ivar fast_misses: plain queries the fast path handed to twisted.names.
    :ivar dropped: packets that got no answer (unreadable header, or a
        response sent to the server).
    :ivar truncated: UDP responses sent with TC=1 because they did not fit.
    """

    responses: collections.Counter = attrs.Factory(collections.Counter)
    fast_hits: int = 0
    fast_misses: int = 0
    dropped: int = 0
    truncated: int = 0
    #: Server-side time from a query's arrival to its response being sent,
    #: in nanoseconds, per bucket of ``LATENCY_BOUNDS_NS``.
    latency: Buckets = attrs.Factory(lambda: Buckets(LATENCY_BOUNDS_NS))

    def observe(self, elapsed_ns, count=1):
        """
        Count ``count`` responses' server-side latency (answers sent together
        in one batch share theirs).
        """
        self.latency.add(elapsed_ns, count)

    def total(self):
        """
        How many responses were sent, all paths together.
        """
        return sum(self.responses.values())


def split_opt(message):
    """
    Take the OPT record out of a decoded request's additional section.

    :return: ``(opt, problem)``: the :obj:`dns._OPTHeader` or ``None``, and
        ``None`` or the rcode to answer with when the OPT records are wrong
        (more than one, or one outside the additional section: FORMERR).
    """
    opts = [r for r in message.additional if r.type == dns.OPT]
    if any(r.type == dns.OPT for r in message.answers + message.authority):
        return None, dns.EFORMAT
    if not opts:
        return None, None
    if len(opts) > 1 or opts[0].name.name != b"":
        return None, dns.EFORMAT
    message.additional = [r for r in message.additional if r.type != dns.OPT]
    try:
        return dns._OPTHeader.fromRRHeader(opts[0]), None
    except Exception:
        return None, dns.EFORMAT  # its options do not decode


def well_formed_name(name):
    """
    Whether a decoded name can be encoded again: labels of 1 to 63 bytes, at
    most 253 bytes in all (RFC 1035 2.3.4).  twisted.names decodes labels of
    up to 191 bytes (length bytes 0x40-0xBF, which RFC 1035 reserves) but
    cannot encode them.

    :param name: the name as :class:`dns.Name` holds it (``bytes``, no final dot).
    """
    if name == b"":
        return True
    return len(name) <= 253 and all(0 < len(label) <= 63 for label in name.split(b"."))


def request_problem(message, opt):
    """
    The rcode a request gets without looking anything up, or ``None`` when
    it is a query for the resolver.  Order matters: the first rule that
    applies wins.

    :param message: the decoded request, OPT already split off.
    :param opt: its OPT record or ``None``.
    """
    if any(not well_formed_name(q.name.name) for q in message.queries):
        # First: every other answer echoes the question, which could not be
        # encoded again.
        return dns.EFORMAT
    if opt is not None and opt.version > 0:
        return BADVERS
    if message.opCode != dns.OP_QUERY:
        return dns.ENOTIMP  # NOTIFY, UPDATE, STATUS, IQUERY change nothing here
    if len(message.queries) != 1 or message.answers or message.authority:
        return dns.EFORMAT
    query = message.queries[0]
    if query.type == dns.OPT:
        return dns.EFORMAT
    if query.cls != dns.IN:
        return dns.EREFUSED
    if query.type in ZONE_TRANSFERS:
        return dns.EREFUSED
    if query.type in META_TYPES:
        return dns.ENOTIMP
    return None


def response_for(request, opt, rcode, auth=False, answers=(), authority=(), additional=()):
    """
    The response :class:`dns.Message` to a request: ID, opcode, RD and the
    question (with its case) copied; RA never set; an OPT record advertising
    :class:`UDP_SIZE` when the request had one.
    """
    response = dns.Message(
        id=request.id, answer=1, opCode=request.opCode, auth=int(auth),
        recDes=request.recDes, recAv=0, rCode=rcode & 0xF, maxSize=0)
    # FORMERR may be about the question itself: it is not echoed then.
    if rcode != dns.EFORMAT:
        response.queries = list(request.queries)
    response.answers = list(answers)
    response.authority = list(authority)
    response.additional = list(additional)
    if opt is not None:
        response.additional.append(
            dns._OPTHeader(udpPayloadSize=UDP_SIZE, extendedRCODE=rcode >> 4, version=0))
    return response


def encode(response, reduce_to=None):
    """
    Encode a response whole, and as it goes when it does not fit: header,
    question and OPT with TC=1, every other section empty, so that the
    client retries over TCP rather than getting fewer records silently.

    :param reduce_to: when the whole response is larger than this, encode
        it without its additional records (the SRV targets' addresses)
        instead.  Used over TCP, where there is no retry to send a client
        to: RFC 2181 section 9 lets additional data go without TC, and SRV
        targets are not compressible (RFC 2782), so 1,000 instances with
        their addresses would not fit 65,535 bytes, and without them do.
    :return: ``(whole, truncated)`` bytes.
    """
    whole = response.toStr()
    opts = [r for r in response.additional if r.type == dns.OPT]
    if reduce_to is not None and len(whole) > reduce_to and len(opts) < len(response.additional):
        response.additional = opts
        whole = response.toStr()
    short = dns.Message(
        id=response.id, answer=1, opCode=response.opCode, auth=response.auth,
        recDes=response.recDes, recAv=0, rCode=response.rCode, trunc=1, maxSize=0)
    short.queries = list(response.queries)
    short.additional = opts
    return whole, short.toStr()


def echo_case(encoded, asked):
    """
    Put the question's name back as it was asked (0x20 case randomisation
    must come back intact) into a response encoded with it lower-cased.
    Records whose owner is the question compress to a pointer into it, so
    they echo the case too.

    :param encoded: the response bytes, question at offset 12.
    :param asked: the name as asked (bytes).
    """
    wire = io.BytesIO()
    dns.Name(asked).encode(wire, None)
    name = wire.getvalue()
    end = 12 + len(name)
    if encoded[12:end] != name.lower():
        return encoded  # no question (FORMERR), or a name that did not round-trip
    return encoded[:12] + name + encoded[end:]


def udp_limit(opt):
    """
    How many bytes a UDP response to a request with ``opt`` may have: the
    client's advertised size, at least 512, at most :class:`UDP_SIZE`.
    """
    if opt is None:
        return CLASSIC_UDP_SIZE
    return max(CLASSIC_UDP_SIZE, min(opt.udpPayloadSize, UDP_SIZE))


def header_reply(data, rcode):
    """
    A bare reply (header only) to a packet that did not decode, or ``None``
    when it must not be answered: no whole header, or it is itself a
    response that already carries an error (answering those could make two
    servers bounce errors at each other forever).
    """
    if len(data) < 12:
        return None
    if data[2] & 0x80 and data[3] & 0x0F:
        return None
    flags = 0x80 | (data[2] & 0x79)  # QR; keep opcode and RD
    return data[:2] + bytes((flags, rcode)) + b"\x00" * 8
