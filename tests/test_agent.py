"""
The composition root, :func:`glimpse.agent.build`: everything Glimpse runs is
owned by the one service twistd starts, and stopping it leaves nothing
running: no timer, no open stream, no listening port, no Consul connection.
"""

from treq.testing import StubTreq
from twisted.internet.testing import MemoryReactorClock

from glimpse.agent import build
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

