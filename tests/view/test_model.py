"""
Tests for :obj:`glimpse.view.model`: instances built from Consul's health API.
"""

import copy

import pytest

from glimpse.view.model import Check, instance_from_entry, instances_from_health


def serf(status="passing"):
    """
    The node-level ``serfHealth`` check Consul attaches to every node.
    """
    return {
        "Node": "host-1", "CheckID": "serfHealth", "Name": "Serf Health Status",
        "Status": status, "Notes": "", "Output": "Agent alive and reachable",
        "ServiceID": "", "ServiceName": "", "ServiceTags": [], "Type": "",
        "Definition": {}, "CreateIndex": 10, "ModifyIndex": 10,
    }


def service_check(status="passing", sid="prov:shop--prod--web:web-1:http"):
    """
    A service-level TCP check as Glimpse registers it.
    """
    return {
        "Node": "host-1", "CheckID": f"{sid}:check0", "Name": "tcp 10.0.0.1:8080",
        "Status": status, "Notes": "", "Output": "TCP connect 10.0.0.1:8080: Success",
        "ServiceID": sid, "ServiceName": "shop--prod--web", "ServiceTags": ["http"],
        "Type": "tcp", "Definition": {}, "CreateIndex": 12, "ModifyIndex": 14,
    }


def entry(sid="prov:shop--prod--web:web-1:http", address="10.0.0.1", port=8080,
          checks=None, meta=None):
    """
    One entry of ``/v1/health/service/shop--prod--web`` as Consul 1.14
    returns it, for a registration Glimpse wrote.
    """
    return {
        "Node": {
            "ID": "1b4e28ba-2fa1-11d2-883f-0016d3cca427", "Node": "host-1",
            "Address": "192.168.1.5", "Datacenter": "ams",
            "TaggedAddresses": {"lan": "192.168.1.5", "wan": "192.168.1.5"},
            "Meta": {"consul-network-segment": ""}, "CreateIndex": 5, "ModifyIndex": 5,
        },
        "Service": {
            "ID": sid, "Service": "shop--prod--web", "Tags": ["http"],
            "Address": address,
            "Meta": meta if meta is not None else {
                "glimpse-provider": "prov", "glimpse-instance": "web-1",
                "glimpse-port": "http", "glimpse-hash": "0123456789abcdef",
                "version": "1.2.3",
            },
            "Port": port, "Weights": {"Passing": 1, "Warning": 1},
            "EnableTagOverride": False, "Datacenter": "ams",
            "CreateIndex": 12, "ModifyIndex": 12,
        },
        "Checks": checks if checks is not None else [serf(), service_check()],
    }


def test_instance_from_entry():
    """
    A Glimpse registration becomes an instance with its job, instance and
    port names, provider, node, IP and port, user meta (Glimpse's own keys
    left out), and checks, node checks first.
    """
    inst = instance_from_entry(entry())
    assert (inst.id, inst.product, inst.env, inst.job, inst.instance, inst.service) == (
        "prov:shop--prod--web:web-1:http", "shop", "prod", "web", "web-1", "http")
    assert (inst.provider, inst.node, inst.ip, inst.port) == ("prov", "host-1", "10.0.0.1", 8080)
    assert inst.meta == (("version", "1.2.3"),)
    assert inst.checks == (
        Check("serfHealth", "Serf Health Status", "", "passing",
              "Agent alive and reachable", True),
        Check("prov:shop--prod--web:web-1:http:check0", "tcp 10.0.0.1:8080", "tcp",
              "passing", "TCP connect 10.0.0.1:8080: Success", False),
    )
    assert inst.healthy
    assert not inst.drain


@pytest.mark.parametrize("checks", [
    [serf("critical"), service_check()],
    [serf(), service_check("critical")],
    [serf("warning"), service_check()],
    [serf(), service_check("warning")],
])
def test_any_failing_check_unhealthy(checks):
    """
    An instance is unhealthy when any of its checks, the node's included,
    is not passing; a warning counts as not passing.
    """
    assert not instance_from_entry(entry(checks=checks)).healthy


def test_no_checks_healthy():
    """
    An instance without checks at all is healthy.
    """
    assert instance_from_entry(entry(checks=[])).healthy


