"""
DNS wire details Glimpse's server needs and twisted.names leaves out: the
EDNS0 OPT record of a request and of its response, the rcode rules for what
is not a plain query, encoding a response whole and truncated, and the
server's counters.  Pure: nothing here does I/O.
"""

from __future__ import annotations

import collections
import io
from collections.abc import Callable, Iterable
from typing import TypeAlias, cast

import attrs
from twisted.names import dns

from glimpse.metrics.buckets import Buckets

#: An EDNS0 OPT record, decoded.  twisted.names has no public class for it:
#: its private ``_OPTHeader`` decodes and encodes it, and this module is the
#: one place Glimpse names that class (:func:`read_opt`, :func:`opt_record`).
OPTHeader: TypeAlias = dns._OPTHeader
_opt_from_record: Callable[[dns.RRHeader], OPTHeader] = dns._OPTHeader.fromRRHeader
_new_opt: Callable[..., OPTHeader] = dns._OPTHeader
#: twisted.names' name encoder, typed (twisted leaves it untyped).
_encode_name: Callable[[dns.Name, io.BytesIO, None], None] = dns.Name.encode

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
    :ivar panic_answers: answers given while their job was in panic (every
        instance served, :mod:`glimpse.view.panic`), by both paths.
    """

    responses: collections.Counter[tuple[int, int]] = attrs.Factory(collections.Counter)
    fast_hits: int = 0
    fast_misses: int = 0
    dropped: int = 0
    truncated: int = 0
    panic_answers: int = 0
    #: Server-side time from a query's arrival to its response being sent,
    #: in nanoseconds, per bucket of ``LATENCY_BOUNDS_NS``.
    latency: Buckets = attrs.Factory(lambda: Buckets(LATENCY_BOUNDS_NS))

    def observe(self, elapsed_ns: int, count: int = 1) -> None:
        """
        Count ``count`` responses' server-side latency (answers sent together
        in one batch share theirs).

        :param elapsed_ns: from the query's arrival to its response's send.
        :param count: how many responses took that long.
        """
        self.latency.add(elapsed_ns, count)

    def total(self) -> int:
        """
        How many responses were sent, all paths together.
        """
        return sum(self.responses.values())


def read_opt(record: dns.RRHeader) -> OPTHeader:
    """
    Decode an OPT record as twisted.names gives it (an :class:`dns.RRHeader`
    of type OPT).

    :param record: the record.
    :return: its :data:`OPTHeader`.
    :raises Exception: when its options do not decode.
    """
    return _opt_from_record(record)


def opt_record(udp_payload_size: int, version: int = 0, extended_rcode: int = 0,
               dnssec_ok: bool = False) -> OPTHeader:
    """
    An OPT record to send, for a response's or a query's additional section.

    :param udp_payload_size: the UDP payload size it advertises.
    :param version: the EDNS version.
    :param extended_rcode: the upper 8 bits of the rcode (``rcode >> 4``).
    :param dnssec_ok: the DO bit (RFC 3225).
    """
    return _new_opt(udpPayloadSize=udp_payload_size, extendedRCODE=extended_rcode,
                    version=version, dnssecOK=dnssec_ok)


def split_opt(message: dns.Message) -> tuple[OPTHeader | None, int | None]:
    """
    Take the OPT record out of a decoded request's additional section.

    :param message: the decoded request; its additional section is left
        without the OPT record.
    :return: ``(opt, problem)``: the :data:`OPTHeader` or ``None``, and
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
        return read_opt(opts[0]), None
    except Exception:
        return None, dns.EFORMAT  # its options do not decode


def well_formed_name(name: bytes) -> bool:
    """
    Whether a decoded name can be encoded again: labels of 1 to 63 bytes, at
    most 253 bytes in all (RFC 1035 2.3.4).  twisted.names decodes labels of
    up to 191 bytes (length bytes 0x40-0xBF, which RFC 1035 reserves) but
    cannot encode them.

    :param name: the name as :class:`dns.Name` holds it (``bytes``, no final dot).
    :return: whether it can be encoded.
    """
    if name == b"":
        return True
    return len(name) <= 253 and all(0 < len(label) <= 63 for label in name.split(b"."))


