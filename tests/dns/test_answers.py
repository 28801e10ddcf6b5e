"""
Tests for :obj:`glimpse.dns.answers`: what a name in the zone means and the records
that answer it.
"""

import pytest
from twisted.names import dns

from glimpse.address import Address
from glimpse.dns.answers import (
    ADDRESS,
    APEX,
    NODE,
    TARGET,
    ZONE,
    Name,
    ZoneIdentity,
    classify,
    ip_answer,
    node_exists,
    srv_answer,
)
from glimpse.view.model import Check, Instance

DNS_ZONE = "glimpse.test"
QNAME = b"http.web.prod.shop.ams.glimpse.test"


def instance(ip, port=8080, service="http", node="n1", status="passing", drain=False,
             name=None):
    """
    An instance of shop/prod/web with one service check in ``status``.
    """
    name = name or f"{ip}:{port}:{service}"
    check = Check(id=f"{name}:check0", name="tcp", type="tcp", status=status, output="",
                  node_level=False)
    return Instance(id=name, product="shop", env="prod", job="web", instance=name,
                    service=service, provider="prov", node=node, ip=ip, port=port,
                    checks=(check,), drain=drain)


def wire(answers, additional=()):
    """
    Send records through the DNS wire format and back, as a client sees
    them.
    """
    message = dns.Message(answer=1, auth=1)
    message.answers = list(answers)
    message.additional = list(additional)
    received = dns.Message()
    received.fromStr(message.toStr())
    return received


@pytest.mark.parametrize(("labels", "expected"), [
    ([], Name(APEX)),
    (["ams"], Name(ZONE, "ams")),
    (["ams", "shop"], Name(NODE, "ams", path=("shop",))),
    (["ams", "shop", "prod"], Name(NODE, "ams", path=("shop", "prod"))),
    (["ams", "shop", "prod", "web"], Name(NODE, "ams", path=("shop", "prod", "web"))),
    (["ams", "shop", "prod", "web", "http"],
     Name(ADDRESS, "ams", address=Address("http", "web", "prod", "shop", "ams"))),
    (["ams", "addr", "0a000001"], Name(TARGET, "ams", ip="10.0.0.1")),
    (["ams", "addr", "20010db8000000000000000000000001"],
     Name(TARGET, "ams", ip="2001:db8::1")),
])
def test_classify(labels, expected):
    """
    Every kind of name in the zone is recognised: the apex, a zone, the
    product/env/job nodes of the tree, an address, and an SRV target.
    """
    assert classify(labels) == expected


@pytest.mark.parametrize("labels", [
    ["ams", "shop", "prod", "web", "http", "extra"],
    ["a_ms"],
    ["ams", "sh--op"],
    ["ams", "shop", "prod", "w*b"],
    ["ams", "addr"],
    ["ams", "addr", "nothex00"],
    ["ams", "addr", "0a00"],
    ["ams", "addr", "prod", "web"],
])
def test_classify_impossible(labels):
    """
    Names that cannot exist in any view (too deep, an invalid label, the
    reserved ``addr`` used as a product, a target that encodes no IP) are
    nothing: NXDOMAIN.
    """
    assert classify(labels) is None


def test_node_exists():
    """
    A product, env or job node exists while some job lies below it.
    """
    tree = {("shop", "prod", "web"): frozenset({"http"}),
            ("shop", "dev", "api"): frozenset({"grpc"})}
    assert node_exists(tree, ("shop",))
    assert node_exists(tree, ("shop", "prod"))
    assert node_exists(tree, ("shop", "dev", "api"))
    assert not node_exists(tree, ("shop", "prod", "api"))
    assert not node_exists(tree, ("blog",))
    assert not node_exists({}, ("shop",))


