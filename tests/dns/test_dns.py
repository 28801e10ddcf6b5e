"""
Unit tests of Glimpse's authoritative DNS server (the twisted.names path):
what a client sees for every kind of question, from a view in memory.
"""

import struct

import pytest
from twisted.names import dns

from glimpse.dns.wire import BADVERS, UDP_SIZE, opt_record, read_opt

from dns_stub import (
    DNS_ZONE,
    connect,
    decode,
    demo_view,
    exchange,
    exchange_stream,
    query_bytes,
    servers,
    stream_factory,
)

WEB = b"http.web.prod.shop.ams." + DNS_ZONE.encode()


@pytest.fixture
def udp():
    _factory, proto, transport, _clock = servers(demo_view())
    return lambda data: exchange(proto, transport, data)


def ask(udp, name, qtype=dns.SRV, **kwargs):
    return decode(udp(query_bytes(name, qtype, **kwargs)))


def opt_of(message):
    opts = [r for r in message.additional if r.type == dns.OPT]
    return read_opt(opts[0]) if opts else None


def test_srv_answer_is_authoritative_without_recursion(udp):
    """
    SRV lists the healthy instances with their targets' A records; AA=1,
    RA=0, RD copied from the query, the ID echoed.
    """
    for rd in (True, False):
        r = ask(udp, WEB, rd=rd, id=4321)
        assert (r.id, r.answer, r.auth, r.recAv, r.recDes, r.rCode) == (4321, 1, 1, 0, int(rd), 0)
        assert sorted(a.payload.port for a in r.answers) == [8080, 8080]
        assert {a.payload.dottedQuad() for a in r.additional} == {"10.0.0.1", "10.0.0.2"}


def test_question_case_is_echoed_and_names_match_any_case(udp):
    """
    A 0x20-randomised question comes back exactly as asked, and is answered
    like the lower-case one.
    """
    name = b"hTTp.WEb.pRod.SHOP.aMs.GLimpse.TeSt"
    r = ask(udp, name, dns.A)
    assert r.queries[0].name.name == name
    assert {a.name.name for a in r.answers} == {name}
    assert len(r.answers) == 2


@pytest.mark.parametrize(("name", "qtype"), [
    (WEB, dns.AAAA), (WEB, dns.TXT), (WEB, dns.MX),
    (b"web.prod.shop.ams.glimpse.test", dns.A),  # empty non-terminal
    (b"ams.glimpse.test", dns.SRV),  # a zone
    (b"http.db.prod.shop.ams.glimpse.test", dns.SRV),  # no healthy instance
    (b"glimpse.test", dns.A),  # the apex has no A
])
def test_nodata_has_the_soa(udp, name, qtype):
    """
    Names that exist without that type get NOERROR, no answer, and the SOA
    (whose minimum is the negative TTL) in authority.
    """
    r = ask(udp, name, qtype)
    assert (r.rCode, r.auth, r.answers) == (dns.OK, 1, [])
    assert [a.type for a in r.authority] == [dns.SOA]
    assert r.authority[0].payload.minimum == 7


@pytest.mark.parametrize("name", [
    b"ftp.web.prod.shop.ams.glimpse.test",  # no such port
    b"http.nope.prod.shop.ams.glimpse.test",  # no such job
    b"http.web.prod.shop.nowhere.glimpse.test",  # no such zone
    b"a.b.c.d.e.f.ams.glimpse.test",  # too deep
    b"0a636363.addr.ams.glimpse.test",  # a target nobody has
])
def test_nxdomain_has_the_soa(udp, name):
    """
    Names in the zone that do not exist get NXDOMAIN, AA=1 and the SOA.
    """
    r = ask(udp, name)
    assert (r.rCode, r.auth) == (dns.ENAME, 1)
    assert [a.type for a in r.authority] == [dns.SOA]


def test_apex_soa_ns_and_the_ns_address(udp):
    """
    The apex has the SOA and NS ``ns.<zone>``, whose A record is given.
    """
    assert ask(udp, b"glimpse.test", dns.SOA).answers[0].payload.serial == 1002
    ns = ask(udp, b"glimpse.test", dns.NS)
    assert ns.answers[0].payload.name.name == b"ns.glimpse.test"
    assert ns.additional[0].payload.dottedQuad() == "127.0.0.1"
    assert ask(udp, b"ns.glimpse.test", dns.A).answers[0].payload.dottedQuad() == "127.0.0.1"


def test_any_is_answered_minimally(udp):
    """
    ANY (RFC 8482) gets one RRset: the SRV set of an address, the SOA at
    the apex.
    """
    assert {a.type for a in ask(udp, WEB, dns.ALL_RECORDS).answers} == {dns.SRV}
    assert [a.type for a in ask(udp, b"glimpse.test", dns.ALL_RECORDS).answers] == [dns.SOA]


@pytest.mark.parametrize(("name", "qtype", "cls"), [
    (b"example.com", dns.A, dns.IN),  # outside the zone: not an open resolver
    (WEB, dns.SRV, dns.CH),  # not class IN
    (b"glimpse.test", dns.AXFR, dns.IN),  # no zone transfers
    (b"glimpse.test", dns.IXFR, dns.IN),
])
def test_refused(udp, name, qtype, cls):
    """
    Names outside the zone, other classes and zone transfers are REFUSED,
    without AA.
    """
    r = ask(udp, name, qtype, cls=cls)
    assert (r.rCode, r.auth, r.answers) == (dns.EREFUSED, 0, [])


