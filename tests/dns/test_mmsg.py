"""
Batched datagram I/O (recvmmsg/sendmmsg) on real loopback sockets: every
datagram is answered to its own sender, the rest reach the slow path with
the sender's address, and nothing a client sends is read past its slot.
"""

import os
import select
import socket
import struct
import threading

import attrs
import pytest
from twisted.internet.testing import MemoryReactorClock
from twisted.logger import Logger

from glimpse.dns import mmsg
from glimpse.dns.udpport import FastUDPServer

from support import wait_until

pytestmark = pytest.mark.skipif(not mmsg.available, reason="no recvmmsg on this system")


def _socket(family=socket.AF_INET, host="127.0.0.1"):
    sock = socket.socket(family, socket.SOCK_DGRAM)
    sock.bind((host, 0))
    sock.setblocking(False)
    return sock


def _wait_readable(sock):
    assert select.select([sock], [], [], 5)[0], "nothing arrived"


def _replies(sock, count):
    """
    The next ``count`` datagrams ``sock`` receives (waiting for each with a
    deadline), then whatever else is already there.
    """
    got = []
    while len(got) < count:
        _wait_readable(sock)
        got.append(sock.recv(65535))
    while select.select([sock], [], [], 0)[0]:
        got.append(sock.recv(65535))
    return got


def _query(ident, payload):
    """
    A datagram of the shape :obj:`mmsg.BatchSocket.serve` answers: an ID, then
    the key.
    """
    return struct.pack("!H", ident) + payload


@attrs.define
class _Answer:
    """
    What :obj:`mmsg.BatchSocket.serve` reads of an answer (the fast path's
    are :class:`glimpse.dns.kept.ExactAnswer`): its tails (one per order of
    the records) and its hits.
    """

    tails: tuple
    hits: int = 0

    @classmethod
    def of(cls, data):
        return cls((mmsg.tail(data),))


def _answers(*payloads):
    """
    Answers to each payload: its upper-cased self.
    """
    return {p: _Answer.of(p.upper()) for p in payloads}


def _serve_until(batch, count, answers, others):
    """
    Serve until ``count`` datagrams were read (loopback may hand them over a
    little later than they were sent), at most 100 per read; the slow ones
    are appended to ``others`` as ``(data, address)``.
    """
    timings = []
    wait_until(lambda: timings.extend(batch.serve(answers, lambda *a: others.append(a), 100))
               or sum(n for _, n in timings) + len(others) >= count,
               timeout=5, what=f"{count} datagrams")
    return timings


@pytest.fixture
def server():
    sock = _socket()
    yield sock
    sock.close()


def test_each_sender_gets_its_own_answers_and_the_rest_go_to_the_slow_path(server):
    """
    Datagrams from two clients read in one go: the answered ones go back to
    their own sender, with their own ID, and each answer counts a hit; the
    unknown ones reach ``other`` with the sender's address as the socket
    module gives it.
    """
    a, b = _socket(), _socket()
    for i in range(5):
        a.sendto(_query(i, b"alpha"), server.getsockname())
        b.sendto(_query(100 + i, b"beta"), server.getsockname())
    b.sendto(_query(7, b"slow"), server.getsockname())
    b.sendto(_query(8, b"Beta"), server.getsockname())
    answers, others = _answers(b"alpha", b"beta"), []
    timings = _serve_until(mmsg.BatchSocket(server, batch=4), 12, answers, others)
    assert sorted(_replies(a, 5)) == [_query(i, b"ALPHA") for i in range(5)]
    assert sorted(_replies(b, 5)) == [_query(100 + i, b"BETA") for i in range(5)]
    assert others == [(_query(7, b"slow"), b.getsockname()),
                      (_query(8, b"Beta"), b.getsockname())]
    assert answers[b"alpha"].hits == answers[b"beta"].hits == 5
    assert sum(count for _, count in timings) == 10
    assert all(elapsed > 0 for elapsed, _ in timings)
    a.close()
    b.close()


def test_the_id_picks_one_of_several_tails(server):
    """
    An answer with several tails (the orders of its records) sends the one
    its query's ID picks: ``tails[ID % len(tails)]``, the ID read as a
    big-endian number.
    """
    client = _socket()
    ids = [0, 1, 2, 3, 4, 0x0102, 0xFFFF, 0x1234]
    for ident in ids:
        client.sendto(_query(ident, b"turn"), server.getsockname())
    answers = {b"turn": _Answer(tuple(mmsg.tail(b"order%d" % k) for k in range(3)))}
    _serve_until(mmsg.BatchSocket(server, batch=4), len(ids), answers, [])
    assert sorted(_replies(client, len(ids))) == sorted(
        _query(ident, b"order%d" % (ident % 3)) for ident in ids)
    client.close()


def test_an_answer_dropped_while_its_batch_is_served_is_still_sent_whole(server):
    """
    The slow path may empty the answers while a batch is being served (the
    cache is full, or the view changed): the answers already taken from them
    are still sent as they were, not from memory since freed and reused.
    """
    client = _socket()
    for i, key in enumerate([b"one", b"two", b"slow"]):
        client.sendto(_query(i, key), server.getsockname())
    answers = {key: _Answer.of(os.urandom(1000)) for key in [b"one", b"two"]}
    expected = [_query(i, answers[key].tails[0].data) for i, key in enumerate([b"one", b"two"])]
    reused = []

    def other(data, address):
        answers.clear()  # the last references to the answers' bytes
        reused.extend(b"Z" * 1000 for _ in range(100))

    batch = mmsg.BatchSocket(server)

    def served():
        batch.serve(answers, other, 100)
        return reused

    wait_until(served, timeout=5, what="the slow datagram")
    assert sorted(_replies(client, 2)) == sorted(expected)
    client.close()