def test_draining_unhealthy():
    """
    A draining instance is not served even when all its checks pass.
    """
    e = entry()
    e["Service"]["Meta"]["glimpse-drain"] = "true"
    inst = instance_from_entry(e)
    assert inst.drain
    assert not inst.healthy


def test_address_falls_back_to_node():
    """
    A registration without its own address uses the node's.
    """
    assert instance_from_entry(entry(address="")).ip == "192.168.1.5"


@pytest.mark.parametrize(("name", "meta"), [
    ("consul", {}),
    ("web", {"glimpse-port": "http"}),
    ("shop--prod--web", {}),
    ("shop--prod--web", {"version": "1"}),
])
def test_foreign_services_ignored(name, meta):
    """
    Services Glimpse did not write (Consul's own, a name that is not a job,
    or without Glimpse's port name in Meta) are not instances.
    """
    e = entry(meta=meta)
    e["Service"]["Service"] = name
    assert instance_from_entry(e) is None


@pytest.mark.parametrize("damage", [
    lambda e: e.pop("Node"),
    lambda e: e["Service"].pop("Port"),
    lambda e: e["Service"].update(Port="http"),
    lambda e: e.update(Service=None),
    lambda e: e["Service"].update(Service=None),
    lambda e: e["Checks"].append({"Status": "passing"}),
])
def test_malformed_entry_ignored(damage):
    """
    A malformed entry is skipped rather than breaking the whole answer.
    """
    e = entry()
    damage(e)
    assert instance_from_entry(e) is None


def test_to_json():
    """
    The HTTP API shows an instance with its zone, health and checks.
    """
    shown = instance_from_entry(entry(checks=[serf("critical")])).to_json("ams")
    assert shown == {
        "id": "prov:shop--prod--web:web-1:http", "instance": "web-1", "service": "http",
        "host": "host-1", "node": "host-1", "ip": "10.0.0.1", "port": 8080, "zone": "ams",
        "provider": "prov", "meta": {"version": "1.2.3"}, "drain": False, "healthy": False,
        "weight": 1, "weights": {"passing": 1, "warning": 1},
        "checks": [{"id": "serfHealth", "name": "Serf Health Status", "type": "node",
                    "status": "critical", "output": "Agent alive and reachable",
                    "node_level": True}],
    }


@pytest.mark.parametrize(("weights", "expected"), [
    ({"Passing": 10, "Warning": 2}, (10, 2)),
    (None, (1, 1)),
    ({"Passing": 0, "Warning": True}, (1, 1)),
    ("heavy", (1, 1)),
])
def test_weights_are_read_back(weights, expected):
    """
    An instance carries its registration's Weights (Consul's default of 1
    and 1 when it has none, or none that is a weight).
    """
    e = entry()
    if weights is None:
        del e["Service"]["Weights"]
    else:
        e["Service"]["Weights"] = weights
    found = instance_from_entry(e)
    assert (found.weight_passing, found.weight_warning) == expected


@pytest.mark.parametrize(("statuses", "status", "weight"), [
    (("passing", "passing"), "passing", 10),
    (("passing", "warning"), "warning", 2),
    (("warning", "critical"), "critical", 2),
    (("passing", "maintenance"), "critical", 2),
])
def test_status_is_the_worst_check_and_sets_the_weight(statuses, status, weight):
    """
    An instance's status is its worst check's (the node's included), and
    its weight is that of its state: the passing weight while every check
    passes, the warning weight otherwise.
    """
    e = entry(checks=[serf(statuses[0]), service_check(statuses[1])])
    e["Service"]["Weights"] = {"Passing": 10, "Warning": 2}
    found = instance_from_entry(e)
    assert (found.status, found.weight) == (status, weight)
    assert found.to_json("ams")["weight"] == weight


