"""
Rotation (issue #15, item 5): direct clients get the SRV and A records of
an address in turning orders, picked by the query's ID, so that they do not
all try the same instance first; the same query gets the same bytes on
every path (the differential tests in ``test_fastpath.py`` send the corpus
with many IDs).
"""

import pytest
from twisted.names import dns

from glimpse.dns.rotation import order_of, orders, rotated

from dns_stub import (
    connect,
    decode,
    demo_view,
    exchange,
    exchange_stream,
    query_bytes,
    servers,
    stream_factory,
)

WEB = b"http.web.prod.shop.ams.glimpse.test"


def srv_records(count):
    """
    SRV answers and their targets' A records, as the resolver gives them.
    """
    answers, additional = [], []
    for i in range(count):
        target = f"{i:08x}.addr.ams.glimpse.test"
        answers.append(dns.RRHeader(WEB, dns.SRV, payload=dns.Record_SRV(1, 1, 8080 + i, target)))
        additional.append(dns.RRHeader(target, dns.A, payload=dns.Record_A(f"10.0.0.{i + 1}")))
    return answers, additional


def firsts(answers):
    """
    What tells the records apart: the SRV records' targets (or, for the
    test's own records, ports), the A records' addresses.
    """
    return [(a.payload.target.name, a.payload.port) if a.type == dns.SRV
            else a.payload.dottedQuad() for a in answers]


def test_an_answer_has_as_many_orders_as_records_up_to_the_most():
    """
    An answer of n records has min(n, rotations) orders (at least one); the
    ID picks one.
    """
    assert [orders(n, 16) for n in (0, 1, 2, 16, 40)] == [1, 1, 2, 16, 16]
    assert orders(40, 1) == 1
    assert [order_of(query_id, 3, 16) for query_id in (0, 1, 2, 3, 65535)] == [0, 1, 2, 0, 0]


def test_srv_targets_turn_with_their_records():
    """
    Order k starts at record k * n // r and goes round; the additional
    section starts at the first record's target, so each address keeps its
    place next to its SRV record's.
    """
    answers, additional = srv_records(5)
    for k in range(5):
        turned, extra = rotated(answers, additional, k, 5)
        assert [port for _, port in firsts(turned)] == [8080 + (k + i) % 5 for i in range(5)]
        assert [r.name for r in extra] == [turned_one.payload.target for turned_one in turned]
    answers, additional = srv_records(40)
    starts = {firsts(rotated(answers, additional, k, 16)[0])[0][1] for k in range(16)}
    assert starts == {8080 + k * 40 // 16 for k in range(16)}


def ask_ids(ask, qtype, ids, **options):
    """
    ``{query ID: the answer's records' ports or addresses}``.
    """
    return {i: firsts(decode(ask(query_bytes(WEB, qtype, id=i, **options))).answers)
            for i in ids}


def paths(view, rotations=16):
    """
    Every path an answer takes: twisted.names and the fast path, UDP and
    TCP.
    """
    _, slow, slow_wire, _ = servers(view, rotations=rotations)
    _, fast, fast_wire, _ = servers(view, fast=True, rotations=rotations)
    slow_tcp, _, _, _ = stream_factory(view, fast=False, rotations=rotations)
    fast_tcp, _, _, _ = stream_factory(view, fast=True, rotations=rotations)
    slow_conn, fast_conn = connect(slow_tcp), connect(fast_tcp)
    return {"udp": lambda data: exchange(slow, slow_wire, data),
            "fast udp": lambda data: exchange(fast, fast_wire, data),
            "tcp": lambda data: exchange_stream(*slow_conn, data),
            "fast tcp": lambda data: exchange_stream(*fast_conn, data)}


@pytest.mark.parametrize("path", ["udp", "fast udp", "tcp", "fast tcp"])
@pytest.mark.parametrize("qtype", [dns.SRV, dns.A])
def test_each_instance_comes_first_for_some_ids(path, qtype):
    """
    Asked with IDs 0 to 9, an address of 5 instances comes in 5 orders,
    each instance first twice, every order a turn of the sorted one: on
    every path, hits and misses alike (each ID asked twice).
    """
    ask = paths(demo_view(5))[path]
    for _ in range(2):
        seen = ask_ids(ask, qtype, range(10), edns=1232)
        assert len({tuple(order) for order in seen.values()}) == 5
        ordered = sorted(seen[0])
        for i, order in seen.items():
            start = ordered.index(order[0])
            assert order == ordered[start:] + ordered[:start]
            assert seen[(i + 5) % 10] == order


@pytest.mark.parametrize("path", ["udp", "fast udp", "tcp", "fast tcp"])
def test_with_one_rotation_every_answer_keeps_the_sorted_order(path):
    """
    --dns-rotations=1 turns rotation off: every ID gets the same order.
    """
    ask = paths(demo_view(5), rotations=1)[path]
    seen = ask_ids(ask, dns.A, range(8), edns=1232)
    assert len({tuple(order) for order in seen.values()}) == 1


def test_large_answers_over_tcp_turn_too_and_are_kept_as_asked():
    """
    Over TCP an answer of 1,000 instances turns in 16 orders; each order is
    encoded the first time an ID asks for it, then comes from the fast
    path.
    """
    tcp, udp, _, _ = stream_factory(demo_view(1000))
    conn = connect(tcp)

    def ask(data):
        return exchange_stream(*conn, data)

    first = ask_ids(ask, dns.SRV, range(32))
    assert len({order[0] for order in first.values()}) == 16
    misses = udp.stats.fast_misses
    assert misses == 16
    assert ask_ids(ask, dns.SRV, range(32)) == first
    assert udp.stats.fast_misses == misses


def test_an_answer_that_fits_udp_keeps_every_order_at_its_first_miss():
    """
    The orders of an answer small enough for UDP are encoded together at
    its first miss: every other ID is a hit.
    """
    factory, fast, wire, _ = servers(demo_view(5), fast=True)
    ask_ids(lambda data: exchange(fast, wire, data), dns.SRV, range(20), edns=1232)
    fast.flush_stats()
    assert (factory.stats.fast_misses, factory.stats.fast_hits) == (1, 19)
