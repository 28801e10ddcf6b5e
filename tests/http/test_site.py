"""
The HTTP API's limits on one connection at a time, in memory: a
:class:`LimitedSite` driven byte by byte through a ``StringTransport`` on
a ``MemoryReactorClock``, so that deadlines are exact and nothing waits.
What only real sockets show (a kernel's buffers, thousands of clients, TLS)
is in test_limits_sockets.py.
"""

import json

import pytest
from twisted.internet.address import IPv4Address, IPv6Address, UNIXAddress
from twisted.internet.testing import (
    MemoryReactorClock,
    StringTransport,
    StringTransportWithDisconnection,
)
from twisted.logger import capturedLogs
from twisted.web.resource import Resource
from twisted.web.test.requesthelper import DummyRequest

from glimpse.http import HTTPError
from glimpse.http.follow import HOLD_RETRY_AFTER, hold
from glimpse.http.limits import ClientSlots, HTTPLimits, client_key
from glimpse.http.refusal import ABORT_AFTER, LINGER, Refusal
from glimpse.http.site import LimitedSite


class Recorder(Resource):
    """
    A resource that answers ``ok`` and records each request it was given,
    with its body.
    """

    isLeaf = True

    def __init__(self):
        super().__init__()
        self.seen = []

    def render(self, request):
        self.seen.append((request.method, request.content.read()))
        return b"ok"


class Connection:
    """
    One client connection to ``site``: what the server wrote, whether it
    closed, and whether it is gone.
    """

    def __init__(self, site, host="10.0.0.1", port=40000,
                 transport=StringTransportWithDisconnection):
        peer = IPv4Address("TCP", host, port)
        self.protocol = site.buildProtocol(peer)
        self.transport = transport(peerAddress=peer)
        self.transport.protocol = self.protocol
        self.protocol.makeConnection(self.transport)
        self.lost = []
        real = self.protocol.connectionLost

        def lost(reason=None):
            self.lost.append(reason)
            real(reason)

        self.protocol.connectionLost = lost

    def send(self, data):
        self.protocol.dataReceived(data)

    @property
    def written(self):
        return self.transport.value()

    @property
    def closed(self):
        return self.transport.disconnecting or not self.transport.connected

    def status(self):
        return int(self.written.split(b" ", 2)[1]) if self.written else None

    def error(self):
        head, _, body = self.written.partition(b"\r\n\r\n")
        return head, json.loads(body)


def make_site(**limits):
    reactor = MemoryReactorClock()
    resource = Recorder()
    return LimitedSite(resource, HTTPLimits(**limits), reactor), reactor, resource


GET = b"GET /x HTTP/1.1\r\nHost: glimpse\r\n\r\n"


def test_trickled_headers_are_cut_at_the_header_timeout():
    """
    A client sending its request a byte a second (slowloris) is answered
    408 and closed when the header timeout is up, however many bytes it
    sent: the bytes do not push the deadline back.
    """
    site, reactor, resource = make_site(header_timeout=5.0, idle_timeout=60.0)
    conn = Connection(site)
    for byte in b"GET /x HTTP/1.1\r\nHost: a":
        conn.send(bytes([byte]))
        reactor.advance(1.0)
        if conn.closed:
            break
    assert conn.closed and conn.status() == 408
    head, body = conn.error()
    assert b"Connection: close" in head and "--http-header-timeout" in body["detail"]
    assert resource.seen == []


def test_a_client_that_does_not_read_its_408_is_cut():
    """
    A slow client whose connection does not close once answered (it does
    not read) is cut a moment later: its slot does not wait on it.
    """
    site, reactor, _ = make_site(header_timeout=5.0)
    conn = Connection(site, transport=StringTransport)
    conn.send(b"GET / HTTP/1.1\r\n")
    reactor.advance(5.0)
    assert conn.status() == 408 and conn.transport.disconnecting
    assert not conn.transport.disconnected
    reactor.advance(ABORT_AFTER)
    assert conn.transport.disconnected


def test_a_connection_that_sends_nothing_is_closed_without_an_answer():
    """
    A connection that sends nothing is closed at the header timeout, with
    nothing written: there is no request to answer.
    """
    site, reactor, _ = make_site(header_timeout=5.0)
    conn = Connection(site)
    reactor.advance(4.9)
    assert not conn.closed
    reactor.advance(0.2)
    assert conn.closed and conn.written == b""