def request_problem(message: dns.Message, opt: OPTHeader | None) -> int | None:
    """
    The rcode a request gets without looking anything up, or ``None`` when
    it is a query for the resolver.  Order matters: the first rule that
    applies wins.

    :param message: the decoded request, OPT already split off
        (:func:`split_opt`).
    :param opt: its OPT record or ``None``.
    :return: the rcode (the full, extended one), or ``None``.
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


def response_for(request: dns.Message, opt: OPTHeader | None, rcode: int, auth: bool = False,
                 answers: Iterable[dns.RRHeader] = (), authority: Iterable[dns.RRHeader] = (),
                 additional: Iterable[dns.RRHeader] = ()) -> dns.Message:
    """
    The response :class:`dns.Message` to a request: ID, opcode, RD and the
    question (with its case) copied; RA never set; an OPT record advertising
    :data:`UDP_SIZE` when the request had one, with the request's DO bit
    (RFC 3225 section 3: it MUST be copied, though Glimpse signs nothing).

    :param request: the decoded request.
    :param opt: its OPT record, or ``None``.
    :param rcode: the full rcode (its upper bits go in the OPT record).
    :param auth: whether to set AA.
    :param answers: the answer section.
    :param authority: the authority section.
    :param additional: the additional section (the OPT record is added).
    """
    response = dns.Message(
        id=request.id, answer=1, opCode=request.opCode, auth=auth,
        recDes=request.recDes, recAv=0, rCode=rcode & 0xF, maxSize=0)
    # FORMERR may be about the question itself: it is not echoed then.
    if rcode != dns.EFORMAT:
        response.queries = list(request.queries)
    response.answers = list(answers)
    response.authority = list(authority)
    response.additional = list(additional)
    if opt is not None:
        # twisted.names encodes whatever has encode() in a section, and
        # types the sections as RRHeader lists: the OPT record is not one.
        response.additional.append(cast(dns.RRHeader, opt_record(
            UDP_SIZE, 0, rcode >> 4, dnssec_ok=bool(opt.dnssecOK))))
    return response


def encode(response: dns.Message, reduce_to: int | None = None) -> tuple[bytes, bytes]:
    """
    Encode a response whole, and as it goes when it does not fit: header,
    question and OPT with TC=1, every other section empty, so that the
    client retries over TCP rather than getting fewer records silently.

    :param response: the response (:func:`response_for`).
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


def echo_case(encoded: bytes, asked: bytes) -> bytes:
    """
    Put the question's name back as it was asked (0x20 case randomisation
    must come back intact) into a response encoded with it lower-cased.
    Records whose owner is the question compress to a pointer into it, so
    they echo the case too.

    :param encoded: the response bytes, question at offset 12.
    :param asked: the name as asked (bytes).
    :return: the response with the name as asked.
    """
    wire = io.BytesIO()
    _encode_name(dns.Name(asked), wire, None)
    name = wire.getvalue()
    end = 12 + len(name)
    if encoded[12:end] != name.lower():
        return encoded  # no question (FORMERR), or a name that did not round-trip
    return encoded[:12] + name + encoded[end:]


def udp_limit(opt: OPTHeader | None) -> int:
    """
    How many bytes a UDP response to a request with ``opt`` may have: the
    client's advertised size, at least 512, at most :data:`UDP_SIZE`.

    :param opt: the request's OPT record, or ``None``.
    """
    if opt is None:
        return CLASSIC_UDP_SIZE
    size: int = opt.udpPayloadSize
    return max(CLASSIC_UDP_SIZE, min(size, UDP_SIZE))


def header_reply(data: bytes, rcode: int) -> bytes | None:
    """
    A bare reply (header only) to a packet that did not decode, or ``None``
    when it must not be answered: no whole header, or it is itself a
    response that already carries an error (answering those could make two
    servers bounce errors at each other forever).

    :param data: the packet.
    :param rcode: the rcode to answer with.
    """
    if len(data) < 12:
        return None
    if data[2] & 0x80 and data[3] & 0x0F:
        return None
    flags = 0x80 | (data[2] & 0x79)  # QR; keep opcode and RD
    return data[:2] + bytes((flags, rcode)) + b"\x00" * 8
