"""
The DO bit (RFC 3225 section 3: the DO bit of the query MUST be copied into
the response's OPT record) on every path: twisted.names and the fast path,
UDP (one by one and batched), hits and misses, truncated and error answers.
Glimpse signs nothing: DO only comes back, it adds no record.
"""

import pytest
from twisted.names import dns

from glimpse.dns.wire import read_opt

from dns_stub import (
    SocketPair,
    connect,
    decode,
    demo_view,
    exchange,
    exchange_socket,
    exchange_stream,
    query_bytes,
    servers,
    stream_factory,
)

WEB = b"http.web.prod.shop.ams.glimpse.test"

#: Questions and what they get: a positive answer, NODATA, NXDOMAIN,
#: REFUSED (outside the zone), NOTIMP (a meta type), the apex SOA.
QUESTIONS = [
    (WEB, dns.SRV, dns.OK), (WEB, dns.TXT, dns.OK),
    (b"nope.web.prod.shop.ams.glimpse.test", dns.A, dns.ENAME),
    (b"example.com", dns.A, dns.EREFUSED), (WEB, dns.MAILB, dns.ENOTIMP),
    (b"glimpse.test", dns.SOA, dns.OK),
]


def opt_of(response):
    """
    The response's OPT record, decoded (``None`` when it has none).
    """
    opts = [r for r in decode(response).additional if r.type == dns.OPT]
    assert len(opts) <= 1
    return read_opt(opts[0]) if opts else None


def paths():
    """
    ``{name: ask(data) -> raw reply}``: twisted.names alone and the fast
    path, over UDP (fed one by one) and over TCP.
    """
    view = demo_view(40)
    _, slow, slow_wire, _ = servers(view)
    _, fast, fast_wire, _ = servers(view, fast=True)
    slow_tcp = connect(stream_factory(view, fast=False)[0])
    fast_tcp = connect(stream_factory(view, fast=True)[0])
    return {"twisted.names": lambda data: exchange(slow, slow_wire, data),
            "fast path": lambda data: exchange(fast, fast_wire, data),
            "twisted.names over TCP": lambda data: exchange_stream(*slow_tcp, data),
            "fast path over TCP": lambda data: exchange_stream(*fast_tcp, data)}


PATHS = ["twisted.names", "fast path", "twisted.names over TCP", "fast path over TCP"]


@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize("do", [False, True])
def test_the_do_bit_comes_back_as_it_was_asked(path, do):
    """
    Every answer to a query with an OPT record has an OPT record with the
    query's DO bit, whatever the rcode, on the first ask (a fast-path miss)
    and the next ones (hits by name and by exact bytes).
    """
    ask = paths()[path]
    for name, qtype, rcode in QUESTIONS:
        data = query_bytes(name, qtype, edns=1232, do=do)
        for _ in range(3):
            reply = ask(data)
            assert decode(reply).rCode == rcode
            assert opt_of(reply).dnssecOK == do, (name, qtype)


@pytest.mark.parametrize("path", PATHS)
def test_a_do_query_never_gets_a_kept_answer_without_do_or_the_reverse(path):
    """
    Queries alike but for the DO bit, asked one after the other in both
    orders, each get their own bit back: the fast path keeps them apart.
    """
    ask = paths()[path]
    for order in ((False, True), (True, False)):
        for _ in range(3):
            for do in order:
                for name, qtype, _rcode in QUESTIONS:
                    reply = ask(query_bytes(name, qtype, edns=4096, do=do))
                    assert opt_of(reply).dnssecOK == do


@pytest.mark.parametrize("path", PATHS)
def test_truncated_and_badvers_answers_carry_the_do_bit(path):
    """
    A UDP answer too big for the client's size goes truncated (TC=1) with
    the DO bit (over TCP it comes whole, with the bit too); so does a
    BADVERS answer to EDNS version 1.
    """
    ask = paths()[path]
    for do in (False, True):
        for _ in range(2):
            big = ask(query_bytes(WEB, dns.SRV, edns=512, do=do))
            assert decode(big).trunc == (0 if "TCP" in path else 1)
            assert opt_of(big).dnssecOK == do
    message = dns.Message(id=9)
    message.queries = [dns.Query(WEB, dns.A)]
    message.additional = [dns._OPTHeader(version=1, dnssecOK=True)]
    badvers = ask(message.toStr())
    assert (opt_of(badvers).extendedRCODE, opt_of(badvers).dnssecOK) == (1, True)


def test_a_query_without_edns_gets_no_opt_record():
    """
    Without an OPT record in the query there is none in the answer (so no
    DO bit either), on every path.
    """
    for ask in paths().values():
        for _ in range(2):
            assert opt_of(ask(query_bytes(WEB, dns.A))) is None


def test_batched_reads_echo_the_do_bit():
    """
    Read from a real socket (recvmmsg/sendmmsg on Linux), DO and non-DO
    queries for the same name, alternating, each get their own bit back.
    """
    view = demo_view(3)
    with SocketPair() as pair:
        _, fast, _, _ = servers(view, fast=True, transport=pair)
        for i in range(12):
            do = bool(i % 2)
            reply = exchange_socket(fast, pair, query_bytes(WEB, dns.SRV, id=i, edns=1232, do=do))
            assert opt_of(reply).dnssecOK == do


def test_do_queries_are_answered_from_pre_encoded_answers():
    """
    A query with DO is a plain query for the fast path: asked again, over
    UDP or TCP, it is a hit (it does not cost a pass through twisted.names
    every time).
    """
    tcp, fast, wire, _ = stream_factory(demo_view())
    conn = connect(tcp)
    for _ in range(4):
        data = query_bytes(WEB, dns.A, edns=1232, do=True)
        assert opt_of(exchange(fast, wire, data)).dnssecOK
        assert opt_of(exchange_stream(*conn, data)).dnssecOK
    fast.flush_stats()
    assert (fast.stats.fast_misses, fast.stats.fast_hits) == (1, 7)
