"""
Glimpse's DNS end to end: a real ``twistd glimpse`` on a real Consul, asked
with real sockets (and the real ``dig``) what a resolver would ask.
"""

import re
import shutil
import socket
import subprocess
import urllib.request

import pytest
from twisted.names import dns

from glimpse.dev.consul import start_dev_consul
from glimpse.dev.twistd import start_glimpse
from glimpse.dns.wire import UDP_SIZE, opt_record

from support import a_addresses, ask, dns_exchange, srv_targets, wait_until

ZONE = "glimpse.test"
BIG = f"http.big.prod.shop.ams.{ZONE}"
WEB = f"http.web.prod.shop.ams.{ZONE}"
DIG = shutil.which("dig") or "/usr/bin/dig"


@pytest.fixture(scope="module")
def agent(consul_binary, tmp_path_factory):
    """
    A dev agent with Prometheus metrics on, to count the requests Glimpse
    makes.
    """
    with start_dev_consul(
            consul_binary, "ams", workdir=str(tmp_path_factory.mktemp("consul")),
            extra_hcl=['telemetry { prometheus_retention_time = "600s" '
                       'disable_hostname = true }']) as consul:
        yield consul


@pytest.fixture(scope="module")
def glimpse(agent, tmp_path_factory):
    """
    A Glimpse with 1,000 instances of shop/prod/big (four providers of 250:
    one PUT of 1,000 opens more concurrent Consul connections than the
    agent allows) and two of shop/prod/web.
    """
    g = start_glimpse(agent.url, ZONE, workdir=str(tmp_path_factory.mktemp("glimpse")))
    for part in range(4):
        state = {"instances": [instance("big", f"big-{i}", f"10.1.{part}.{i + 1}")
                               for i in range(250)]}
        status, body = g.put(f"/v1/providers/dns-big-{part}", state, timeout=120)
        assert status == 200, body
    state = {"instances": [instance("web", "web-1", "10.2.0.1"),
                           instance("web", "web-2", "10.2.0.2")]}
    status, body = g.put("/v1/providers/dns-integ", state, timeout=120)
    assert status == 200, body
    yield g
    g.stop()


def instance(job, name, ip, port=8080):
    return {"product": "shop", "env": "prod", "job": job, "instance": name,
            "address": ip, "ports": {"http": port}}


def consul_lookups(agent):
    """
    How many catalog and health requests Consul has finished, from its own
    metrics.
    """
    with urllib.request.urlopen(f"{agent.url}/v1/agent/metrics?format=prometheus") as r:
        text = r.read().decode()
    found = re.findall(
        r'^consul_api_http_count\{method="GET",path="v1_(?:health_service|catalog)[^"]*"\} (\d+)',
        text, re.M)
    return sum(int(n) for n in found)


def test_a_thousand_instances_come_whole_over_tcp_and_truncated_over_udp(glimpse):
    """
    dig over TCP gets all 1,000 SRV records and all 1,000 addresses; over
    UDP the answer does not fit, so it comes with TC=1, never shortened.
    """
    wait_until(lambda: len(ask(glimpse.dns, BIG, dns.SRV, tcp=True).answers) == 1000,
               timeout=30, what="1,000 SRV answers over TCP")
    port = str(glimpse.dns_port)
    out = subprocess.run([DIG, "@127.0.0.1", "-p", port, "+tcp", "+short", BIG, "SRV"],
                         check=False, capture_output=True, text=True, timeout=20).stdout
    assert len(out.splitlines()) == 1000
    assert len(a_addresses(ask(glimpse.dns, BIG, dns.A, tcp=True))) == 1000
    for edns in (None, UDP_SIZE):
        r = ask(glimpse.dns, BIG, dns.SRV, edns=edns)
        assert (r.trunc, r.answers) == (1, [])