def test_an_idle_kept_alive_connection_is_closed_quietly():
    """
    After a response, a kept-alive connection that sends nothing more is
    closed after the idle timeout, without a log line per connection.
    """
    site, reactor, resource = make_site(idle_timeout=30.0, header_timeout=5.0)
    conn = Connection(site)
    conn.send(GET)
    assert conn.status() == 200 and resource.seen == [(b"GET", b"")]
    with capturedLogs() as events:
        reactor.advance(29.0)
        assert not conn.closed
        reactor.advance(1.5)
    assert conn.closed and conn.lost
    assert events == []


def test_the_next_request_on_a_kept_alive_connection_has_its_own_header_deadline():
    """
    Each request of a kept-alive connection has the header timeout from
    its first byte: a second request trickled in is answered 408.
    """
    site, reactor, resource = make_site(idle_timeout=30.0, header_timeout=5.0)
    conn = Connection(site)
    conn.send(GET)
    reactor.advance(20.0)
    conn.send(b"G")
    reactor.advance(4.0)
    conn.send(b"ET /x HTTP/1.1\r\n")
    assert not conn.closed
    reactor.advance(1.5)
    assert conn.closed and b"408" in conn.written
    assert len(resource.seen) == 1


def test_requests_on_a_kept_alive_connection_add_no_timers():
    """
    A kept-alive connection's requests set their deadlines without adding
    a timer to the reactor each (the reactor's timers cost every request
    of every client): one timer per connection checks them.
    """
    site, reactor, resource = make_site()
    conn = Connection(site)
    scheduled = []
    real = reactor.callLater
    reactor.callLater = lambda *args, **kw: scheduled.append(args) or real(*args, **kw)
    for _ in range(100):
        conn.send(GET)
    assert len(resource.seen) == 100 and scheduled == []
    assert len(reactor.getDelayedCalls()) == 1


def test_pipelined_requests_are_all_answered():
    """
    Requests sent together on one connection are answered in order.
    """
    site, _, resource = make_site()
    conn = Connection(site)
    conn.send(GET + GET.replace(b"/x", b"/y"))
    assert conn.written.count(b"HTTP/1.1 200") == 2 and len(resource.seen) == 2
    assert not conn.closed


@pytest.mark.parametrize("expect", [b"", b"Expect: 100-continue\r\n"])
def test_a_content_length_over_the_limit_is_413_before_the_body_is_read(expect):
    """
    A PUT declaring 10 GB is answered 413 as soon as its headers are in:
    no 100 Continue invites the body, no file is made for it, the resource
    never runs, and the body bytes that come anyway are thrown away.
    """
    site, reactor, resource = make_site(max_body=1000)
    conn = Connection(site)
    conn.send(b"PUT /v1/providers/p HTTP/1.1\r\nHost: glimpse\r\n" + expect
              + b"Content-Length: 10000000000\r\n\r\n")
    assert conn.status() == 413 and b"100 Continue" not in conn.written
    _, body = conn.error()
    assert "10000000000" in body["error"] and "--http-max-body" in body["detail"]
    request = conn.protocol.requests[-1]
    assert request.content is None  # no BytesIO, no temporary file
    for _ in range(100):
        conn.send(b"x" * 65536)
    assert request.content is None and resource.seen == []
    assert conn.protocol.clearLineBuffer() == b"" and conn.protocol._dataBuffer == []
    # It lingers so that the client reads the answer, then is cut.
    assert not conn.closed
    reactor.advance(LINGER)
    assert conn.transport.disconnected and conn.lost


def chunked(*pieces):
    return b"".join(b"%x\r\n%s\r\n" % (len(p), p) for p in pieces) + b"0\r\n\r\n"


def test_a_chunked_body_is_cut_with_413_when_it_passes_the_limit():
    """
    A chunked body (no length given) is kept only up to the limit: the
    chunk that passes it gets a 413, and the resource never runs.
    """
    site, _, resource = make_site(max_body=1000)
    conn = Connection(site)
    conn.send(b"PUT /x HTTP/1.1\r\nHost: glimpse\r\nTransfer-Encoding: chunked\r\n\r\n")
    conn.send(chunked(b"a" * 600, b"b" * 600, b"c" * 600))
    assert conn.status() == 413 and "chunked" in conn.error()[1]["error"]
    content = conn.protocol.requests[-1].content
    assert content.tell() <= 1000
    assert resource.seen == []


