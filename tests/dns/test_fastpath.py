"""
The DNS fast path answers exactly what twisted.names answers, byte for
byte, and follows the view.
"""

import pytest
from twisted.names import dns

from glimpse.dns import mmsg

from dns_stub import (
    SocketPair,
    connect,
    corpus,
    decode,
    demo_view,
    exchange,
    exchange_socket,
    exchange_stream,
    framed,
    instance,
    query_bytes,
    servers,
    stream_factory,
    unframed,
)

WEB = b"http.web.prod.shop.ams.glimpse.test"


@pytest.mark.parametrize("count", [2, 40])
def test_fast_path_answers_byte_for_byte_like_twisted_names(count):
    """
    Every query of the corpus (mixed case, EDNS sizes, truncation) gets the
    same bytes from twisted.names, from the fast path's first answer (a
    miss), from its cached answer (a hit by lower-cased name) and from its
    answer to the same bytes again (a hit by exact bytes).
    """
    view = demo_view(count)
    _, slow, slow_wire, _ = servers(view)
    factory, fast, fast_wire, _ = servers(view, fast=True)
    for data in corpus():
        expected = exchange(slow, slow_wire, data)
        for _ in range(3):
            assert exchange(fast, fast_wire, data) == expected, decode(expected)
    fast.flush_stats()
    assert factory.stats.fast_hits > 1000
    assert fast.cache_size() > 100


def test_batched_reads_answer_byte_for_byte_like_twisted_names():
    """
    Read from a real socket (in batches, with recvmmsg/sendmmsg on Linux),
    every query of the corpus gets the same bytes as from twisted.names, on
    the first ask and when answered again from its pre-encoded bytes.
    """
    view = demo_view(40)
    _, slow, slow_wire, _ = servers(view)
    with SocketPair() as pair:
        factory, fast, _, _ = servers(view, fast=True, transport=pair)
        for data in corpus():
            expected = exchange(slow, slow_wire, data)
            for _ in range(2):
                assert exchange_socket(fast, pair, data, wait=expected is not None) == expected
        fast.flush_stats()
        # Batched wherever the system has recvmmsg (Linux, as in CI).
        assert fast.batched == mmsg.available
    assert factory.stats.fast_hits > 1000


def test_a_differently_cased_query_hits_and_echoes_its_case():
    """
    After a lower-case query, a 0x20 query with another ID is answered from
    the cache with its own ID, RD and case.
    """
    factory, fast, wire, _ = servers(demo_view(), fast=True)
    exchange(fast, wire, query_bytes(WEB, dns.A, id=1))
    mixed = b"hTtP.wEB.prod.SHOP.ams.glimpse.test"
    r = decode(exchange(fast, wire, query_bytes(mixed, dns.A, id=2, rd=False)))
    fast.flush_stats()
    assert factory.stats.fast_hits == 1
    assert (r.id, r.recDes, r.queries[0].name.name) == (2, 0, mixed)
    assert {a.name.name for a in r.answers} == {mixed}


def test_a_change_of_the_view_is_answered_at_once():
    """
    When the view changes, the next query gets the new instances.
    """
    view = demo_view(2)
    _factory, fast, wire, _ = servers(view, fast=True)
    assert len(decode(exchange(fast, wire, query_bytes(WEB, dns.A))).answers) == 2
    view.set_job("ams", "shop", "prod", "web", [instance("10.7.7.7")], ports=("http",))
    r = decode(exchange(fast, wire, query_bytes(WEB, dns.A)))
    assert [a.payload.dottedQuad() for a in r.answers] == ["10.7.7.7"]


def test_a_change_of_one_job_keeps_the_answers_of_the_others():
    """
    A change of one job drops that job's answers and every answer carrying
    the SOA (its serial moved), and no other: the other jobs' answers keep
    coming from the cache, and every answer after the change is current.
    """
    view = demo_view(2)
    view.set_job("ams", "shop", "prod", "api", [instance("10.6.6.6")])
    factory, fast, wire, _ = servers(view, fast=True)
    api, nope = b"http.api.prod.shop.ams.glimpse.test", b"nope.web.prod.shop.ams.glimpse.test"

    def ask(name):
        return decode(exchange(fast, wire, query_bytes(name, dns.A)))

    for name in (WEB, api, nope):
        ask(name)
    misses = factory.stats.fast_misses
    view.set_job("ams", "shop", "prod", "web", [instance("10.7.7.7")], ports=("http",))
    assert [a.payload.dottedQuad() for a in ask(WEB).answers] == ["10.7.7.7"]
    negative = ask(nope)
    assert negative.rCode == dns.ENAME and negative.authority[0].payload.serial == view.serial
    assert factory.stats.fast_misses == misses + 2
    assert [a.payload.dottedQuad() for a in ask(api).answers] == ["10.6.6.6"]
    assert factory.stats.fast_misses == misses + 2  # from the cache


