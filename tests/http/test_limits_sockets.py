"""
The HTTP API's limits over real sockets, against a real ``twistd
glimpse`` on a real Consul: slow clients (slowloris) are closed however
they trickle, thousands of half-requests leave no file descriptor behind,
an upload too large is refused before any of it is read, and the caps on
connections and streams answer with JSON and Retry-After, never a hang.
DNS keeps answering throughout.  No timing is asserted: every wait is a
condition with a deadline.
"""

import contextlib
import os
import socket
import time

import pytest
from twisted.names import dns

from glimpse.dev.registrations import register
from glimpse.dev.twistd import start_glimpse

from http_helpers import read_response
from support import ask, wait_until

ZONE = "glimpse.test"
ADDRESS = "http.web.prod.shop.ams"

#: The tight limits of the first Glimpse: small enough to reach in a test.
TIGHT = ["--http-header-timeout=3", "--http-body-timeout=5", "--http-max-body=100000",
         "--http-max-conns=80", "--http-max-conns-per-client=50",
         "--http-max-streams-per-client=3"]


@pytest.fixture(scope="module")
def tight(consul, tmp_path_factory):
    """
    A Glimpse with small limits, over a Consul holding one web instance.
    """
    register(consul.url, "web", "web-1", "http", 8080, "127.0.12.1")
    g = start_glimpse(consul.url, ZONE, extra_args=TIGHT,
                      workdir=str(tmp_path_factory.mktemp("tight")))
    wait_until(lambda: g.get(f"/v1/lookup/{ADDRESS}")[0] == 200, what="the view of web")
    yield g
    g.stop()


@pytest.fixture(scope="module")
def default(consul, tmp_path_factory):
    """
    A Glimpse with the default limits.
    """
    g = start_glimpse(consul.url, ZONE, workdir=str(tmp_path_factory.mktemp("default")))
    yield g
    g.stop()


def open_fds(glimpse):
    """
    How many file descriptors the Glimpse process has open.
    """
    return len(os.listdir(f"/proc/{glimpse.process.pid}/fd"))


def temp_files(glimpse):
    """
    The deleted files the Glimpse process holds open: where twisted.web
    spools a request body above 100 KB.
    """
    found = []
    for fd in os.listdir(f"/proc/{glimpse.process.pid}/fd"):
        with contextlib.suppress(OSError):
            target = os.readlink(f"/proc/{glimpse.process.pid}/fd/{fd}")
            if target.endswith("(deleted)"):
                found.append(target)
    return found


def connect(glimpse, data=b"", source="127.0.0.1"):
    """
    A connection to the HTTP API from ``source``, having sent ``data``.
    """
    s = socket.create_connection(("127.0.0.1", glimpse.http_port), timeout=10,
                                 source_address=(source, 0))
    if data:
        s.sendall(data)
    return s


class Peer:
    """
    A client socket, read without blocking: what the server sent, and
    whether it has closed the connection.
    """

    def __init__(self, sock):
        self.sock = sock
        sock.setblocking(False)
        self.received = b""
        self.closed = False

    def poll(self):
        """
        Read what is there; ``True`` once the server has closed.
        """
        while not self.closed:
            try:
                chunk = self.sock.recv(65536)
            except BlockingIOError:
                break
            except OSError:  # reset: closed too
                self.closed = True
                break
            if not chunk:
                self.closed = True
            self.received += chunk
        return self.closed

    def send(self, data):
        """
        Send ``data``; ``False`` when the server has closed the connection.
        """
        try:
            self.sock.send(data)
        except OSError:
            self.closed = True
        return not self.closed

    def status(self):
        return int(self.received.split(b" ", 2)[1]) if self.received else None

    def close(self):
        self.sock.close()


def dns_answers(glimpse):
    """
    Glimpse's DNS answers its apex SOA (over UDP and TCP).
    """
    return all(ask(glimpse.dns, ZONE, dns.SOA, tcp=tcp).rCode == dns.OK for tcp in (False, True))