def test_instances_from_health():
    """
    An answer's instances come sorted by node and ID whatever Consul's
    order, without the entries that are not Glimpse's, so equal topologies
    compare equal.
    """
    a = entry("prov:shop--prod--web:web-2:http")
    b = entry("prov:shop--prod--web:web-1:http")
    c = copy.deepcopy(b)
    c["Node"]["Node"] = "host-0"
    c["Service"]["ID"] = "prov:shop--prod--web:web-9:http"
    foreign = entry(meta={})
    first = instances_from_health([a, foreign, b, c])
    assert [(i.node, i.id) for i in first] == [
        ("host-0", "prov:shop--prod--web:web-9:http"),
        ("host-1", "prov:shop--prod--web:web-1:http"),
        ("host-1", "prov:shop--prod--web:web-2:http"),
    ]
    assert instances_from_health([c, b, a]) == first
    assert instances_from_health(None) == ()


def alias_check(status="passing", sid="prov:shop--prod--web:web-1:http", carrier="admin",
                output="All checks passing."):
    """
    The alias check Glimpse puts on a port that does not carry the
    instance's checks, as Consul's health API shows it (no definition).
    """
    return {
        "Node": "host-1", "CheckID": f"{sid}:alias:{carrier}",
        "Name": f"the instance's checks (run on port {carrier})", "Status": status,
        "Notes": "", "Output": output, "ServiceID": sid, "ServiceName": "shop--prod--web",
        "ServiceTags": ["http"], "Type": "alias", "Definition": {},
        "CreateIndex": 12, "ModifyIndex": 14,
    }


def port_entry(port_name, checks, instance="web-1", port=8080):
    """
    The entry of one named port of an instance.
    """
    sid = f"prov:shop--prod--web:{instance}:{port_name}"
    e = entry(sid, port=port, checks=checks)
    e["Service"]["Tags"] = [port_name]
    e["Service"]["Meta"].update({"glimpse-port": port_name, "glimpse-instance": instance})
    return e


def test_every_port_shows_the_checks_it_mirrors():
    """
    A port whose alias check mirrors the port carrying the instance's
    checks shows those checks, with their own status and output, in place
    of the alias (whose status may lag): the lookup shows the real checks
    on every port, and every port of the instance has the same health in
    one answer.
    """
    carrier = "prov:shop--prod--web:web-1:admin"
    failing = service_check("critical", sid=carrier)
    entries = [port_entry("admin", [serf(), failing], port=9090),
               port_entry("http", [serf(), alias_check("passing")]),
               port_entry("metrics", [serf(), alias_check(
                   "passing", sid="prov:shop--prod--web:web-1:metrics")], port=9100)]
    admin, http, metrics = instances_from_health(entries)
    assert admin.checks == http.checks == metrics.checks
    assert [c.id for c in http.checks] == ["serfHealth", f"{carrier}:check0"]
    assert http.checks[1].output == failing["Output"]
    assert not admin.healthy and not http.healthy and not metrics.healthy


def test_an_alias_without_its_carrier_stays_as_consul_has_it():
    """
    When the port carrying the checks is not in the answer (reaped, or not
    registered yet), the alias check is shown as Consul has it: critical,
    saying so; an instance written by an older Glimpse (every check copied
    onto every port) is shown as it is.
    """
    lost = alias_check("critical", output="Service prov:shop--prod--web:web-1:admin "
                       "could not be found on node host-1")
    (http,) = instances_from_health([port_entry("http", [serf(), lost])])
    assert [c.type for c in http.checks] == ["", "alias"] and not http.healthy
    old = [port_entry("admin", [serf(), service_check(sid="prov:shop--prod--web:web-1:admin")]),
           port_entry("http", [serf(), service_check("critical")])]
    admin, http = instances_from_health(old)
    assert admin.healthy and not http.healthy
    assert http.checks[1].id == "prov:shop--prod--web:web-1:http:check0"


def test_an_alias_mirrors_only_its_own_instance_on_its_own_node():
    """
    An alias check is resolved against the registration it names on the
    same node: the same instance name on another host is another instance.
    """
    carrier = port_entry("admin", [serf(), service_check(
        "critical", sid="prov:shop--prod--web:web-1:admin")])
    carrier["Node"]["Node"] = "host-2"
    (http, other) = instances_from_health([carrier, port_entry("http", [serf(), alias_check()])])
    assert other.node == "host-2" and not other.healthy
    assert http.healthy and http.checks[1].type == "alias"
