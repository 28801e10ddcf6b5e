"""
unbound in front of Glimpse, as shipped: a real unbound (the Debian
package) runs ``etc/unbound/glimpse.conf`` with only its ports and paths
changed, in front of a real Glimpse and Consul, and a client asking unbound
gets what it would get from Glimpse, cached for the TTLs Glimpse gives.
"""

import os
import re
import shutil
import signal
import subprocess
import time

import pytest
from twisted.names import dns

from glimpse.dev.consul import free_ports
from glimpse.dev.twistd import REPO, start_glimpse

from support import a_addresses, ask, srv_targets, wait_until

ZONE = "glimpse.test"
TTL, NEGATIVE_TTL = 3, 3
UNBOUND = shutil.which("unbound") or "/usr/sbin/unbound"
SHIPPED = REPO / "etc" / "unbound" / "glimpse.conf"


def unbound_config(shipped, port, glimpse_port, workdir):
    """
    The shipped file with its ports and paths made fit for a test: unbound's
    port, Glimpse's port, and a second ``server:`` clause that keeps unbound
    in the foreground as the current user, in ``workdir``, logging to stderr
    (no chroot, no user switch, no remote control, no root key).
    """
    text = shipped.read_text()
    text, n_port = re.subn(r"(?m)^(\s*port:\s*)53\s*$", rf"\g<1>{port}", text)
    text, n_stub = re.subn(r"(?m)^(\s*stub-addr:\s*127\.0\.0\.1)@8053\s*$",
                           rf"\g<1>@{glimpse_port}", text)
    assert (n_port, n_stub) == (1, 1), "the shipped file no longer has port: 53 / stub-addr"
    return text + f"""
server:
    username: ""
    chroot: ""
    directory: "{workdir}"
    pidfile: "{workdir}/unbound.pid"
    use-syslog: no
    logfile: ""
    verbosity: 1
"""


@pytest.fixture(scope="module")
def glimpse(consul, tmp_path_factory):
    """
    A Glimpse with short TTLs, so that unbound's cache expires within a test.
    """
    g = start_glimpse(consul.url, ZONE, workdir=str(tmp_path_factory.mktemp("glimpse")),
                      extra_args=[f"--dns-ttl={TTL}", f"--negative-ttl={NEGATIVE_TTL}"])
    yield g
    g.stop()


@pytest.fixture(scope="module")
def unbound(glimpse, tmp_path_factory):
    """
    ``(host, port)`` of a real unbound running the shipped config in front
    of ``glimpse``.
    """
    workdir = tmp_path_factory.mktemp("unbound")
    (port,) = free_ports(1)
    conf = workdir / "unbound.conf"
    conf.write_text(unbound_config(SHIPPED, port, glimpse.dns_port, workdir))
    with open(workdir / "unbound.log", "wb") as log:
        process = subprocess.Popen([UNBOUND, "-d", "-c", str(conf)], stdout=log,
                                   stderr=subprocess.STDOUT, start_new_session=True)
    server = ("127.0.0.1", port)

    def answering():
        if process.poll() is not None:
            raise AssertionError("unbound exited:\n" + (workdir / "unbound.log").read_text())
        try:
            return ask(server, f"{ZONE}", dns.SOA, timeout=0.5).rCode == dns.OK
        except OSError:
            return False

    try:
        wait_until(answering, what="unbound to answer")
        yield server
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGTERM)
            process.wait(10)


def instance(job, name, ip, port=8080, drain=False):
    return {"product": "shop", "env": "prod", "job": job, "instance": name,
            "address": ip, "ports": {"http": port}, "drain": drain}


def put(glimpse, provider, instances):
    status, body = glimpse.put(f"/v1/providers/{provider}", {"instances": instances})
    assert status == 200, body


def full_answer(server, name, qtype):
    """
    Ask as a stub resolver does: UDP first, TCP again when truncated.
    """
    response = ask(server, name, qtype, edns=1232)
    if response.trunc:
        response = ask(server, name, qtype, tcp=True)
    return response


def test_srv_and_a_through_unbound(glimpse, unbound):
    """
    A host asking its unbound gets Glimpse's SRV answer (with the targets'
    addresses) and A answer, from a zone unbound would otherwise refuse
    as private.
    """
    put(glimpse, "ub-basic", [instance("web", "web-1", "10.9.0.1"),
                              instance("web", "web-2", "10.9.0.2", 8081)])
    name = f"http.web.prod.shop.ams.{ZONE}"
    expected = {(f"0a090001.addr.ams.{ZONE}", 8080), (f"0a090002.addr.ams.{ZONE}", 8081)}
    response = wait_until(lambda: (r := ask(unbound, name, dns.SRV))
                          and srv_targets(r) == expected and r, what="the SRV answer")
    assert response.rCode == dns.OK and response.recAv
    assert all(0 < r.ttl <= TTL for r in response.answers)
    a = ask(unbound, name, dns.A)
    assert a_addresses(a) == {"10.9.0.1", "10.9.0.2"}
    target = ask(unbound, f"0a090001.addr.ams.{ZONE}", dns.A)
    assert a_addresses(target) == {"10.9.0.1"}


