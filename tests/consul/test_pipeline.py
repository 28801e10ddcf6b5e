"""
The pipelined reader (:mod:`glimpse.consul._pipeline`): answers parsed
however the bytes arrive, reads answered in order on one connection, and a
connection that stalls or breaks fails the reads under way, never hangs them.
"""

import pytest
from twisted.internet.defer import succeed
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport

from glimpse.consul import ConsulUnavailable
from glimpse.consul._budget import ConnectionBudget, Use
from glimpse.consul._pipeline import (
    AnswerParser,
    BadAnswer,
    PipelinedReader,
    PipelinePool,
    RawAnswer,
)

from support import failure_of, result_of

SIZED = (b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nX-Consul-Index: 42\r\n"
         b"Content-Length: 7\r\n\r\n[1,2,3]")
CHUNKED = (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nX-Consul-Index: 43\r\n\r\n"
           b"4;ext=1\r\n[{\"a\r\n4\r\n\":1}\r\n1\r\n]\r\n0\r\nX-Trailer: t\r\n\r\n")
EMPTY = b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n"


def test_answers_are_the_same_however_the_bytes_are_cut():
    """
    Three answers (sized, chunked with an extension and a trailer, empty)
    come out whole and in order, whether they arrive at once or a byte at
    a time.
    """
    stream = SIZED + CHUNKED + EMPTY
    expected = [RawAnswer(200, {b"content-type": b"application/json", b"x-consul-index": b"42",
                                b"content-length": b"7"}, b"[1,2,3]"),
                RawAnswer(200, {b"transfer-encoding": b"chunked", b"x-consul-index": b"43"},
                          b'[{"a":1}]'),
                RawAnswer(404, {b"content-length": b"0"}, b"")]
    assert AnswerParser().feed(stream) == expected
    parser, answers = AnswerParser(), []
    for i in range(len(stream)):
        answers += parser.feed(stream[i:i + 1])
    assert answers == expected


@pytest.mark.parametrize("garbage", [
    b"SSH-2.0-OpenSSH\r\n\r\n",
    b"HTTP/1.1 200 OK\r\nno colon here\r\n\r\n",
    b"HTTP/1.1 200 OK\r\nContent-Length: lots\r\n\r\n",
    b"HTTP/1.1 200 OK\r\nContent-Length: 99999999999\r\n\r\n",
    b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
    b"HTTP/1.1 200 OK\r\n" + b"X: " + b"y" * 70000,
])
def test_what_is_not_an_answer_is_refused(garbage):
    """
    Bytes that are not an HTTP answer (or are over the limits) are an
    error, never a hang or unbounded memory.
    """
    with pytest.raises(BadAnswer):
        AnswerParser().feed(garbage)


class Endpoint:
    """
    Connects each protocol to a fresh ``StringTransport``; ``refuse`` makes
    the next connection fail.
    """

    def __init__(self):
        self.transports = []
        self.refuse = False

    def connect(self, factory):
        if self.refuse:
            from twisted.internet.defer import fail
            return fail(ConnectionRefusedError("refused"))
        protocol = factory.buildProtocol(None)
        transport = StringTransport()
        protocol.makeConnection(transport)
        self.transports.append((protocol, transport))
        return succeed(protocol)


def reader(depth=2, timeout=5.0):
    clock, endpoint, changes = Clock(), Endpoint(), []
    budget = ConnectionBudget(total=1, reserved=0)

    def acquire():
        changes.append(1)
        return budget.acquire(Use.CONTROL)

    def release():
        changes.append(-1)
        budget.release(Use.CONTROL)

    r = PipelinedReader(endpoint, clock, "127.0.0.1:8500", {"X-Consul-Token": "secret"},
                        depth=depth, timeout=timeout, acquire=acquire, release=release)
    return r, clock, endpoint, changes


def test_reads_share_one_connection_and_are_answered_in_order():
    """
    Three reads go over one connection, at most ``depth`` written at a
    time, each with the token; each gets its own answer.
    """
    r, clock, endpoint, changes = reader(depth=2)
    reads = [r.get(f"/v1/health/service/s{i}?cached") for i in range(3)]
    assert endpoint.transports == []  # written once this turn of the reactor ends
    clock.advance(0)
    (protocol, transport), = endpoint.transports
    written = transport.value()
    assert written.count(b"GET ") == 2
    assert written.startswith(b"GET /v1/health/service/s0?cached HTTP/1.1\r\nHost: 127.0.0.1:8500")
    assert written.count(b"X-Consul-Token: secret\r\n") == 2
    protocol.dataReceived(SIZED + CHUNKED)
    assert transport.value().count(b"GET ") == 3
    protocol.dataReceived(EMPTY)
    assert [result_of(d).body for d in reads] == [b"[1,2,3]", b'[{"a":1}]', b""]
    assert changes == [1] and r.in_flight == 0