def test_fast_path_steps_aside_while_a_watch_fails():
    """
    While a watch is failing, the cache is emptied and queries go through
    twisted.names (which applies max-stale); after recovery hits resume.
    """
    view = demo_view()
    factory, fast, wire, clock = servers(view, fast=True)
    data = query_bytes(WEB)
    exchange(fast, wire, data)
    view.failing = True
    clock.advance(1)
    view.problems["ams"] = "older than max-stale"
    assert decode(exchange(fast, wire, data)).rCode == dns.ESERVER
    fast.flush_stats()
    assert factory.stats.fast_hits == 0
    view.failing = False
    del view.problems["ams"]
    clock.advance(1)
    exchange(fast, wire, data)
    exchange(fast, wire, data)
    fast.flush_stats()
    assert factory.stats.fast_hits == 1


def test_hits_keep_the_job_watched():
    """
    Jobs answered from the cache are touched at the next tick, so their
    health watch is not dropped as idle.
    """
    view = demo_view()
    _factory, fast, wire, clock = servers(view, fast=True)
    for _ in range(3):
        exchange(fast, wire, query_bytes(WEB))
    clock.advance(1)
    assert view.touched == [("ams", "shop--prod--web")]


def test_the_cache_is_bounded():
    """
    A flood of made-up names cannot grow the cache past its bound.
    """
    view = demo_view()
    _factory, fast, wire, _clock = servers(view, fast=True, max_entries=50)
    for i in range(500):
        exchange(fast, wire, query_bytes(b"n%d.ams.glimpse.test" % i))
    assert fast.cache_size() <= 50


@pytest.mark.parametrize("count", [2, 40, 1000])
def test_tcp_fast_path_answers_byte_for_byte_like_twisted_names(count):
    """
    Over TCP every query of the corpus gets the same bytes from the fast
    path's pre-encoded answers (a miss, then hits by name and by exact
    bytes, in the order the ID picks) as from twisted.names alone; with
    1,000 instances too, whose SRV answers go without their additional
    records to fit 65,535 bytes.
    """
    view = demo_view(count)
    slow, _, _, _ = stream_factory(view, fast=False)
    fast, udp, _, _ = stream_factory(view, fast=True)
    (slow_conn, slow_wire), (fast_conn, fast_wire) = connect(slow), connect(fast)
    for data in corpus():
        expected = exchange_stream(slow_conn, slow_wire, data)
        for _ in range(3):
            assert exchange_stream(fast_conn, fast_wire, data) == expected, decode(expected)
    udp.flush_stats()
    assert udp.stats.fast_hits > 1000


def test_tcp_answers_a_whole_corpus_sent_at_once_like_twisted_names():
    """
    The corpus pipelined in one segment (twice: misses, then hits) gets one
    answer per query, each the bytes twisted.names gives it.
    """
    view = demo_view(40)
    slow, _, _, _ = stream_factory(view, fast=False)
    fast, _, _, _ = stream_factory(view, fast=True)
    (slow_conn, slow_wire), (fast_conn, fast_wire) = connect(slow), connect(fast)
    queries = list(corpus())
    expected = [exchange_stream(slow_conn, slow_wire, data) for data in queries]
    for _ in range(2):
        fast_wire.clear()
        fast_conn.dataReceived(framed(*queries))
        assert unframed(fast_wire.value()) == expected


def test_answers_kept_over_one_transport_serve_the_other_alike():
    """
    A name first asked over UDP is answered over TCP from the same kept
    answer (a hit), and the reverse; each answer the bytes twisted.names
    gives on that transport.
    """
    view = demo_view(40)
    _, slow_udp, slow_udp_wire, _ = servers(view)
    slow_tcp, _, _, _ = stream_factory(view, fast=False)
    slow_conn, slow_tcp_wire = connect(slow_tcp)
    for first in ("udp", "tcp"):
        fast_tcp, udp, udp_wire, _ = stream_factory(view, fast=True)
        conn, tcp_wire = connect(fast_tcp)
        asks = {"udp": (exchange, udp, udp_wire), "tcp": (exchange_stream, conn, tcp_wire)}
        slow = {"udp": (exchange, slow_udp, slow_udp_wire),
                "tcp": (exchange_stream, slow_conn, slow_tcp_wire)}
        second = "tcp" if first == "udp" else "udp"
        for data in corpus():
            call, proto, wire = asks[first]
            reference, slow_proto, slow_wire = slow[first]
            assert call(proto, wire, data) == reference(slow_proto, slow_wire, data)
        misses = udp.stats.fast_misses
        for data in corpus():
            call, proto, wire = asks[second]
            reference, slow_proto, slow_wire = slow[second]
            assert call(proto, wire, data) == reference(slow_proto, slow_wire, data)
        # Only the answers not kept (refused, errors) and the orders of
        # large answers not asked for yet go through twisted.names again.
        assert udp.stats.fast_misses - misses < misses