def test_slowloris_clients_are_closed_at_the_header_timeout(tight):
    """
    Clients that trickle their request a byte a second are closed once the
    header timeout is up, although every one of them keeps sending; DNS
    answers meanwhile.
    """
    peers = [Peer(connect(tight)) for _ in range(20)]
    request = b"GET /v1/status HTTP/1.1\r\nHost: glimpse\r\nX-Slow: " + b"a" * 1000
    sent = dict.fromkeys(peers, 0)
    try:
        def trickle():
            for peer in peers:
                if not peer.poll() and peer.send(request[sent[peer]:sent[peer] + 1]):
                    sent[peer] += 1
            time.sleep(1.0)
            return all(peer.closed for peer in peers)

        wait_until(trickle, timeout=30, interval=0, what="every slow client to be closed")
        # Each kept trickling to the end: closed for its deadline, not for going quiet.
        assert min(sent.values()) >= 2
        assert all(peer.status() in (408, None) for peer in peers)
        assert dns_answers(tight)
    finally:
        for peer in peers:
            peer.close()


def test_a_content_length_over_the_limit_is_413_and_nothing_is_spooled(tight):
    """
    A PUT declaring 10 GB gets a JSON 413 before it sends any of its body
    (also with Expect: 100-continue), and Glimpse holds no temporary file
    for it; nothing is applied.  (A chunked body, of unknown length, is
    spooled to a temporary file at once: the check sees those.)
    """
    # A chunked body (of unknown length) is spooled at once: the check sees it.
    chunked = connect(tight, b"PUT /v1/providers/big HTTP/1.1\r\nHost: glimpse\r\n"
                      b"Transfer-Encoding: chunked\r\n\r\n1\r\n \r\n")
    with chunked:
        wait_until(lambda: temp_files(tight), what="the spooled chunked body")
    wait_until(lambda: not temp_files(tight), what="the spool to go")

    for expect in (b"", b"Expect: 100-continue\r\n"):
        s = connect(tight, b"PUT /v1/providers/big HTTP/1.1\r\nHost: glimpse\r\n" + expect
                    + b"Content-Length: 10000000000\r\n\r\n")
        try:
            status, headers, body = read_response(s)
            assert status == 413 and headers["Connection"] == "close"
            assert "--http-max-body" in body["detail"]
            assert temp_files(tight) == []
            # The body sent anyway is thrown away, never spooled.
            with contextlib.suppress(OSError):
                for _ in range(40):
                    s.sendall(b"x" * 65536)
            assert temp_files(tight) == []
        finally:
            s.close()
    assert tight.get("/v1/providers/big")[0] == 404


def test_a_chunked_body_past_the_limit_is_cut_with_413(tight):
    """
    A chunked upload is cut with a JSON 413 once it passes --http-max-body,
    and nothing is applied.
    """
    s = connect(tight, b"PUT /v1/providers/chunky HTTP/1.1\r\nHost: glimpse\r\n"
                b"Transfer-Encoding: chunked\r\n\r\n")
    try:
        with contextlib.suppress(OSError):
            for _ in range(30):
                s.sendall(b"%x\r\n%s\r\n" % (10000, b"{" * 10000))
        status, _, body = read_response(s)
        assert status == 413 and "chunked" in body["error"]
    finally:
        s.close()
    assert tight.get("/v1/providers/chunky")[0] == 404


def test_over_its_cap_a_client_gets_429_until_slow_connections_are_closed(tight):
    """
    With its 50 connections taken by slow clients, a client's next one gets
    a JSON 429 with Retry-After at once (never a hang); the header timeout
    closes the slow ones, and then it is served.  Another address is served
    all along.
    """
    slow = [Peer(connect(tight, b"GET / HTTP/1.1\r\n")) for _ in range(50)]
    try:
        def refused():
            s = connect(tight, b"GET /v1/status HTTP/1.1\r\nHost: glimpse\r\n\r\n")
            with s:
                return read_response(s)

        _, headers, body = wait_until(lambda: (r := refused())[0] == 429 and r,
                                      what="a 429")
        assert int(headers["Retry-After"]) >= 1 and "--http-max-conns-per-client" in body["detail"]
        s = connect(tight, b"GET /v1/status HTTP/1.1\r\nHost: glimpse\r\n\r\n", "127.0.0.2")
        with s:
            assert read_response(s)[0] in (200, 503)
        wait_until(lambda: all(p.poll() for p in slow), what="the slow clients closed")
        wait_until(lambda: refused()[0] in (200, 503), what="the client served again")
    finally:
        for peer in slow:
            peer.close()