def test_a_stalled_answer_fails_the_reads_under_way_and_the_next_read_reconnects():
    """
    When the agent does not answer within the timeout, the connection is
    closed and every read under way fails as unavailable (never hangs); the
    next read opens a new connection.
    """
    r, clock, endpoint, changes = reader(timeout=5.0)
    first, second = r.get("/v1/a"), r.get("/v1/b")
    clock.advance(0)
    clock.advance(5.0)
    for d in (first, second):
        error = failure_of(d)
        assert isinstance(error, ConsulUnavailable) and "no answer within 5s" in str(error)
    third = r.get("/v1/c")
    clock.advance(0)
    assert len(endpoint.transports) == 2
    protocol, _ = endpoint.transports[1]
    protocol.dataReceived(SIZED)
    assert result_of(third).status == 200
    assert changes == [1, -1, 1]


def test_a_refused_connection_fails_the_reads_and_close_fails_the_rest():
    """
    An agent that cannot be reached fails the reads at once; after
    close(), reads fail without connecting.
    """
    r, clock, endpoint, changes = reader()
    endpoint.refuse = True
    refused = r.get("/v1/a")
    clock.advance(0)
    error = failure_of(refused)
    assert isinstance(error, ConsulUnavailable) and "cannot connect" in str(error)
    assert changes == [1, -1]  # the slot taken for the attempt is given back
    endpoint.refuse = False
    pending = r.get("/v1/b")
    clock.advance(0)
    r.close()
    assert isinstance(failure_of(pending), ConsulUnavailable)
    assert isinstance(failure_of(r.get("/v1/c")), ConsulUnavailable)
    assert len(endpoint.transports) == 1


def test_closing_while_waiting_for_a_connection_takes_no_slot_later():
    """
    A reader closed while the budget has no connection for it gives up
    its place: the slot freed later is not taken by it.
    """
    budget = ConnectionBudget(total=1, reserved=0)
    budget.acquire(Use.CONTROL)  # someone else holds the only slot
    endpoint, clock = Endpoint(), Clock()
    r = PipelinedReader(endpoint, clock, "c", acquire=lambda: budget.acquire(Use.CONTROL),
                        release=lambda: budget.release(Use.CONTROL))
    pending = r.get("/v1/a")
    clock.advance(0)
    assert budget.waiting == 1
    r.close()
    assert isinstance(failure_of(pending), ConsulUnavailable)
    budget.release(Use.CONTROL)
    assert budget.busy == 0 and budget.waiting == 0 and endpoint.transports == []


def test_a_burst_opens_more_connections_and_they_close_when_idle():
    """
    Reads past what one connection holds go on a second one (the agent
    serves each connection's reads one after another), up to the pool's
    size; once the burst is answered, idle connections close and give
    their budget slot back.
    """
    clock, endpoint = Clock(), Endpoint()
    budget = ConnectionBudget(total=8, reserved=0)
    pool = PipelinePool(lambda: PipelinedReader(
        endpoint, clock, "c", acquire=lambda: budget.acquire(Use.CONTROL),
        release=lambda: budget.release(Use.CONTROL), idle_timeout=5.0), size=2, depth=2)
    reads = [pool.get(f"/v1/r{i}") for i in range(6)]
    clock.advance(0)
    assert len(endpoint.transports) == 2 and budget.busy == 2
    assert pool.in_flight == 6
    for _ in range(3):
        for protocol, _ in endpoint.transports:
            if protocol.transport.value().count(b"GET ") > 0:
                protocol.dataReceived(EMPTY)
    assert all(result_of(d).status == 404 for d in reads)
    clock.advance(5.0)
    assert budget.busy == 0
    again = pool.get("/v1/again")
    clock.advance(0)
    assert budget.busy == 1 and len(endpoint.transports) == 3
    endpoint.transports[-1][0].dataReceived(EMPTY)
    assert result_of(again).status == 404
    pool.close()
