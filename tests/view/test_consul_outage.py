"""
Consul going away and coming back, with real processes: Glimpse keeps
answering from its view for max-stale, then says SERVFAIL / 503, and
recovers by itself; a Glimpse started while Consul is down starts anyway.
"""

from twisted.names import dns

from glimpse.dev.twistd import start_glimpse

from support import ask, srv_targets, wait_until

ZONE = "glimpse.test"
NAME = f"http.web.prod.outage.ams.{ZONE}"


def rcode(glimpse):
    try:
        return ask(glimpse.dns, NAME, dns.SRV, timeout=2.0).rCode
    except OSError:
        return None


def test_consul_outage_and_recovery(consul, tmp_path):
    """
    With Consul killed, lookups keep their answers within max-stale, then
    get SERVFAIL and HTTP 503; a Glimpse started during the outage starts
    and says 503; when Consul is back both answer again without a restart.
    """
    first = start_glimpse(consul.url, ZONE, ["--max-stale=2"], workdir=str(tmp_path / "a"))
    second = None
    try:
        state = {"instances": [{"product": "outage", "env": "prod", "job": "web",
                                "instance": "w1", "address": "127.0.5.1",
                                "ports": {"http": 80}}]}
        assert first.put("/v1/providers/outage", state)[0] == 200
        wait_until(lambda: srv_targets(ask(first.dns, NAME)), what="the answer")

        consul.kill()
        # The last view keeps answering right after the loss...
        assert srv_targets(ask(first.dns, NAME)) == {(f"7f000501.addr.ams.{ZONE}", 80)}
        # ...and past max-stale the answer is SERVFAIL, never a hang.
        wait_until(lambda: rcode(first) == dns.ESERVER, what="SERVFAIL past max-stale")
        status, body = first.get("/v1/lookup/http.web.prod.outage.ams")
        assert status == 503 and "max-stale" in body["detail"]
        assert first.get("/v1/status")[0] == 503

        second = start_glimpse(consul.url, ZONE, workdir=str(tmp_path / "b"))
        assert second.get("/v1/status")[0] == 503
        assert rcode(second) == dns.ESERVER

        consul.restart()
        for glimpse in (first, second):
            wait_until(lambda glimpse=glimpse: srv_targets(ask(glimpse.dns, NAME)), timeout=30,
                       what="answers after Consul came back")
            wait_until(lambda glimpse=glimpse: glimpse.get("/v1/status")[0] == 200,
                       what="status 200")
    finally:
        first.stop()
        if second is not None:
            second.stop()