def test_over_the_total_cap_everyone_gets_503(tight):
    """
    With every connection Glimpse allows taken (from two addresses), a
    third address gets a JSON 503 with Retry-After.
    """
    slow = [connect(tight, b"GET / HTTP/1.1\r\n") for _ in range(50)]
    slow += [connect(tight, b"GET / HTTP/1.1\r\n", "127.0.0.2") for _ in range(30)]
    try:
        def answer():
            s = connect(tight, b"GET /v1/status HTTP/1.1\r\nHost: glimpse\r\n\r\n", "127.0.0.3")
            with s:
                return read_response(s)

        _, headers, body = wait_until(lambda: (r := answer())[0] == 503 and r,
                                      what="a 503")
        assert "Retry-After" in headers and "--http-max-conns" in body["detail"]
        assert dns_answers(tight)
    finally:
        for s in slow:
            s.close()


def test_streams_and_long_polls_over_the_client_cap_get_429(tight):
    """
    A client with 3 streams open (the cap here) gets a JSON 429 with
    Retry-After for a 4th and for a long-poll; once it closes one, a new
    one is taken.
    """
    watch = f"GET /v1/watch/{ADDRESS} HTTP/1.1\r\nHost: glimpse\r\n\r\n".encode()
    streams = [connect(tight, watch) for _ in range(3)]
    try:
        for s in streams:
            s.settimeout(10)
            assert b" 200 " in s.recv(65536).split(b"\r\n", 1)[0]
        s = connect(tight, watch)
        with s:
            status, headers, body = read_response(s)
        assert status == 429 and headers["Retry-After"] == "5"
        assert "--http-max-streams-per-client" in body["detail"]
        poll = connect(tight, f"GET /v1/lookup/{ADDRESS}?index=1&wait=30s HTTP/1.1\r\n"
                       "Host: glimpse\r\n\r\n".encode())
        with poll:
            assert read_response(poll)[0] == 429
        streams.pop().close()

        def stream_taken():
            s = connect(tight, watch)
            s.settimeout(10)
            line = s.recv(65536).split(b"\r\n", 1)[0]
            ok = b" 200 " in line
            if ok:
                streams.append(s)
            else:
                s.close()
            return ok

        wait_until(stream_taken, what="a new stream once one closed")
    finally:
        for s in streams:
            s.close()


def test_200_slow_clients_on_one_address_do_not_lock_out_a_fresh_request(default):
    """
    With the default limits, 200 clients on loopback holding half-sent
    requests leave room: a fresh request from the same address is answered.
    """
    slow = [connect(default, b"GET /v1/status HTTP/1.1\r\nHost: g") for _ in range(200)]
    try:
        s = connect(default, b"GET /v1/status HTTP/1.1\r\nHost: glimpse\r\n\r\n")
        with s:
            status, _, body = read_response(s)
        assert status in (200, 503) and "serving" in body
    finally:
        for s in slow:
            s.close()


def test_3000_half_requests_are_closed_and_their_descriptors_freed(default):
    """
    3,000 connections that each send half a request are all closed by
    Glimpse (those over the per-client cap at once with a 429, the others
    at the header timeout) while the clients keep their sockets open;
    Glimpse's open file descriptors come back to where they were, and DNS
    answers throughout.
    """
    before = open_fds(default)
    peers = []
    try:
        for _ in range(3000):
            peers.append(Peer(connect(default, b"GET /v1/status HTTP/1.1\r\nHost: gl")))
        assert dns_answers(default)
        wait_until(lambda: all(p.poll() for p in peers), timeout=60,
                   what="every half-request closed")
        statuses = {p.status() for p in peers}
        assert statuses <= {408, 429, None}
        wait_until(lambda: open_fds(default) <= before + 5, what="the descriptors freed")
        assert dns_answers(default)
    finally:
        for peer in peers:
            peer.close()