def test_nxdomain_is_cached_for_the_negative_ttl(glimpse, unbound):
    """
    A name that does not exist is NXDOMAIN through unbound, and unbound
    keeps saying so from its cache after the name appears, until the
    negative TTL has passed; then the new name is answered.
    """
    name = f"http.late.prod.shop.ams.{ZONE}"
    assert ask(unbound, name, dns.A).rCode == dns.ENAME
    asked = time.monotonic()
    put(glimpse, "ub-nx", [instance("late", "late-1", "10.9.1.1")])
    wait_until(lambda: a_addresses(ask(glimpse.dns, name, dns.A)) == {"10.9.1.1"},
               what="Glimpse to answer the new name")
    cached = ask(unbound, name, dns.A)
    # Only a second that is still within the TTL proves the cache; on a
    # machine slow enough to get here later, the entry has expired.
    if time.monotonic() - asked < NEGATIVE_TTL - 0.5:
        assert cached.rCode == dns.ENAME, "unbound asked Glimpse again within the negative TTL"
    wait_until(lambda: a_addresses(ask(unbound, name, dns.A)) == {"10.9.1.1"},
               what="unbound to answer once the negative TTL passed")


def test_nodata_is_cached_for_the_negative_ttl(glimpse, unbound):
    """
    An address whose only instance is draining exists but has no A record
    (NODATA through unbound, cached); once the instance is back, unbound
    answers it after the negative TTL.
    """
    name = f"http.drained.prod.shop.ams.{ZONE}"
    put(glimpse, "ub-nodata", [instance("drained", "d-1", "10.9.2.1", drain=True)])
    wait_until(lambda: (r := ask(glimpse.dns, name, dns.A)).rCode == dns.OK and not r.answers
               and r.authority, what="Glimpse to know the drained job")
    nodata = ask(unbound, name, dns.A)
    assert nodata.rCode == dns.OK and not nodata.answers
    assert [r.type for r in nodata.authority] == [dns.SOA]
    asked = time.monotonic()
    put(glimpse, "ub-nodata", [instance("drained", "d-1", "10.9.2.1")])
    wait_until(lambda: a_addresses(ask(glimpse.dns, name, dns.A)) == {"10.9.2.1"},
               what="Glimpse to serve the undrained instance")
    cached = ask(unbound, name, dns.A)
    if time.monotonic() - asked < NEGATIVE_TTL - 0.5:
        assert not cached.answers, "unbound asked Glimpse again within the negative TTL"
    wait_until(lambda: a_addresses(ask(unbound, name, dns.A)) == {"10.9.2.1"},
               what="unbound to answer once the negative TTL passed")


def test_large_srv_answer_arrives_whole_over_tcp(glimpse, unbound):
    """
    An SRV answer of 100 instances does not fit UDP: Glimpse truncates it,
    unbound asks again over TCP, and the client (retrying over TCP as stub
    resolvers do) gets all 100.
    """
    many = [instance("big", f"big-{i}", f"10.9.3.{i}", 9000 + i) for i in range(1, 101)]
    put(glimpse, "ub-big", many)
    name = f"http.big.prod.shop.ams.{ZONE}"
    wait_until(lambda: len(srv_targets(ask(glimpse.dns, name, dns.SRV, tcp=True))) == 100,
               what="Glimpse to know all 100")
    assert ask(glimpse.dns, name, dns.SRV, edns=1232).trunc, "Glimpse did not truncate UDP"
    response = full_answer(unbound, name, dns.SRV)
    assert response.rCode == dns.OK
    assert srv_targets(response) == {(f"0a0903{i:02x}.addr.ams.{ZONE}", 9000 + i)
                                     for i in range(1, 101)}


def test_change_in_consul_visible_after_the_ttl(glimpse, unbound):
    """
    A new instance registered in Consul reaches clients of unbound once the
    cached answer's TTL has run out (until then they get the cached
    answer), without anything being flushed.
    """
    name = f"http.grow.prod.shop.ams.{ZONE}"
    put(glimpse, "ub-grow", [instance("grow", "g-1", "10.9.4.1")])
    first = wait_until(lambda: (r := ask(unbound, name, dns.A))
                       and a_addresses(r) == {"10.9.4.1"} and r,
                       what="the first instance through unbound")
    # unbound counts the TTL down in whole seconds: the entry lives at
    # least (remaining - 1) seconds from now.
    expires = time.monotonic() + min(r.ttl for r in first.answers) - 1
    put(glimpse, "ub-grow", [instance("grow", "g-1", "10.9.4.1"),
                             instance("grow", "g-2", "10.9.4.2")])
    wait_until(lambda: len(a_addresses(ask(glimpse.dns, name, dns.A))) == 2,
               what="Glimpse to serve the second instance")
    cached = ask(unbound, name, dns.A)
    if time.monotonic() < expires:
        assert a_addresses(cached) == {"10.9.4.1"}, "unbound asked again within the TTL"
    wait_until(lambda: a_addresses(ask(unbound, name, dns.A)) == {"10.9.4.1", "10.9.4.2"},
               what="the second instance through unbound")
