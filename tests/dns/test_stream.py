"""
DNS over TCP (RFC 7766) on an in-memory transport and a clock: pipelined
and split messages, malformed length prefixes, a slow reader, queries
waiting for a lookup, the cap on connections and the idle timeout.  The
same behaviours over real sockets: ``test_tcp_sockets.py``.
"""

import random

from twisted.internet.defer import Deferred
from twisted.logger import LogLevel, capturedLogs
from twisted.names import dns

from glimpse.dns.stream import MAX_PENDING

from dns_stub import (
    StubView,
    connect,
    decode,
    demo_view,
    exchange_stream,
    framed,
    instance,
    query_bytes,
    stream_factory,
    unframed,
)

WEB = b"http.web.prod.shop.ams.glimpse.test"


def queries(count):
    """
    ``count`` queries with IDs 0 to count - 1, of several names and types.
    """
    names = [WEB, b"admin.web.prod.shop.ams.glimpse.test", b"nope.web.prod.shop.ams.glimpse.test",
             b"glimpse.test"]
    types = [dns.SRV, dns.A, dns.SOA]
    return [query_bytes(names[i % len(names)], types[i % len(types)], id=i, edns=1232)
            for i in range(count)]


def test_every_message_is_answered_however_the_bytes_are_split():
    """
    Messages split anywhere across segments (a byte at a time, or several
    in one segment and a part of the next) are each answered once, in
    order, as when sent one by one.
    """
    sent = queries(60)
    tcp, _, _, _ = stream_factory(demo_view())
    reference, reference_wire = connect(tcp)
    expected = [exchange_stream(reference, reference_wire, data) for data in sent]
    stream = framed(*sent)
    rng = random.Random(7)
    for chunks in ([1] * len(stream), [rng.randint(1, 90) for _ in range(len(stream))]):
        connection, wire = connect(tcp)
        at = 0
        for size in chunks:
            connection.dataReceived(stream[at:at + size])
            at += size
            if at >= len(stream):
                break
        assert unframed(wire.value()) == expected


def test_a_large_message_trickling_in_is_answered_once_whole():
    """
    A 60 kB query (an EDNS option of 60,000 bytes) that comes a few bytes
    at a time, followed by a small one, gets both answers, once each.
    """
    message = dns.Message(id=11)
    message.queries = [dns.Query(WEB, dns.A)]
    message.additional = [dns._OPTHeader(options=[dns._OPTVariableOption(65001, b"x" * 60000)])]
    stream = framed(message.toStr(), query_bytes(WEB, dns.A, id=12))
    tcp, _, _, _ = stream_factory(demo_view())
    connection, wire = connect(tcp)
    for at in range(0, len(stream), 7):
        connection.dataReceived(stream[at:at + 7])
    answers = [decode(m) for m in unframed(wire.value())]
    assert [(a.id, a.rCode, len(a.answers)) for a in answers] == [(11, 0, 2), (12, 0, 2)]


def test_pipelined_queries_are_all_answered_with_their_ids():
    """
    500 queries in one segment get 500 answers, one per ID.
    """
    tcp, _, _, _ = stream_factory(demo_view())
    for _ in range(2):  # misses, then hits
        connection, wire = connect(tcp)
        connection.dataReceived(framed(*queries(500)))
        answers = [decode(m) for m in unframed(wire.value())]
        assert sorted(a.id for a in answers) == list(range(500))


def test_a_message_shorter_than_a_header_closes_the_connection():
    """
    A length prefix of 0, 1 or 11 (no room for a DNS header) gets no answer
    and the connection is closed; the queries before it in the segment are
    answered; nothing is logged as an error.
    """
    for length in (0, 1, 11):
        tcp, _, _, _ = stream_factory(demo_view())
        connection, wire = connect(tcp)
        good = query_bytes(WEB, dns.A, id=5)
        with capturedLogs() as events:
            connection.dataReceived(framed(good) + framed(b"\x01" * length) + framed(good))
        assert [decode(m).id for m in unframed(wire.value())] == [5]
        assert wire.disconnecting
        assert tcp.open_connections == 0
        assert tcp.controller.stats.dropped == 1
        assert [e for e in events if e["log_level"] >= LogLevel.error] == []


def test_a_message_that_does_not_decode_gets_formerr_and_the_next_one_an_answer():
    """
    A whole message that is not DNS (but has a header) gets FORMERR with
    its ID, and the connection goes on.
    """
    tcp, _, _, _ = stream_factory(demo_view())
    connection, wire = connect(tcp)
    junk = b"\x12\x34" + b"\x00" * 4 + b"\x00\x05" + b"\xff" * 20
    connection.dataReceived(framed(junk, query_bytes(WEB, dns.A, id=6)))
    first, second = (decode(m) for m in unframed(wire.value()))
    assert (first.id, first.rCode) == (0x1234, dns.EFORMAT)
    assert (second.id, second.rCode, len(second.answers)) == (6, dns.OK, 2)
    assert not wire.disconnecting


