"""
The composition root, :func:`glimpse.agent.build`: everything Glimpse runs is
owned by the one service twistd starts, and stopping it leaves nothing
running: no timer, no open stream, no listening port, no Consul connection.
"""

import pytest
from treq.testing import StubTreq
from twisted.internet.testing import MemoryReactorClock
from twisted.logger import capturedLogs

from glimpse.agent import build
from glimpse.http.limits import HTTPLimits, with_backlog
from glimpse.tap import Options


def options(tmp_path, *argv):
    parsed = Options()
    parsed.parseOptions([f"--state-dir={tmp_path}", "--dns-port=0",
                         "--http=tcp:0:interface=127.0.0.1", *argv])
    return parsed


def test_stopping_glimpse_leaves_nothing_running(tmp_path):
    """
    An operator's ``systemctl stop`` (twistd stopping the service) closes
    every event stream with a last comment, cancels every timer and watch,
    stops listening, and drops the connections to Consul.
    """
    reactor = MemoryReactorClock()
    glimpse = build(reactor, options(tmp_path))
    glimpse.service.startService()
    reactor.advance(1.0)
    assert reactor.getDelayedCalls()  # the watches, the probes, the reconcile
    assert reactor.tcpClients  # the Consul client is asking

    http = StubTreq(glimpse.site.resource)
    chunks = []
    finished = []
    d = http.get("http://glimpse/v1/watch/http.web.prod.shop.ams")
    d.addCallback(lambda response: http.collect(response, chunks.append))
    d.addBoth(finished.append)
    http.flush()
    assert finished == [] and glimpse.hub.subscribers() == 1

    glimpse.service.stopService()
    reactor.advance(0)  # what stopping scheduled "now" (the UDP port's close)
    http.flush()

    assert finished == [None]
    assert b"Glimpse is stopping" in b"".join(chunks)
    assert glimpse.hub.subscribers() == 0
    assert [call for call in reactor.getDelayedCalls() if call.active()] == []
    udp = [s for s in glimpse.service if type(s).__name__ == "FastUDPServer"]
    assert [s.port for s in udp] == [None]



def test_the_http_site_holds_connections_to_the_limits_given(tmp_path):
    """
    The --http-* options reach the site; a connection cap above half the
    open-file limit is lowered to it, with one log line saying how to
    raise it.
    """
    reactor = MemoryReactorClock()
    with capturedLogs() as events:
        glimpse = build(reactor, options(tmp_path, "--http-max-conns=300",
                                         "--http-max-body=5000", "--http-header-timeout=2"),
                        open_files=400)
    assert glimpse.site.limits == HTTPLimits(max_conns=200, max_conns_per_client=200,
                                             max_body=5000, header_timeout=2.0)
    [warning] = [e for e in events if e["log_format"].startswith("HTTP: --http-max-conns")]
    assert warning["conns"] == 200 and warning["files"] == 400


@pytest.mark.parametrize(("endpoint", "listened"), [
    ("tcp:8411:interface=127.0.0.1", "tcp:8411:interface=127.0.0.1:backlog=1024"),
    ("tcp:8411:backlog=10", "tcp:8411:backlog=10"),
    ("ssl:8443:privateKey=k.pem:certKey=c.pem", "ssl:8443:privateKey=k.pem:certKey=c.pem"
                                                 ":backlog=1024"),
    ("unix:/run/glimpse.sock", "unix:/run/glimpse.sock:backlog=1024"),
    ("systemd:domain=INET:index=0", "systemd:domain=INET:index=0"),
])
def test_http_endpoints_listen_with_room_for_a_burst(endpoint, listened):
    """
    An HTTP endpoint that sets no backlog gets 1024 rather than Twisted's
    50, so a burst of clients is answered (or refused with a 429/503), not
    dropped by the kernel to retry a second later.
    """
    assert with_backlog(endpoint) == listened
