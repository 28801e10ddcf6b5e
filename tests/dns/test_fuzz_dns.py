"""
Random and mutated packets through both DNS paths: nothing crashes, both
paths answer each packet alike, and normal queries keep being answered.
"""

import contextlib
import random

import pytest
from twisted.logger import Logger
from twisted.names import dns

from glimpse.testing import mutate_packet

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

SEEDS = [query_bytes(name, qtype, edns=edns) for name in (
    b"http.web.prod.shop.ams.glimpse.test", b"glimpse.test", b"0a000001.addr.ams.glimpse.test",
    b"example.com") for qtype in (dns.SRV, dns.A, dns.ALL_RECORDS) for edns in (None, 1232)]


@pytest.mark.parametrize(("through_socket", "count"), [(False, 20000), (True, 5000)])
def test_mutated_packets_never_crash_and_paths_agree(through_socket, count):
    """
    Mutated packets (seeded, so a failure reproduces), 20,000 handed to the
    fast path's read loop and 5,000 through a real socket (its batched
    reads): no handler error is logged, the fast path answers each one like
    twisted.names (or, like it, not at all), and a normal query after every
    500 is answered.
    """
    rng = random.Random(20261125 + through_socket)
    errors = []
    view = demo_view()
    _, slow, slow_wire, _ = servers(view)
    with contextlib.ExitStack() as stack:
        if through_socket:
            pair = stack.enter_context(SocketPair())
            factory, fast, _, _ = servers(view, fast=True, transport=pair)

            def ask(data, expected=True):
                return exchange_socket(fast, pair, data, wait=expected)
        else:
            factory, fast, wire, _ = servers(view, fast=True)

            def ask(data, expected=True):
                return exchange(fast, wire, data)

        for proto in (slow, fast):
            proto.log = Logger(observer=errors.append)
        normal = query_bytes(b"http.web.prod.shop.ams.glimpse.test", dns.A)
        for i in range(count):
            data = mutate_packet(rng, rng.choice(SEEDS))
            expected = exchange(slow, slow_wire, data)
            assert ask(data, expected is not None) == expected, data
            if i % 500 == 0:
                assert len(decode(ask(normal)).answers) == 2
    assert [e["log_failure"].getTraceback() for e in errors] == []
    assert factory.stats.total() > count // 2


def test_mutated_messages_over_tcp_never_crash_and_paths_agree():
    """
    5,000 mutated messages over TCP: no handler error is logged, the fast
    path answers each like twisted.names (or, like it, closes the
    connection on a message shorter than a header), and a normal query
    after every 500 is answered.
    """
    rng = random.Random(20261207)
    errors = []
    view = demo_view()
    slow_tcp, _, _, _ = stream_factory(view, fast=False)
    fast_tcp, udp, _, _ = stream_factory(view)
    slow, fast = connect(slow_tcp), connect(fast_tcp)
    for connection, _wire in (slow, fast):
        connection.log = Logger(observer=errors.append)
    normal = query_bytes(b"http.web.prod.shop.ams.glimpse.test", dns.A)
    for i in range(5000):
        data = mutate_packet(rng, rng.choice(SEEDS))
        assert exchange_stream(*fast, data) == exchange_stream(*slow, data), data
        assert fast[1].disconnecting == slow[1].disconnecting
        if fast[1].disconnecting:
            slow, fast = connect(slow_tcp), connect(fast_tcp)
            for connection, _wire in (slow, fast):
                connection.log = Logger(observer=errors.append)
        if i % 500 == 0:
            assert len(decode(exchange_stream(*fast, normal)).answers) == 2
    assert [e["log_failure"].getTraceback() for e in errors] == []
    udp.flush_stats()
    assert udp.stats.total() > 2500
