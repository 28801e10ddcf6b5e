"""
The plain query, which the fast path answers from pre-encoded answers
(:mod:`glimpse.dns.fastpath` over UDP, :mod:`glimpse.dns.stream` over TCP),
and its key there.  Pure: bytes in, bytes out.

A *plain* query is QUERY, QR=0, no AA/TC, QDCOUNT=1, no answer or authority
records, and either no additional record or exactly one OPT record of
version 0 with no flag but DO and no options, and nothing after it.  For a
plain query the answer depends only on the lower-cased name, the type,
whether EDNS was used (with DO or not), the view and the query's ID (which
picks the rotation, :mod:`glimpse.dns.rotation`): the key is made of the
first four.

The name's end is found with one ``find`` of the zero byte rather than by
walking labels: a key only matches when its bytes equal a kept key, and
kept keys are stored only after twisted.names decoded the same bytes to the
same question, so a name with a zero inside a label can only miss.
"""

from __future__ import annotations

from glimpse.dns.wire import CLASSIC_UDP_SIZE, UDP_SIZE

#: Header counts of a plain query: QDCOUNT=1, and ARCOUNT 0 or 1 (an OPT).
_PLAIN = b"\x00\x01\x00\x00\x00\x00\x00\x00"
_EDNS = b"\x00\x01\x00\x00\x00\x00\x00\x01"
#: An OPT record's name (root) and type, then its TTL and length: extended
#: rcode 0, version 0, no flag but DO, no options.  The key's suffix tells
#: an OPT record without DO (E) from one with it (D): the response's OPT
#: carries the DO bit of the query's (RFC 3225), so the two are different
#: answers.
_OPT_HEAD = b"\x00\x00\x29"
_OPT_TAGS = {b"\x00" * 6: b"E", b"\x00\x00\x80\x00\x00\x00": b"D"}


def plain_key(data: bytes) -> tuple[bytes, int, int] | None:
    """
    The fast path's key of a plain query.

    :param data: a DNS message (over TCP, without its length prefix).
    :return: ``(key, end, limit)``: the key (lower-cased name, the final
        zero byte, type and class, and ``E`` or ``D`` when there was an OPT
        record); the offset of the name's final zero byte; and how many
        bytes a UDP answer may have (the client's size, 512 to 1232).
        ``None`` when the query is not plain.
    """
    if len(data) <= 16 or data[2] & 0xFE:
        return None  # too short, or not a plain QUERY with QR, AA and TC clear
    end = data.find(b"\x00", 12)
    if end < 0:
        return None
    qend = end + 5
    counts = data[4:12]
    size = len(data)
    if counts == _PLAIN and size == qend:
        return data[12:end].lower() + data[end:qend], end, CLASSIC_UDP_SIZE
    if (counts == _EDNS and size == qend + 11 and data[qend:qend + 3] == _OPT_HEAD
            and data[qend + 5:] in _OPT_TAGS):
        limit = (data[qend + 3] << 8) | data[qend + 4]
        limit = UDP_SIZE if limit > UDP_SIZE else max(limit, CLASSIC_UDP_SIZE)
        return data[12:end].lower() + data[end:qend] + _OPT_TAGS[data[qend + 5:]], end, limit
    return None


def heads(response: bytes) -> tuple[bytes, bytes]:
    """
    A response's header bytes 2-12 (flags and counts) with RD clear and
    with RD set, so that a query's RD bit picks its own (``heads[rd]``).

    :param response: an encoded response.
    """
    flags = response[2] & 0xFE
    rest = response[3:12]
    return (bytes((flags,)) + rest, bytes((flags | 1,)) + rest)


def same_question(response: bytes, key: bytes, end: int) -> bool:
    """
    Whether a response's question is, but for case, the one a key was made
    of: then the bytes after it answer any query with that key, the query's
    own question (its case) copied in front of them.

    :param response: an encoded response.
    :param key: the query's key (:func:`plain_key`).
    :param end: the offset of the query name's final zero byte.
    """
    qend = end + 5
    return (response[12:end].lower() == key[: end - 12]
            and response[end:qend] == key[end - 12: qend - 12])
