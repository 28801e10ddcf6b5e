"""
Random and mutated packets through both DNS paths: nothing crashes, both
paths answer each packet alike, and normal queries keep being answered.
"""

import random

from twisted.logger import Logger
from twisted.names import dns

from dns_stub import decode, demo_view, exchange, query_bytes, servers

SEEDS = [query_bytes(name, qtype, edns=edns) for name in (
    b"http.web.prod.shop.ams.glimpse.test", b"glimpse.test", b"0a000001.addr.ams.glimpse.test",
    b"example.com") for qtype in (dns.SRV, dns.A, dns.ALL_RECORDS) for edns in (None, 1232)]


def mutate(rng, data):
    """
    One random mutation: flipped bits, a cut, inserted or overwritten
    bytes, a compression pointer, or fresh random bytes.
    """
    data = bytearray(data)
    kind = rng.randrange(6)
    if kind == 0:
        for _ in range(rng.randint(1, 4)):
            data[rng.randrange(len(data))] ^= 1 << rng.randrange(8)
    elif kind == 1:
        del data[rng.randrange(len(data)):]
    elif kind == 2:
        at = rng.randrange(len(data))
        data[at:at] = bytes(rng.randrange(256) for _ in range(rng.randint(1, 8)))
    elif kind == 3:
        at = rng.randrange(2, min(12, len(data)))
        data[at] = rng.choice((0x00, 0x01, 0x80, 0xFF, 0x28, 0x78))
    elif kind == 4:
        at = rng.randrange(12, len(data))
        data[at:at + 2] = bytes((0xC0 | rng.randrange(64), rng.randrange(256)))
    else:
        data = bytearray(rng.randrange(256) for _ in range(rng.randrange(40)))
    return bytes(data)


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
        data = mutate(rng, rng.choice(SEEDS))
        expected = exchange(slow, slow_wire, data)
        assert exchange(fast, fast_wire, data) == expected, data
        if i % 500 == 0:
            assert len(decode(exchange(fast, fast_wire, normal)).answers) == 2
    assert [e["log_failure"].getTraceback() for e in errors] == []
    assert factory.stats.total() > 10000
