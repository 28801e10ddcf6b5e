"""
DNS answers that steer traffic: SRV weights and priorities, warning
instances with --serve-warning, panic, and the zone ``any`` (failover);
both paths (twisted.names and the fast path) give the same bytes, and the
fast path's kept answers follow every zone an ``any`` name depends on.
"""

import itertools

from twisted.internet.task import Clock
from twisted.names import dns

from glimpse.view.steering import Steering

from dns_stub import StubView, decode, exchange, instance, query_bytes, servers

Z = b".glimpse.test"
WEB = b"http.web.prod.shop.ams" + Z
ANY = b"http.web.prod.shop.any" + Z


def srv(message):
    """
    ``[(priority, weight, port, target)]`` of a response's SRV records.
    """
    return [(r.payload.priority, r.payload.weight, r.payload.port, r.payload.target.name.decode())
            for r in message.answers if r.type == dns.SRV]


def ips(message):
    return [r.payload.dottedQuad() for r in message.answers if r.type == dns.A]


def setup(jobs, fast=False, **options):
    """
    A view with shop/prod/web in each zone of ``jobs`` (``{zone: instances}``),
    Steering with ``options``, and a server on them.
    """
    view = StubView()
    steering = Steering(view, None, Clock(), **options)
    for zone, instances in jobs.items():
        view.set_job(zone, "shop", "prod", "web", instances)
    # One order of records (rotation is tested on its own): the lists below
    # are in the order the resolver gives them.
    factory, proto, wire, _ = servers(view, fast=fast, steering=steering, rotations=1)

    def ask(name, qtype=dns.SRV):
        return decode(exchange(proto, wire, query_bytes(name, qtype)))

    return view, steering, factory, proto, ask


def test_srv_records_carry_the_weight_of_each_instance_state():
    """
    A passing instance's SRV record has its passing weight; a warning one
    is left out by default.
    """
    _, _, _, _, ask = setup({"ams": [instance("10.0.0.1", weights=(10, 2)),
                                     instance("10.0.0.2", status="warning", weights=(10, 2))]})
    assert srv(ask(WEB)) == [(1, 10, 8080, "0a000001.addr.ams.glimpse.test")]


def test_serve_warning_serves_warning_instances_with_their_warning_weight():
    """
    With --serve-warning a warning instance is in the SRV and A answers,
    with its warning weight.
    """
    _, _, _, _, ask = setup({"ams": [instance("10.0.0.1", weights=(10, 2)),
                                     instance("10.0.0.2", status="warning", weights=(10, 2))]},
                            serve_warning=True)
    assert srv(ask(WEB)) == [(1, 10, 8080, "0a000001.addr.ams.glimpse.test"),
                             (1, 2, 8080, "0a000002.addr.ams.glimpse.test")]
    assert ips(ask(WEB, dns.A)) == ["10.0.0.1", "10.0.0.2"]


def test_a_job_in_panic_is_answered_with_every_instance_healthy_first():
    """
    Below --panic-threshold DNS answers every instance: the healthy ones
    at priority 1, the rest at priority 2 (A: the healthy IPs first); the
    answers given in panic are counted, fast-path hits included.
    """
    _, _, factory, proto, ask = setup(
        {"ams": [instance("10.0.0.3", status="critical"), instance("10.0.0.1"),
                 instance("10.0.0.2", status="critical")]},
        fast=True, panic_threshold=0.5)
    assert srv(ask(WEB)) == [(1, 1, 8080, "0a000001.addr.ams.glimpse.test"),
                             (2, 1, 8080, "0a000002.addr.ams.glimpse.test"),
                             (2, 1, 8080, "0a000003.addr.ams.glimpse.test")]
    assert ips(ask(WEB, dns.A)) == ["10.0.0.1", "10.0.0.2", "10.0.0.3"]
    ask(WEB)
    ask(WEB)
    proto.flush_stats()
    assert factory.stats.panic_answers == 4 and factory.stats.fast_hits == 2


def test_any_answers_the_local_zone_then_the_nearest_zone_that_has_instances():
    """
    ``...any`` answers the local zone's instances; when it has none, the
    next zone's, with its targets in that zone, for the negative TTL; the
    pinned name keeps meaning its zone (NODATA).
    """
    view, _, _, _, ask = setup({"ams": [instance("10.0.0.1")], "fra": [instance("10.1.0.1")]})
    r = ask(ANY)
    assert srv(r) == [(1, 1, 8080, "0a000001.addr.ams.glimpse.test")]
    assert {a.ttl for a in r.answers} == {5}
    view.set_job("ams", "shop", "prod", "web", [instance("10.0.0.1", status="critical")])
    r = ask(ANY)
    assert srv(r) == [(1, 1, 8080, "0a010001.addr.fra.glimpse.test")]
    assert {a.ttl for a in r.answers + r.additional} == {7}
    assert ask(ANY, dns.A).answers[0].ttl == 7
    pinned = ask(WEB)
    assert pinned.rCode == dns.OK and pinned.answers == [] and pinned.authority


