"""
Tests for :obj:`glimpse.view.serving`: which instances DNS serves, in which
SRV priority and with which weight; the counts panic and failover compare;
meta filters.
"""

import pytest

from glimpse.view.model import Check, Instance
from glimpse.view.serving import (
    health_counts,
    is_serving,
    matching,
    meta_mismatch,
    served,
    serving_count,
)


def inst(ip, status="passing", service="http", port=8080, drain=False, weights=(1, 1),
         name=None, meta=()):
    """
    An instance of shop/prod/web with one check in ``status``.
    """
    name = name or ip
    check = Check(id=f"{name}:c", name="c", type="ttl", status=status, output="",
                  node_level=False)
    return Instance(id=f"p:{name}:{service}", product="shop", env="prod", job="web",
                    instance=name, service=service, provider="p", node="n1", ip=ip, port=port,
                    checks=(check,), drain=drain, weight_passing=weights[0],
                    weight_warning=weights[1], meta=tuple(sorted(meta)))


def shape(answer):
    """
    ``[(ip, priority, weight)]`` of what DNS serves.
    """
    return [(s.ip, s.priority, s.weight) for s in answer]


JOB = [inst("10.0.0.3", weights=(10, 2)), inst("10.0.0.1", "warning", weights=(10, 2)),
       inst("10.0.0.2", "critical", weights=(10, 2)), inst("10.0.0.4", drain=True),
       inst("10.0.0.5", service="admin")]


def test_by_default_only_passing_instances_are_served_with_their_passing_weight():
    """
    A passing instance is served at priority 1 with its passing weight; a
    warning, a critical or a draining instance, or another port's, is not.
    """
    assert shape(served(JOB, "http")) == [("10.0.0.3", 1, 10)]


def test_serve_warning_serves_warning_instances_with_their_warning_weight():
    """
    With --serve-warning a warning instance is served too, with its warning
    weight, in the same priority as the passing ones.
    """
    assert shape(served(JOB, "http", serve_warning=True)) == [
        ("10.0.0.1", 1, 2), ("10.0.0.3", 1, 10)]


def test_in_panic_every_instance_but_draining_ones_is_served_healthy_first():
    """
    In panic the serving instances come at priority 1, every other one
    that is not draining at priority 2 with its warning weight.
    """
    assert shape(served(JOB, "http", panic=True)) == [
        ("10.0.0.3", 1, 10), ("10.0.0.1", 2, 2), ("10.0.0.2", 2, 2)]
    assert shape(served(JOB, "http", serve_warning=True, panic=True)) == [
        ("10.0.0.1", 1, 2), ("10.0.0.3", 1, 10), ("10.0.0.2", 2, 2)]


def test_one_answer_per_address_and_port():
    """
    Two registrations with the same IP and port are served once.
    """
    twice = [inst("10.0.0.1", name="a"), inst("10.0.0.1", name="b")]
    assert shape(served(twice, "http")) == [("10.0.0.1", 1, 1)]
    assert serving_count(twice, "http") == 1


def test_served_once_each_sorted_by_ip_then_port_ipv4_first():
    """
    DNS serves only the instances of the asked port that pass every check
    and are not draining, each (ip, port) once, sorted by IP then port with
    IPv4 before IPv6.
    """
    good = [inst("10.0.0.10"), inst("10.0.0.9", port=81), inst("10.0.0.9", port=80),
            inst("2001:db8::1")]
    others = [
        inst("10.0.0.20", status="critical"),
        inst("10.0.0.21", status="warning"),
        inst("10.0.0.22", drain=True),
        inst("10.0.0.23", service="admin"),
        inst("10.0.0.10", name="duplicate"),
    ]
    answer = [s.instance for s in served(others + good, "http")]
    assert [(i.ip, i.port) for i in answer] == [
        ("10.0.0.9", 80), ("10.0.0.9", 81), ("10.0.0.10", 8080), ("2001:db8::1", 8080)]


def test_nothing_is_served_without_a_healthy_instance():
    """
    With no healthy instance there is nothing to serve.
    """
    assert served([inst("10.0.0.1", status="critical")], "http") == []


@pytest.mark.parametrize(("instance", "serve_warning", "expected"), [
    (inst("1.1.1.1"), False, True),
    (inst("1.1.1.1", "warning"), False, False),
    (inst("1.1.1.1", "warning"), True, True),
    (inst("1.1.1.1", "critical"), True, False),
    (inst("1.1.1.1", drain=True), True, False),
])
def test_is_serving(instance, serve_warning, expected):
    """
    Serving: not draining, and passing (or warning with --serve-warning).
    """
    assert is_serving(instance, serve_warning) is expected


def test_health_counts_count_instances_not_ports_and_leave_draining_out():
    """
    Panic counts instances (an instance is healthy when every one of its
    named ports is); draining instances count neither way.
    """
    instances = [inst("10.0.0.1", name="a"), inst("10.0.0.1", name="a", service="admin"),
                 inst("10.0.0.2", name="b"), inst("10.0.0.2", "critical", name="b",
                                                  service="admin"),
                 inst("10.0.0.3", "warning", name="c"), inst("10.0.0.4", drain=True, name="d")]
    assert health_counts(instances) == (1, 3)
    assert health_counts(instances, serve_warning=True) == (2, 3)
    assert health_counts([]) == (0, 0)


def test_meta_filters_need_every_pair():
    """
    A meta filter keeps the instances whose meta has every (key, value),
    and says why another does not match.
    """
    canary = inst("10.0.0.1", meta=[("version", "2"), ("track", "canary")])
    stable = inst("10.0.0.2", meta=[("version", "1")])
    assert matching([canary, stable], (("version", "2"),)) == [canary]
    assert matching([canary, stable], (("track", "canary"), ("version", "2"))) == [canary]
    assert matching([canary, stable], ()) == [canary, stable]
    assert meta_mismatch(stable, (("version", "2"),)) == "its meta version is '1', not '2'"
    assert meta_mismatch(stable, (("track", "canary"),)) == (
        "its meta has no 'track' (?meta.track=canary)")