def test_a_chunked_body_within_the_limit_is_handled():
    """
    A chunked body within the limit reaches the resource whole.
    """
    site, _, resource = make_site(max_body=1000)
    conn = Connection(site)
    conn.send(b"PUT /x HTTP/1.1\r\nHost: glimpse\r\nTransfer-Encoding: chunked\r\n\r\n"
              + chunked(b"a" * 500, b"b" * 500))
    assert conn.status() == 200 and resource.seen == [(b"PUT", b"a" * 500 + b"b" * 500)]


def test_a_body_trickled_past_the_body_timeout_is_408():
    """
    A body that does not arrive within the body timeout of its headers is
    answered 408 and the connection closed, however its bytes trickle.
    """
    site, reactor, resource = make_site(body_timeout=10.0)
    conn = Connection(site)
    conn.send(b"PUT /x HTTP/1.1\r\nHost: glimpse\r\nContent-Length: 100\r\n\r\n")
    for _ in range(11):
        if conn.closed:
            break
        conn.send(b"x")
        reactor.advance(1.0)
    assert conn.closed and conn.status() == 408
    assert "--http-body-timeout" in conn.error()[1]["detail"]
    assert resource.seen == []


def test_a_malformed_request_is_a_json_400():
    """
    A request line twisted.web cannot parse is answered with a JSON 400
    that says what HTTP looks like, and the connection closed.
    """
    site, _, _ = make_site()
    conn = Connection(site)
    conn.send(b"NONSENSE\r\n\r\n")
    assert conn.status() == 400 and conn.closed
    assert conn.error()[1]["error"] == "malformed HTTP request"


def test_connections_over_the_caps_get_429_or_503_with_retry_after():
    """
    Past its per-client cap a client's new connection gets a 429, past the
    total cap anyone's gets a 503, both JSON with Retry-After and closed
    at once; other clients are served meanwhile, and a slot is free again
    once a connection closes.
    """
    site, _, _ = make_site(max_conns=3, max_conns_per_client=2, header_timeout=4.5)
    first = Connection(site, "10.0.0.1")
    Connection(site, "10.0.0.1", 40001)
    third = Connection(site, "10.0.0.1", 40002)
    assert isinstance(third.protocol, Refusal)
    head, body = third.error()
    assert third.status() == 429 and b"Retry-After: 5" in head
    assert "10.0.0.1" in body["error"] and "--http-max-conns-per-client" in body["detail"]

    other = Connection(site, "10.0.0.2")
    assert not isinstance(other.protocol, Refusal)
    full = Connection(site, "10.0.0.3")
    assert full.status() == 503 and b"Retry-After: 5" in full.error()[0]
    assert "--http-max-conns" in full.error()[1]["detail"]

    first.transport.loseConnection()
    again = Connection(site, "10.0.0.1", 40003)
    again.send(GET)
    assert again.status() == 200
    assert site.connections.total() == 3


def test_the_header_timeout_frees_the_slots_of_slow_clients():
    """
    Slow clients filling a client's cap are closed at the header timeout,
    and the client's next connection is served.
    """
    site, reactor, _ = make_site(max_conns_per_client=3, header_timeout=5.0)
    slow = [Connection(site, "127.0.0.1", 50000 + n) for n in range(3)]
    for conn in slow:
        conn.send(b"GET / HTTP/1.1\r\n")
    assert Connection(site, "127.0.0.1", 50003).status() == 429
    reactor.advance(5.0)
    assert all(conn.lost for conn in slow)
    fresh = Connection(site, "127.0.0.1", 50004)
    fresh.send(GET)
    assert fresh.status() == 200


def test_a_refused_connection_lingers_then_is_cut():
    """
    A refused connection throws away what the client sends, and is cut
    after the linger if the client has not hung up.
    """
    site, reactor, _ = make_site(max_conns=1)
    Connection(site, "10.0.0.1")
    refused = Connection(site, "10.0.0.2")
    refused.send(b"GET / HTTP/1.1\r\n" * 100)
    assert refused.status() == 503
    assert not refused.transport.disconnected
    reactor.advance(LINGER)
    assert refused.transport.disconnected


