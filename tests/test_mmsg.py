"""
Batched datagram I/O (recvmmsg/sendmmsg) on real loopback sockets: every
datagram is answered to its own sender, the rest reach the slow path with
the sender's address, and nothing a client sends is read past its slot.
"""

import select
import socket
import threading

import pytest
from twisted.internet.testing import MemoryReactorClock
from twisted.logger import Logger

from glimpse import _mmsg
from glimpse._dnsport import FastUDPServer
from support import wait_until

pytestmark = pytest.mark.skipif(not _mmsg.available, reason="no recvmmsg on this system")


def _socket(family=socket.AF_INET, host="127.0.0.1"):
    sock = socket.socket(family, socket.SOCK_DGRAM)
    sock.bind((host, 0))
    sock.setblocking(False)
    return sock


def _wait_readable(sock):
    assert select.select([sock], [], [], 5)[0], "nothing arrived"


def _replies(sock, count):
    """
    The next C{count} datagrams C{sock} receives (waiting for each with a
    deadline), then whatever else is already there.
    """
    got = []
    while len(got) < count:
        _wait_readable(sock)
        got.append(sock.recv(65535))
    while select.select([sock], [], [], 0)[0]:
        got.append(sock.recv(65535))
    return got


def _serve_until(batch, count, answer, other):
    """
    Serve until C{count} datagrams were read (loopback may hand them over a
    little later than they were sent), at most 100 per read.
    """
    seen, timings = [], []

    def answer_and_count(data):
        seen.append(data)
        return answer(data)

    wait_until(lambda: timings.extend(batch.serve(answer_and_count, other, 100))
               or len(seen) >= count, timeout=5, what=f"{count} datagrams")
    return timings


@pytest.fixture
def server():
    sock = _socket()
    yield sock
    sock.close()


def test_each_sender_gets_its_own_answers_and_the_rest_go_to_the_slow_path(server):
    """
    Datagrams from two clients read in one go: the answered ones go back to
    their own sender, the unanswered ones reach C{other} with the sender's
    address as the socket module gives it.
    """
    a, b = _socket(), _socket()
    for i in range(5):
        a.sendto(b"a%d" % i, server.getsockname())
        b.sendto(b"b%d" % i, server.getsockname())
    b.sendto(b"slow", server.getsockname())
    others = []
    timings = _serve_until(_mmsg.BatchSocket(server, batch=4), 11,
                           lambda data: None if data == b"slow" else data.upper(),
                           lambda data, address: others.append((data, address)))
    assert sorted(_replies(a, 5)) == [b"A%d" % i for i in range(5)]
    assert sorted(_replies(b, 5)) == [b"B%d" % i for i in range(5)]
    assert others == [(b"slow", b.getsockname())]
    assert sum(count for _, count in timings) == 10
    assert all(elapsed > 0 for elapsed, _ in timings)
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
    reader = threading.Thread(target=_mmsg.BatchSocket(server).serve, daemon=True,
                              args=(seen.append, lambda *_: None, 100))
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
    client.sendto(b"q", server.getsockname())
    client.sendto(b"slow", server.getsockname())
    others = []
    _serve_until(_mmsg.BatchSocket(server), 2,
                 lambda data: None if data == b"slow" else b"answer",
                 lambda data, address: others.append(address))
    assert _replies(client, 1) == [b"answer"]
    assert others == [client.getsockname()]
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
    batch = _mmsg.BatchSocket(server, batch=3)
    seen = []
    batch.serve(lambda data: seen.append(data), lambda *_: None, budget=4)
    assert 0 < len(seen) <= 4
    _serve_until(batch, 10 - len(seen), lambda data: seen.append(data), lambda *_: None)
    assert sorted(seen) == sorted(b"%d" % i for i in range(10))
    client.close()


def test_long_datagrams_are_cut_at_the_slot_and_long_answers_left_to_the_caller(server):
    """
    A datagram longer than a slot arrives cut to the slot's size (as
    recvfrom with that size gives it); an answer longer than a slot is not
    sent but handed to the slow path, which can send it whole.
    """
    client = _socket()
    client.sendto(b"x" * 300, server.getsockname())
    client.sendto(b"big", server.getsockname())
    got, others = [], []

    def answer(data):
        got.append(data)
        return b"y" * 200 if data == b"big" else b"ok"

    _serve_until(_mmsg.BatchSocket(server, size=128), 2,
                 answer, lambda data, address: others.append(data))
    assert got[0] == b"x" * 128
    assert others == [b"big"]
    assert _replies(client, 1) == [b"ok"]
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
    port._log = Logger(observer=errors.append)
    reader.read_datagrams = lambda *args: 1 / 0
    port.doRead()
    assert [e["log_failure"].type for e in errors] == [ZeroDivisionError]
    assert port in reactor.readers
    service.stopService()
    reactor.advance(0)
    assert service.port is None and port not in reactor.readers
    assert not hasattr(port, "socket")  # closed
    client.close()