def test_a_slow_reader_is_not_answered_until_its_output_drains():
    """
    While the transport's unsent output is over its bound (it pauses the
    connection), nothing more is answered nor read; once it drains, the
    queries left are answered and reading resumes.
    """
    tcp, _, _, _ = stream_factory(demo_view())
    connection, wire = connect(tcp)
    connection.pauseProducing()  # what the transport does when its buffer is full
    assert wire.producerState == "paused"
    connection.dataReceived(framed(*queries(20)))
    assert wire.value() == b""
    connection.resumeProducing()
    assert sorted(decode(m).id for m in unframed(wire.value())) == list(range(20))
    assert wire.producerState == "producing"


def test_output_that_does_not_drain_cuts_the_connection_after_the_timeout():
    """
    A client that does not read its answers for the idle timeout is cut
    off (its unsent output dropped); one that reads in time is not.
    """
    tcp, _, _, clock = stream_factory(demo_view(), idle_timeout=10)
    stuck, stuck_wire = connect(tcp)
    late, late_wire = connect(tcp)
    stuck.pauseProducing()
    late.pauseProducing()
    clock.advance(5)
    late.resumeProducing()
    clock.advance(6)
    assert stuck_wire.disconnected and tcp.counts.stuck == 1
    assert not late_wire.disconnected and not late_wire.disconnecting


class WaitingView(StubView):
    """
    A view whose every lookup waits (a job's first fetch) until the test
    fires it.
    """

    def __init__(self):
        super().__init__()
        self.waiting = []

    def instances(self, zone, service):
        d = Deferred()
        self.waiting.append(d)
        return d


def test_queries_waiting_for_a_lookup_are_bounded_per_connection():
    """
    At most MAX_PENDING queries of a connection wait for a lookup: past
    them the connection is not read, and once they are answered the rest
    are, every one.
    """
    view = WaitingView()
    view.set_job("ams", "shop", "prod", "web", [instance("10.0.0.1")])
    tcp, _, _, _ = stream_factory(view)
    connection, wire = connect(tcp)
    count = MAX_PENDING + 10
    connection.dataReceived(framed(*(query_bytes(WEB, dns.A, id=i) for i in range(count))))
    assert len(view.waiting) == MAX_PENDING
    assert wire.producerState == "paused"
    while view.waiting:
        view.waiting.pop(0).callback((instance("10.0.0.1"),))
    assert sorted(decode(m).id for m in unframed(wire.value())) == list(range(count))
    assert wire.producerState == "producing"


def test_at_the_cap_the_longest_idle_connection_makes_room():
    """
    With the cap full of idle connections, a new client is answered: the
    connection idle longest (not the oldest: one that asked recently is
    kept) is closed to make room.
    """
    tcp, _, _, clock = stream_factory(demo_view(), max_conns=3)
    first, second, third = (connect(tcp) for _ in range(3))
    clock.advance(1)
    exchange_stream(*first, query_bytes(WEB, dns.A))  # first is now the latest active
    newcomer = connect(tcp)
    assert second[1].disconnecting
    assert not first[1].disconnecting and not third[1].disconnecting
    assert decode(exchange_stream(*newcomer, query_bytes(WEB, dns.A))).answers
    connect(tcp)
    assert third[1].disconnecting and not first[1].disconnecting
    assert tcp.open_connections == 3
    assert (tcp.counts.evicted, tcp.counts.refused) == (2, 0)


def test_at_a_cap_of_busy_connections_a_new_one_is_refused_and_logged_once():
    """
    When every connection is busy (its client not reading), a new one is
    refused (closed at once) rather than any answer being lost, and the log
    says so once, not per connection.
    """
    tcp, _, _, _ = stream_factory(demo_view(), max_conns=2)
    for _ in range(2):
        connection, _wire = connect(tcp)
        connection.pauseProducing()
    with capturedLogs() as events:
        assert tcp.buildProtocol(None) is None
        assert tcp.buildProtocol(None) is None
    assert tcp.counts.refused == 2
    assert len([e for e in events if "--dns-tcp-max-conns" in e["log_format"]]) == 1


def test_idle_connections_close_and_trickling_bytes_do_not_keep_them_open():
    """
    After the idle timeout a connection that sent nothing is closed, and so
    is one that trickled a byte now and then without making a query; one
    that kept asking stays open.
    """
    tcp, _, _, clock = stream_factory(demo_view(), idle_timeout=10)
    silent, trickling, asking = connect(tcp), connect(tcp), connect(tcp)
    data = framed(query_bytes(WEB, dns.A))
    for second in range(12):
        trickling[0].dataReceived(data[second:second + 1])
        exchange_stream(*asking, query_bytes(WEB, dns.A, id=second))
        clock.advance(1)
    assert silent[1].disconnecting and trickling[1].disconnecting
    assert not asking[1].disconnecting
    assert tcp.counts.timed_out == 2


def test_an_answer_for_a_connection_gone_is_dropped():
    """
    A lookup that finishes after its client left sends nothing and breaks
    nothing.
    """
    view = WaitingView()
    view.set_job("ams", "shop", "prod", "web", [instance("10.0.0.1")])
    tcp, _, _, _ = stream_factory(view)
    connection, wire = connect(tcp)
    connection.dataReceived(framed(query_bytes(WEB, dns.A)))
    connection.connectionLost(None)
    with capturedLogs() as events:
        view.waiting.pop().callback((instance("10.0.0.1"),))
    assert wire.value() == b""
    assert [e for e in events if e["log_level"] >= LogLevel.error] == []
    assert tcp.open_connections == 0
