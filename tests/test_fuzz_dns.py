"""
Random and mutated packets through both DNS paths: nothing crashes, both
paths answer each packet alike, and normal queries keep being answered.
"""

import random

from twisted.logger import Logger
from twisted.names import dns

from dns_stub import SocketPair, decode, demo_view, exchange, exchange_socket, query_bytes, servers
from glimpse.testing import mutate_packet

SEEDS = [query_bytes(name, qtype, edns=edns) for name in (
    b"http.web.prod.shop.ams.glimpse.test", b"glimpse.test", b"0a000001.addr.ams.glimpse.test",
    b"example.com") for qtype in (dns.SRV, dns.A, dns.ALL_RECORDS) for edns in (None, 1232)]


def test_mutated_packets_never_crash_and_paths_agree():
    """
    20,000 mutated packets (seeded, so a failure reproduces): no handler
    error is logged, the fast path answers each one like twisted.names, and
    a normal query after every 500 is answered.
    """
    rng = random.Random(20261125)
    errors = []
    view = demo_view()
    _, slow, slow_wire, _ = servers(view)
    factory, fast, fast_wire, _ = servers(view, fast=True)
    for proto in (slow, fast):
        proto.log = Logger(observer=errors.append)
    normal = query_bytes(b"http.web.prod.shop.ams.glimpse.test", dns.A)
    for i in range(20000):
        data = mutate_packet(rng, rng.choice(SEEDS))
        expected = exchange(slow, slow_wire, data)
        assert exchange(fast, fast_wire, data) == expected, data
        if i % 500 == 0:
            assert len(decode(exchange(fast, fast_wire, normal)).answers) == 2
    assert [e["log_failure"].getTraceback() for e in errors] == []
    assert factory.stats.total() > 10000


def test_mutated_packets_read_from_a_socket_never_crash_and_paths_agree():
    """
    The same through a real socket and the batched read loop: 5,000
    mutated packets, each answered like twisted.names answers it (or, like
    there, not at all), no handler error, normal queries still answered.
    """
    rng = random.Random(20261126)
    errors = []
    view = demo_view()
    _, slow, slow_wire, _ = servers(view)
    with SocketPair() as pair:
        factory, fast, _, _ = servers(view, fast=True, transport=pair)
        for proto in (slow, fast):
            proto.log = Logger(observer=errors.append)
        normal = query_bytes(b"http.web.prod.shop.ams.glimpse.test", dns.A)
        for i in range(5000):
            data = mutate_packet(rng, rng.choice(SEEDS))
            expected = exchange(slow, slow_wire, data)
            assert exchange_socket(fast, pair, data, wait=expected is not None) == expected, data
            if i % 500 == 0:
                assert len(decode(exchange_socket(fast, pair, normal)).answers) == 2
    assert [e["log_failure"].getTraceback() for e in errors] == []