def test_a_batch_cut_short_by_an_exception_leaves_no_answer_misdirected(server):
    """
    When the slow path raises in the middle of a batch (after an answer was
    moved up past a slow datagram), the next batch's answers still go to
    their own senders, with their own IDs.
    """
    a, b = _socket(), _socket()
    a.sendto(_query(1, b"slow"), server.getsockname())
    b.sendto(_query(2, b"hit"), server.getsockname())
    a.sendto(_query(3, b"raise"), server.getsockname())
    _wait_readable(server)
    batch, answers = mmsg.BatchSocket(server), _answers(b"hit")

    def other(data, address):
        if data.endswith(b"raise"):
            raise RuntimeError("the slow path failed")

    def raised():
        try:
            batch.serve(answers, other, 100)
        except RuntimeError:
            return True
        return False

    wait_until(raised, timeout=5, what="the slow path's exception")
    a.sendto(_query(4, b"hit"), server.getsockname())
    _serve_until(batch, 1, answers, [])
    assert _replies(a, 1) == [_query(4, b"HIT")]
    assert not select.select([b], [], [], 0.2)[0], "b got an answer meant for a"
    a.close()
    b.close()


def test_a_blocking_socket_never_blocks_the_read():
    """
    Even on a socket left in blocking mode, a read returns with what is
    there (one datagram of a batch of 64) instead of waiting for more.
    """
    server, client = _socket(), _socket()
    server.setblocking(True)
    client.sendto(b"one", server.getsockname())
    _wait_readable(server)
    seen = []
    reader = threading.Thread(target=mmsg.BatchSocket(server).serve, daemon=True,
                              args=({}, lambda data, address: seen.append(data), 100))
    reader.start()
    reader.join(5)  # a read that waits for a full batch would still be waiting
    assert not reader.is_alive() and seen == [b"one"]
    server.close()
    client.close()


def test_ipv6_senders_are_answered_and_addressed():
    """
    On an IPv6 socket the answers reach their senders too, and the slow
    path gets the four-field IPv6 address.
    """
    try:
        server, client = _socket(socket.AF_INET6, "::1"), _socket(socket.AF_INET6, "::1")
    except OSError:
        pytest.skip("no IPv6 loopback here")
    client.sendto(_query(1, b"q"), server.getsockname())
    client.sendto(_query(2, b"slow"), server.getsockname())
    others = []
    _serve_until(mmsg.BatchSocket(server), 2, _answers(b"q"), others)
    assert _replies(client, 1) == [_query(1, b"Q")]
    assert [address for _, address in others] == [client.getsockname()]
    server.close()
    client.close()


def test_the_budget_leaves_the_rest_for_the_next_read(server):
    """
    No more than the budget is read at once (the reactor gets its turn in a
    flood); the rest is read next time.
    """
    client = _socket()
    for i in range(10):
        client.sendto(b"%d" % i, server.getsockname())
    _wait_readable(server)
    batch = mmsg.BatchSocket(server, batch=3)
    seen = []
    batch.serve({}, lambda data, address: seen.append((data, address)), budget=4)
    assert 0 < len(seen) <= 4
    _serve_until(batch, 10, {}, seen)
    assert sorted(data for data, _ in seen) == sorted(b"%d" % i for i in range(10))
    client.close()


def test_long_datagrams_are_cut_at_the_slot_and_answers_are_not(server):
    """
    A datagram longer than a slot arrives cut to the slot's size (as
    recvfrom with that size gives it); an answer longer than a slot is sent
    whole (it is sent from where it is, not copied into a slot).
    """
    client = _socket()
    client.sendto(b"x" * 300, server.getsockname())
    client.sendto(_query(3, b"big"), server.getsockname())
    answers, others = {b"big": _Answer.of(b"y" * 200)}, []
    _serve_until(mmsg.BatchSocket(server, size=128), 2, answers, others)
    assert [data for data, _ in others] == [b"x" * 128]
    assert _replies(client, 1) == [_query(3, b"y" * 200)]
    client.close()


def test_the_dns_port_hands_its_socket_to_the_protocol():
    """
    The DNS server's UDP port binds at privileged start (before twistd drops
    privileges), and each time it is readable its protocol reads the socket
    itself; a failing read is logged and does not stop the port; stopping
    closes it.
    """
    class Reader:
        def __init__(self):
            self.reads = []

        def makeConnection(self, transport):
            self.transport = transport

        def doStop(self):
            pass

        def read_datagrams(self, sock, max_size, budget):
            self.reads.append(sock.recvfrom(max_size)[0])

    reactor, reader = MemoryReactorClock(), Reader()
    service = FastUDPServer(0, reader, "127.0.0.1", reactor)
    service.privilegedStartService()
    port = service.port
    service.startService()
    assert service.port is port and port in reactor.readers
    client = _socket()
    client.sendto(b"query", port.socket.getsockname())
    _wait_readable(port.socket)
    port.doRead()
    assert reader.reads == [b"query"]
    # A read that fails is logged, and the port keeps listening.
    errors = []
    port.log = Logger(observer=errors.append)
    reader.read_datagrams = lambda *args: 1 / 0
    port.doRead()
    assert [e["log_failure"].type for e in errors] == [ZeroDivisionError]
    assert port in reactor.readers
    service.stopService()
    reactor.advance(0)
    assert service.port is None and port not in reactor.readers
    assert not hasattr(port, "socket")  # closed
    client.close()