def test_edns_case_and_rcodes_on_the_wire(glimpse):
    """
    Over real UDP: the OPT record comes back with Glimpse's size, a 0x20
    question is echoed, version 1 gets BADVERS, outside names REFUSED, and
    a malformed packet does not stop the next answer.
    """
    expected = {(f"0a020001.addr.ams.{ZONE}", 8080), (f"0a020002.addr.ams.{ZONE}", 8080)}
    wait_until(lambda: srv_targets(ask(glimpse.dns, WEB)) == expected, what="web's SRV")
    r = ask(glimpse.dns, WEB, edns=4096)
    opts = [x for x in r.additional if x.type == dns.OPT]
    assert [o.cls for o in opts] == [UDP_SIZE]
    mixed = "HtTp.wEb.PROD.shop.aMs.Glimpse.TEST"
    assert ask(glimpse.dns, mixed, dns.A).queries[0].name.name.decode() == mixed
    badvers = dns.Message(id=3)
    badvers.queries = [dns.Query(WEB, dns.SRV)]
    badvers.additional = [opt_record(1232, version=1)]
    r = dns_exchange(glimpse.dns, badvers.toStr())
    assert [x.ttl >> 24 for x in r.additional if x.type == dns.OPT] == [1]  # BADVERS
    assert ask(glimpse.dns, "example.com", dns.A).rCode == dns.EREFUSED
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.sendto(b"\x12\x34\x01\x00\x00\x01garbage", glimpse.dns)
    assert len(ask(glimpse.dns, WEB, dns.A).answers) == 2


def test_cached_queries_make_no_consul_requests(glimpse, agent):
    """
    Once a job is in the view, thousands of DNS queries for it make no
    Consul request at all: the answers come from the view (and the fast
    path's pre-encoded answers).
    """
    wait_until(lambda: len(ask(glimpse.dns, WEB, dns.A).answers) == 2, what="web's A")
    before = consul_lookups(agent)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.settimeout(5)
        for i in range(2000):
            qtype = dns.SRV if i % 2 else dns.A
            m = dns.Message(id=i, recDes=1)
            m.queries = [dns.Query(WEB, qtype)]
            s.sendto(m.toStr(), glimpse.dns)
            s.recvfrom(4096)
    # A blocking query may end on its own during the run (wait expiry);
    # never one per query.
    assert consul_lookups(agent) - before <= 2


def test_a_new_instance_reaches_dns(glimpse):
    """
    A registration that changes the job is in DNS answers shortly after,
    although the old answer was cached by the fast path.
    """
    wait_until(lambda: len(ask(glimpse.dns, WEB, dns.A).answers) == 2, what="web's A")
    state = {"instances": [instance("web", "web-3", "10.2.0.3")]}
    status, body = glimpse.put("/v1/providers/dns-integ-extra", state)
    assert status == 200, body
    wait_until(lambda: "10.2.0.3" in a_addresses(ask(glimpse.dns, WEB, dns.A)),
               what="the new instance in DNS")
    assert glimpse.delete("/v1/providers/dns-integ-extra")[0] == 200
    wait_until(lambda: "10.2.0.3" not in a_addresses(ask(glimpse.dns, WEB, dns.A)),
               what="the instance gone from DNS")


def test_direct_clients_get_the_instances_in_turning_orders(glimpse):
    """
    Asked with different IDs (resolvers pick them at random), web's two
    instances each come first, over UDP and over TCP, in the A and in the
    SRV answer (with the targets' addresses in the same order); the same ID
    gets the same order every time.
    """
    for tcp in (False, True):
        a_firsts = {ask(glimpse.dns, WEB, dns.A, tcp=tcp, id=i).answers[0].payload.dottedQuad()
                    for i in range(8)}
        assert a_firsts == {"10.2.0.1", "10.2.0.2"}
        for i in range(4):
            srv = ask(glimpse.dns, WEB, dns.SRV, tcp=tcp, id=i)
            assert [r.payload.target for r in srv.answers] == [r.name for r in srv.additional]
            again = ask(glimpse.dns, WEB, dns.SRV, tcp=tcp, id=i)
            assert [r.payload.target for r in again.answers] == \
                [r.payload.target for r in srv.answers]