def test_names_under_any():
    """
    The nodes under ``any`` exist when a zone has a job below them; a job
    or port no zone has, and a target named in ``any``, do not.
    """
    _, _, _, _, ask = setup({"ams": [instance("10.0.0.1")], "fra": [instance("10.1.0.1")]})
    for name in (b"any", b"shop.any", b"prod.shop.any", b"web.prod.shop.any"):
        r = ask(name + Z)
        assert (r.rCode, r.answers) == (dns.OK, []), name
    for name in (b"nope.any", b"admin.web.prod.shop.any", b"0a000001.addr.any"):
        assert ask(name + Z).rCode == dns.ENAME, name
    assert ask(ANY, dns.TXT).answers == []


def test_any_without_steering_is_an_unknown_zone():
    """
    A resolver built without steering rules knows no zone "any".
    """
    view = StubView()
    view.set_job("ams", "shop", "prod", "web", [instance("10.0.0.1")])
    _, proto, wire, _ = servers(view)
    assert decode(exchange(proto, wire, query_bytes(ANY))).rCode == dns.ENAME


def corpus():
    names = [ANY, ANY.upper(), WEB, b"http.web.prod.shop.fra" + Z, b"any" + Z,
             b"web.prod.shop.any" + Z, b"admin.web.prod.shop.any" + Z]
    types = [dns.SRV, dns.A, dns.AAAA, dns.ALL_RECORDS, dns.TXT]
    for i, (name, qtype, size) in enumerate(itertools.product(names, types, (None, 512, 1232))):
        yield query_bytes(name, qtype, id=i, edns=size)


def test_fast_path_answers_steered_names_byte_for_byte_like_twisted_names():
    """
    Failover, panic and weighted answers come out of the fast path (miss,
    hit and exact hit) exactly as out of twisted.names.
    """
    jobs = {"ams": [instance(f"10.0.0.{n}", status="critical", weights=(9, 3))
                    for n in range(1, 4)] + [instance("10.0.0.9", weights=(9, 3))],
            "fra": [instance(f"10.1.0.{n}", weights=(5, 1)) for n in range(1, 30)]}
    options = {"panic_threshold": 0.5, "failover_min": 2}
    _, _, _, slow, _ = setup(jobs, **options)
    _, _, _, fast, _ = setup(jobs, fast=True, **options)
    slow_wire, fast_wire = slow.transport, fast.transport
    for data in corpus():
        expected = exchange(slow, slow_wire, data)
        for _ in range(3):
            assert exchange(fast, fast_wire, data) == expected, decode(expected)


def test_kept_any_answers_follow_every_zone():
    """
    The fast path keeps an ``any`` answer until the job changes in any
    zone: the answering zone's change is seen at once, and so is the local
    zone's recovery.
    """
    view, _, factory, proto, ask = setup(
        {"ams": [instance("10.0.0.1", status="critical")], "fra": [instance("10.1.0.1")]},
        fast=True)
    assert ips(ask(ANY, dns.A)) == ["10.1.0.1"]
    ask(ANY, dns.A)
    proto.flush_stats()
    assert factory.stats.fast_hits == 1
    view.set_job("fra", "shop", "prod", "web", [instance("10.1.0.2")])
    assert ips(ask(ANY, dns.A)) == ["10.1.0.2"]
    view.set_job("ams", "shop", "prod", "web", [instance("10.0.0.1")])
    assert ips(ask(ANY, dns.A)) == ["10.0.0.1"]


def test_a_job_leaving_panic_on_the_clock_drops_its_kept_answers():
    """
    When the hold is over and the job leaves panic, the fast path answers
    with the healthy instances alone at once.
    """
    view = StubView()
    clock = Clock()
    steering = Steering(view, None, clock, panic_threshold=0.5, panic_hold=5)
    view.set_job("ams", "shop", "prod", "web",
                 [instance("10.0.0.1"), instance("10.0.0.2", status="critical"),
                  instance("10.0.0.3", status="critical")])
    _, proto, wire, _ = servers(view, fast=True, steering=steering)
    steering.start()
    assert len(srv(decode(exchange(proto, wire, query_bytes(WEB))))) == 3
    view.set_job("ams", "shop", "prod", "web",
                 [instance("10.0.0.1"), instance("10.0.0.2"),
                  instance("10.0.0.3", status="critical")])
    assert len(srv(decode(exchange(proto, wire, query_bytes(WEB))))) == 3
    clock.advance(6)
    assert [p for p, *_ in srv(decode(exchange(proto, wire, query_bytes(WEB))))] == [1, 1]
    steering.stop()