@pytest.mark.parametrize("opcode", [dns.OP_NOTIFY, dns.OP_UPDATE, dns.OP_STATUS, dns.OP_INVERSE])
def test_other_opcodes_are_not_implemented(udp, opcode):
    """
    NOTIFY, UPDATE and the other opcodes get NOTIMP and change nothing.
    """
    r = ask(udp, b"glimpse.test", dns.SOA, opcode=opcode)
    assert (r.rCode, r.opCode) == (dns.ENOTIMP, opcode)
    assert ask(udp, WEB).rCode == dns.OK


def test_malformed_queries_get_formerr(udp):
    """
    Garbage after a header, two questions, and a response sent as a query
    get FORMERR with the ID echoed; a packet shorter than a header, or an
    error response, gets nothing; the next query is answered.
    """
    header = struct.pack("!HBBHHHH", 99, 0x01, 0, 1, 0, 0, 0)
    assert decode(udp(header + b"\x07garbage")).rCode == dns.EFORMAT
    two = dns.Message(id=98)
    two.queries = [dns.Query(WEB, dns.SRV), dns.Query(WEB, dns.A)]
    assert decode(udp(two.toStr())).rCode == dns.EFORMAT
    response = dns.Message(id=97, answer=1)
    response.queries = [dns.Query(WEB, dns.SRV)]
    r = decode(udp(response.toStr()))
    assert (r.id, r.rCode) == (97, dns.EFORMAT)
    response.rCode = dns.ESERVER
    assert udp(response.toStr()) is None
    assert udp(b"\x00\x01\x02") is None
    assert ask(udp, WEB).rCode == dns.OK


@pytest.mark.parametrize(("opcode", "rd"), [(dns.OP_QUERY, 0), (dns.OP_NOTIFY, 1)])
def test_label_longer_than_63_bytes_gets_formerr(udp, opcode, rd):
    """
    A question whose label is 64-191 bytes long (a length byte RFC 1035
    reserves, which twisted.names decodes but cannot encode again) gets a
    FORMERR without the question, whatever else the query asks; the server
    answers the next query.
    """
    header = struct.pack("!HBBHHHH", 77, (opcode << 3) | rd, 0, 1, 0, 0, 0)
    question = bytes([0x50]) + b"a" * 0x50 + b"\x00" + struct.pack("!HH", dns.A, dns.IN)
    r = decode(udp(header + question))
    assert (r.id, r.rCode, r.queries) == (77, dns.EFORMAT, [])
    assert ask(udp, WEB).rCode == dns.OK


def test_edns_opt_is_echoed_with_glimpses_size(udp):
    """
    A query with an OPT record gets one back advertising Glimpse's UDP
    size; one without gets none.
    """
    r = ask(udp, WEB, edns=4096)
    opt = opt_of(r)
    assert (opt.udpPayloadSize, opt.version, r.rCode) == (UDP_SIZE, 0, dns.OK)
    assert opt_of(ask(udp, WEB)) is None


def test_edns_version_above_zero_gets_badvers(udp):
    """
    EDNS version 1 gets BADVERS (extended rcode 16) with an OPT record.
    """
    message = dns.Message(id=5)
    message.queries = [dns.Query(WEB, dns.SRV)]
    message.additional = [opt_record(1232, version=1)]
    r = decode(udp(message.toStr()))
    opt = opt_of(r)
    assert (opt.extendedRCODE << 4 | r.rCode) == BADVERS
    assert r.answers == []


def test_udp_answers_fit_the_client_or_set_tc():
    """
    40 instances do not fit 512 bytes: without EDNS the reply is TC=1 with
    no records (never a shortened answer); with EDNS 1232 too small as well,
    TC=1; small answers come whole.
    """
    factory, proto, transport, _clock = servers(demo_view(40))
    plain = decode(exchange(proto, transport, query_bytes(WEB)))
    assert (plain.trunc, plain.answers, plain.additional) == (1, [], [])
    big = decode(exchange(proto, transport, query_bytes(WEB, dns.A, edns=4096)))
    assert (big.trunc, len(big.answers)) == (0, 40)
    assert factory.stats.truncated == 1


def test_tcp_carries_a_thousand_instances_whole():
    """
    Over TCP, 1,000 instances come in one answer (their SRV records, without
    the additional addresses that would take it past 65,535 bytes).
    """
    for fast in (False, True):
        tcp, _udp, _wire, _clock = stream_factory(demo_view(1000), fast=fast)
        stream, wire = connect(tcp)
        for _ in range(2):
            r = decode(exchange_stream(stream, wire, query_bytes(WEB)))
            assert (r.trunc, len(r.answers), r.additional) == (0, 1000, [])
        stream.connectionLost(None)


def test_stale_zone_is_servfail_and_counted(udp):
    """
    A zone whose view is past max-stale answers SERVFAIL, not AA; the
    counters record each response by (qtype, rcode).
    """
    view = demo_view()
    factory, proto, transport, _clock = servers(view)
    view.problems["ams"] = "stale"
    r = decode(exchange(proto, transport, query_bytes(WEB)))
    assert (r.rCode, r.auth) == (dns.ESERVER, 0)
    assert factory.stats.responses[(dns.SRV, dns.ESERVER)] == 1