def test_srv_answer():
    """
    An SRV answer has one record per instance, for the name as asked,
    pointing at a target under ``addr.<zone>``; the target's address record
    comes in the additional section once, A for IPv4, AAAA for IPv6.
    """
    instances = [instance("10.0.0.1", 80), instance("10.0.0.1", 81),
                 instance("2001:db8::1", 80)]
    answers, additional = srv_answer(QNAME, "ams", instances, DNS_ZONE, 7)
    received = wire(answers, additional)
    assert [(str(r.name), r.ttl, r.payload.priority, r.payload.weight, r.payload.port,
             str(r.payload.target)) for r in received.answers] == [
        (QNAME.decode(), 7, 1, 1, 80, "0a000001.addr.ams.glimpse.test"),
        (QNAME.decode(), 7, 1, 1, 81, "0a000001.addr.ams.glimpse.test"),
        (QNAME.decode(), 7, 1, 1, 80, "20010db8000000000000000000000001.addr.ams.glimpse.test"),
    ]
    assert [(str(r.name), r.type, r.payload.dottedQuad() if r.type == dns.A else None)
            for r in received.additional] == [
        ("0a000001.addr.ams.glimpse.test", dns.A, "10.0.0.1"),
        ("20010db8000000000000000000000001.addr.ams.glimpse.test", dns.AAAA, None),
    ]
    assert all(r.auth for r in answers + additional)


def test_srv_answer_empty():
    """
    No instances, no records.
    """
    assert srv_answer(QNAME, "ams", [], DNS_ZONE, 5) == ([], [])


def test_ip_answer_a():
    """
    An A query gets each distinct IPv4 address once and no IPv6 ones.
    """
    instances = [instance("10.0.0.2", 80), instance("10.0.0.2", 81),
                 instance("2001:db8::1"), instance("10.0.0.1")]
    records = ip_answer(QNAME, dns.A, instances, 5)
    assert [(r.type, r.payload.dottedQuad()) for r in records] == [
        (dns.A, "10.0.0.2"), (dns.A, "10.0.0.1")]
    assert {str(r.name) for r in records} == {QNAME.decode()}


def test_ip_answer_aaaa():
    """
    An AAAA query gets the IPv6 addresses only.
    """
    instances = [instance("10.0.0.1"), instance("2001:db8::1"), instance("2001:db8::1", 81)]
    records = ip_answer(QNAME, dns.AAAA, instances, 5)
    assert [(r.type, r.payload.address) for r in records] == [
        (dns.AAAA, dns.Record_AAAA("2001:db8::1").address)]


def test_ip_answer_none_of_family():
    """
    Asking A of an address with only IPv6 instances gives no records
    (NODATA), not an error.
    """
    assert ip_answer(QNAME, dns.A, [instance("2001:db8::1")], 5) == []


def test_zone_soa():
    """
    The apex SOA names Glimpse's name server, carries the view's serial and
    the negative TTL as its minimum and its own TTL.
    """
    identity = ZoneIdentity(DNS_ZONE, "10.0.0.53", ttl=30, negative_ttl=3)
    soa = wire([identity.soa(42)]).answers[0]
    assert (str(soa.name), soa.type, soa.ttl) == (DNS_ZONE, dns.SOA, 3)
    assert str(soa.payload.mname) == "ns.glimpse.test"
    assert str(soa.payload.rname) == "hostmaster.glimpse.test"
    assert (soa.payload.serial, soa.payload.minimum) == (42, 3)


def test_zone_ns():
    """
    The apex NS is ``ns.<dns_zone>``, and that name has the advertised IP
    as A or AAAA.
    """
    identity = ZoneIdentity(DNS_ZONE, "10.0.0.53", ttl=30)
    ns = wire([identity.ns()]).answers[0]
    assert (str(ns.name), ns.type, ns.ttl, str(ns.payload.name)) == (
        DNS_ZONE, dns.NS, 30, "ns.glimpse.test")
    address = identity.ns_address()
    assert (str(address.name), address.type, address.payload.dottedQuad()) == (
        "ns.glimpse.test", dns.A, "10.0.0.53")
    assert ZoneIdentity(DNS_ZONE, "2001:db8::53").ns_address().type == dns.AAAA