def test_a_refused_client_is_closed_once_its_request_is_in():
    """
    A refused connection is closed as soon as the client's request headers
    are in: nothing more is expected of it.
    """
    site, _, _ = make_site(max_conns=1)
    Connection(site, "10.0.0.1")
    refused = Connection(site, "10.0.0.2")
    refused.send(b"GET / HTTP/1.1\r\nHost: x\r")
    assert not refused.closed
    refused.send(b"\n\r\n")
    assert refused.closed and refused.status() == 503


def test_a_flood_of_refusals_is_closed_at_once():
    """
    Past a quarter of the connection cap in lingering refusals, the next
    refused connections are closed as soon as answered: a flood cannot
    hold file descriptors for the linger.
    """
    site, _, _ = make_site(max_conns=4, header_timeout=1000.0)
    for n in range(4):
        Connection(site, "10.0.0.1", 40000 + n)
    refused = [Connection(site, "10.0.0.2", 41000 + n) for n in range(3)]
    assert [r.closed for r in refused] == [False, True, True]
    assert all(r.status() == 503 for r in refused) and site.refusing == 1


def test_refusals_are_logged_once_a_minute_not_once_each():
    """
    A burst of refusals makes one log line, and the next minute's a line
    that counts them.
    """
    site, reactor, _ = make_site(max_conns=1, header_timeout=1000.0)
    Connection(site, "10.0.0.1")
    with capturedLogs() as events:
        for n in range(50):
            Connection(site, "10.0.0.2", 40000 + n)
        reactor.advance(61)
        Connection(site, "10.0.0.2", 41000)
    assert len(events) == 2 and events[1]["count"] == 50


def test_a_long_poll_or_stream_over_the_client_cap_is_429_until_one_ends():
    """
    One client may hold only so many long-polls and streams; the next is a
    429 with Retry-After saying what to do, and once one ends a new one is
    taken.  Another client is not affected.
    """
    slots = ClientSlots(2)
    held = [DummyRequest([b""]) for _ in range(2)]
    for request in held:
        hold(request, slots)
    with pytest.raises(HTTPError) as e:
        hold(DummyRequest([b""]), slots)
    assert e.value.code == 429
    assert e.value.headers == {b"retry-after": str(HOLD_RETRY_AFTER).encode()}
    assert "--http-max-streams-per-client" in e.value.detail
    other = DummyRequest([b""])
    other.client = IPv4Address("TCP", "10.9.9.9", 1)
    hold(other, slots)
    held[0].finish()
    hold(DummyRequest([b""]), slots)
    assert slots.held(client_key(held[1].getClientAddress())) == 2


@pytest.mark.parametrize(("address", "key"), [
    (IPv4Address("TCP", "192.0.2.7", 1), "192.0.2.7"),
    (IPv6Address("TCP", "2001:db8:1:2:3:4:5:6", 1), "2001:db8:1:2::/64"),
    (IPv6Address("TCP", "2001:db8:1:2:ffff::1", 1), "2001:db8:1:2::/64"),
    (IPv6Address("TCP", "::ffff:192.0.2.7", 1), "192.0.2.7"),
    (IPv6Address("TCP", "fe80::1%eth0", 1), "fe80::/64"),
    (UNIXAddress(b"/run/glimpse.sock"), "unix"),
    (None, "other"),
])
def test_clients_are_ipv4_addresses_and_ipv6_slash_64s(address, key):
    """
    A client is its IPv4 address, or the /64 of its IPv6 address (an IPv6
    host usually has a whole /64), or "unix" for UNIX socket clients.
    """
    assert client_key(address) == key


def test_the_connection_cap_fits_half_the_open_file_limit():
    """
    A connection cap above half the process's open-file limit is lowered
    to that, so DNS and Consul keep file descriptors; below it, nothing
    changes.
    """
    limits = HTTPLimits(max_conns=4096, max_conns_per_client=2048)
    assert limits.fitted(20000) is limits and limits.fitted(None) is limits
    fitted = limits.fitted(1024)
    assert (fitted.max_conns, fitted.max_conns_per_client) == (512, 512)


def test_limits_must_be_positive():
    """
    A limit of 0 (or less) is refused where the limits are made.
    """
    with pytest.raises(ValueError, match="header_timeout"):
        HTTPLimits(header_timeout=0)
