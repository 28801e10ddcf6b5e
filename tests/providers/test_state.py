"""
Tests for :obj:`glimpse.providers.state`: checking a provider's state and turning it into
Consul registrations.
"""

import copy
import json
from pathlib import Path

import jsonschema
import pytest

from glimpse.mapping import META_DRAIN, META_HASH, META_INSTANCE, META_PORT, META_PROVIDER
from glimpse.providers.files import config_services
from glimpse.providers.state import (
    InvalidState,
    NoSuchCheck,
    diff,
    instance_ref,
    registrations,
    service_id,
    ttl_check_ids,
    validate_state,
)


def web(instance="web-1", **extra):
    """
    A valid instance of shop/prod/web with two named ports.
    """
    inst = {
        "product": "shop",
        "env": "prod",
        "job": "web",
        "instance": instance,
        "address": "10.0.0.1",
        "ports": {"http": 8080, "admin": 9090},
    }
    inst.update(extra)
    return inst


FULL = {
    "instances": [
        web(
            checks=[
                {"http": "http://10.0.0.1:9090/health", "interval": "5s", "timeout": "1s",
                 "name": "health page"},
                {"tcp": "10.0.0.1:8080", "interval": "10s", "deregister_after": "1m30s"},
                {"ttl": "30s"},
            ],
            meta={"version": "1.2.3", "git_sha": "abc-def"},
            drain=False,
        ),
        {"product": "shop", "env": "prod", "job": "api", "instance": "api-1",
         "address": "2001:db8::1", "ports": {"grpc": 50051}},
    ]
}


def problems(body):
    """
    The problems ``validate_state`` reports for ``body``, as a dict of
    JSON path to message.
    """
    with pytest.raises(InvalidState) as raised:
        validate_state(body)
    return dict(raised.value.problems)


def test_valid_full_example():
    """
    A state using every feature is accepted and comes back normalised:
    instances sorted by product/env/job/instance, ports and meta sorted,
    defaults (no checks, no meta, not draining) filled in.
    """
    state = validate_state(copy.deepcopy(FULL))
    assert [i["instance"] for i in state["instances"]] == ["api-1", "web-1"]
    api, web1 = state["instances"]
    assert api == {
        "product": "shop", "env": "prod", "job": "api", "instance": "api-1",
        "address": "2001:db8::1", "ports": {"grpc": 50051}, "checks": [], "meta": {},
        "drain": False,
    }
    assert list(web1["ports"]) == ["admin", "http"]
    assert list(web1["meta"]) == ["git_sha", "version"]
    assert len(web1["checks"]) == 3


def test_normalised_address():
    """
    An IP address is stored in its canonical spelling.
    """
    state = validate_state({"instances": [web(address="2001:DB8:0::1")]})
    assert state["instances"][0]["address"] == "2001:db8::1"


def test_address_optional():
    """
    An instance without an address is valid (Consul uses the node's).
    """
    inst = web()
    del inst["address"]
    assert "address" not in validate_state({"instances": [inst]})["instances"][0]


def test_empty_state_valid():
    """
    An empty list of instances is a valid state: it removes everything.
    """
    assert validate_state({"instances": []}) == {"instances": []}


def test_every_problem_at_once():
    """
    Every problem of a state is reported together, each with its JSON path,
    so a provider can fix them all in one go.
    """
    body = {
        "instances": [
            web(job="we_b", ports={"http": 0}, extra=1),
            {"product": "shop", "env": "prod", "job": "db", "ports": {}},
        ],
        "version": 2,
    }
    found = problems(body)
    assert set(found) == {
        "$.version",
        "$.instances[0].extra",
        "$.instances[0].job",
        "$.instances[0].ports.http",
        "$.instances[1].instance",
        "$.instances[1].ports",
    }
    assert found["$.instances[1].instance"] == "missing"
    assert found["$.version"] == "unknown key; the state has only 'instances'"


def test_invalid_state_reports():
    """
    The exception reads as one line per problem and serialises for the API.
    """
    with pytest.raises(InvalidState) as raised:
        validate_state({"instances": "all"})
    assert str(raised.value) == (
        "$.instances: missing or not a list (an empty list removes everything)")
    assert raised.value.to_json() == [{
        "path": "$.instances",
        "problem": "missing or not a list (an empty list removes everything)"}]


@pytest.mark.parametrize("body", [[], "x", None])
def test_state_not_object(body):
    """
    A state that is not a JSON object is refused with an example of one.
    """
    assert problems(body) == {"$": "the state is an object: {\"instances\": [...]}"}


def test_instance_not_object():
    """
    An instance that is not an object is reported at its index.
    """
    assert problems({"instances": [web(), "web-2"]}) == {
        "$.instances[1]": "an instance is an object"}


def test_duplicate_instances():
    """
    The same instance of the same job twice is refused, naming the earlier
    one; the same instance name in another job is fine.
    """
    body = {"instances": [web(), web(job="api"), web()]}
    assert problems(body) == {
        "$.instances[2]": "instance 'web-1' of shop/prod/web is also $.instances[0]"}


@pytest.mark.parametrize("port", [0, 65536, -1, True, False, "8080", 80.0, None])
def test_bad_ports(port):
    """
    A port is an integer from 1 to 65535; booleans, strings and floats are
    not ports.
    """
    assert problems({"instances": [web(ports={"http": port})]}) == {
        "$.instances[0].ports.http": f"{port!r} is not a port number (1-65535)"}


@pytest.mark.parametrize("port", [1, 65535])
def test_port_bounds(port):
    """
    Ports 1 and 65535 are valid.
    """
    assert validate_state({"instances": [web(ports={"http": port})]})


@pytest.mark.parametrize("ports", [None, {}, [8080]])
def test_ports_required(ports):
    """
    An instance needs at least one named port; the message shows one.
    """
    assert problems({"instances": [web(ports=ports)]}) == {
        "$.instances[0].ports": "give at least one named port, e.g. {\"http\": 8080}"}


def test_port_name_is_label():
    """
    A port name is a DNS label: it becomes the first label of an address.
    """
    found = problems({"instances": [web(ports={"HTTP": 80})]})
    assert "is not a DNS label" in found["$.instances[0].ports.HTTP"]


def test_bad_address():
    """
    An address that is not an IP is refused.
    """
    assert problems({"instances": [web(address="web.local")]}) == {
        "$.instances[0].address": "'web.local' is not an IPv4 or IPv6 address"}


@pytest.mark.parametrize("check", [
    {"http": "https://10.0.0.1/health", "interval": "5s"},
    {"tcp": "[2001:db8::1]:80", "interval": "500ms"},
    {"ttl": "1m30s"},
    {"ttl": "1.5h", "name": "heartbeat", "deregister_after": "10m"},
])
def test_good_checks(check):
    """
    HTTP, TCP and TTL checks in their documented shapes are accepted.
    """
    assert validate_state({"instances": [web(checks=[check])]})


@pytest.mark.parametrize(("check", "path", "message"), [
    ({"http": "ftp://10.0.0.1/", "interval": "5s"}, "http",
     "'ftp://10.0.0.1/' is not an http:// or https:// URL"),
    ({"http": "http:///health", "interval": "5s"}, "http",
     "'http:///health' is not an http:// or https:// URL"),
    ({"tcp": "10.0.0.1", "interval": "5s"}, "tcp", "'10.0.0.1' is not host:port"),
    ({"tcp": "10.0.0.1:0", "interval": "5s"}, "tcp", "'10.0.0.1:0' is not host:port"),
    ({"tcp": "10.0.0.1:70000", "interval": "5s"}, "tcp", "'10.0.0.1:70000' is not host:port"),
    ({"tcp": 80, "interval": "5s"}, "tcp", "80 is not host:port"),
    ({"http": "http://10.0.0.1/"}, "interval", "a http check needs an interval, e.g. '10s'"),
    ({"tcp": "10.0.0.1:80"}, "interval", "a tcp check needs an interval, e.g. '10s'"),
    ({"ttl": "30"}, "ttl", "'30' is not a duration: write e.g. '10s', '500ms' or '1m30s'"),
    ({"ttl": "0s"}, "ttl", "a duration must be more than zero"),
    ({"tcp": "10.0.0.1:80", "interval": 5}, "interval",
     "5 is not a duration: write e.g. '10s', '500ms' or '1m30s'"),
    ({"tcp": "10.0.0.1:80", "interval": "5s", "timeout": "soon"}, "timeout",
     "'soon' is not a duration: write e.g. '10s', '500ms' or '1m30s'"),
    ({"ttl": "5s", "deregister_after": "0m0s"}, "deregister_after",
     "a duration must be more than zero"),
    ({"ttl": "5s", "name": 3}, "name", "a check's name is a string"),
    ({"ttl": "5s", "script": "/bin/true"}, "script",
     "unknown key; a check has deregister_after, grpc, http, interval, name, tcp, timeout, ttl"),
])
def test_bad_checks(check, path, message):
    """
    Each malformed part of a check is reported at its own path with what
    to write instead.
    """
    assert problems({"instances": [web(checks=[check])]}) == {
        f"$.instances[0].checks[0].{path}": message}


@pytest.mark.parametrize("check", [
    {"interval": "5s"},
    {"http": "http://10.0.0.1/", "ttl": "5s", "interval": "5s"},
])
def test_check_needs_one_kind(check):
    """
    A check has exactly one of http, tcp, ttl and grpc.
    """
    assert problems({"instances": [web(checks=[check])]}) == {
        "$.instances[0].checks[0]": "a check has exactly one of 'http', 'tcp', 'ttl' or 'grpc'"}


def test_check_shapes():
    """
    Checks must be a list of objects.
    """
    assert problems({"instances": [web(checks={"ttl": "5s"})]}) == {
        "$.instances[0].checks": "checks is a list"}
    assert "a check is an object" in problems(
        {"instances": [web(checks=["ttl"])]})["$.instances[0].checks[0]"]


@pytest.mark.parametrize("key", ["glimpse-port", "consul-version", "bad key", "", "k" * 129])
def test_bad_meta_keys(key):
    """
    Meta keys are 1-128 of letters, digits, ``_`` and ``-``, and may not take
    Glimpse's or Consul's own prefixes.
    """
    found = problems({"instances": [web(meta={key: "x"})]})
    assert found == {f"$.instances[0].meta.{key}": (
        "keys are 1-128 of A-Z a-z 0-9 _ -, not starting with 'glimpse-' or 'consul-'")}


@pytest.mark.parametrize("value", [1, None, "v" * 513])
def test_bad_meta_values(value):
    """
    Meta values are strings of at most 512 characters.
    """
    assert problems({"instances": [web(meta={"version": value})]}) == {
        "$.instances[0].meta.version": "values are strings of at most 512 characters"}


def test_meta_limits():
    """
    At most 58 meta keys are allowed (Consul's 64 less Glimpse's own six), and
    meta is an object.
    """
    assert validate_state({"instances": [web(meta={f"k{i}": "v" for i in range(58)})]})
    assert problems({"instances": [web(meta={f"k{i}": "v" for i in range(59)})]}) == {
        "$.instances[0].meta": "at most 58 keys"}
    assert problems({"instances": [web(meta=["version"])]}) == {
        "$.instances[0].meta": "meta is an object of strings"}


def test_drain_is_boolean():
    """
    ``drain`` is true or false, not a string.
    """
    assert problems({"instances": [web(drain="yes")]}) == {
        "$.instances[0].drain": "drain is true or false"}


def test_unknown_instance_key():
    """
    An unknown key in an instance is reported with the keys there are.
    """
    assert problems({"instances": [web(host="h1")]}) == {"$.instances[0].host": (
        "unknown key; an instance has address, checks, drain, env, instance, "
        "job, meta, ports, product, weight")}


# Registrations


def test_one_registration_per_named_port():
    """
    Each (instance, named port) becomes one Consul registration, named after
    the job, tagged with the port name, with the instance's address and
    port; its ID starts with the provider's name.
    """
    regs = registrations("prov", validate_state(copy.deepcopy(FULL)))
    assert sorted(regs) == [
        "prov:shop--prod--api:api-1:grpc",
        "prov:shop--prod--web:web-1:admin",
        "prov:shop--prod--web:web-1:http",
    ]
    http = regs["prov:shop--prod--web:web-1:http"]
    assert http["ID"] == service_id("prov", web(), "http")
    assert http["ID"].startswith("prov:")
    assert http["Name"] == "shop--prod--web"
    assert http["Tags"] == ["http"]
    assert http["Port"] == 8080
    assert http["Address"] == "10.0.0.1"
    assert regs["prov:shop--prod--web:web-1:admin"]["Port"] == 9090


def test_registration_meta():
    """
    A registration's Meta carries the provider, instance and port name, the
    instance's own meta, and a short hash.
    """
    regs = registrations("prov", validate_state(copy.deepcopy(FULL)))
    meta = regs["prov:shop--prod--web:web-1:http"]["Meta"]
    assert meta[META_PROVIDER] == "prov"
    assert meta[META_INSTANCE] == "web-1"
    assert meta[META_PORT] == "http"
    assert meta["version"] == "1.2.3"
    assert len(meta[META_HASH]) == 16
    assert META_DRAIN not in meta


def test_drain_marked_in_meta():
    """
    A draining instance's registrations say so in their Meta.
    """
    regs = registrations("prov", validate_state({"instances": [web(drain=True)]}))
    assert {r["Meta"][META_DRAIN] for r in regs.values()} == {"true"}


def test_checks_run_once_per_instance():
    """
    An instance's checks are registered once, on its first named port in
    sorted order (``admin`` before ``http``), with Consul's field names; each
    other port gets one alias check of that registration, so every check
    runs once per interval and every port has the same status.
    """
    regs = registrations("prov", validate_state(copy.deepcopy(FULL)))
    admin = "prov:shop--prod--web:web-1:admin"
    assert regs[admin]["Checks"] == [
        {"CheckID": f"{admin}:check0", "Name": "health page",
         "HTTP": "http://10.0.0.1:9090/health", "Interval": "5s", "Timeout": "1s"},
        {"CheckID": f"{admin}:check1", "Name": "tcp 10.0.0.1:8080",
         "TCP": "10.0.0.1:8080", "Interval": "10s",
         "DeregisterCriticalServiceAfter": "1m30s"},
        {"CheckID": f"{admin}:check2", "Name": "ttl 30s", "TTL": "30s"},
    ]
    http = "prov:shop--prod--web:web-1:http"
    assert regs[http]["Checks"] == [
        {"CheckID": f"{http}:alias:admin", "Name": "the instance's checks (run on port admin)",
         "AliasService": admin, "DeregisterCriticalServiceAfter": "1m30s"}]


def test_every_other_port_aliases_the_first():
    """
    With three ports, the two that do not carry the checks each alias the
    first; an alias is reaped after the shortest ``deregister_after`` of the
    instance's checks (none without one), and an instance without checks
    has no check on any port.
    """
    checks = [{"ttl": "1h", "deregister_after": "10m"},
              {"tcp": "10.0.0.1:1", "interval": "5s", "deregister_after": "90s"}]
    state = validate_state({"instances": [
        web(ports={"http": 80, "admin": 81, "metrics": 82}, checks=checks),
        web("web-2", ports={"http": 80, "admin": 81}, checks=[{"ttl": "1h"}]),
        web("web-3", ports={"http": 80, "admin": 81})]})
    regs = registrations("prov", state)
    carrier = "prov:shop--prod--web:web-1:admin"
    assert [c["CheckID"] for c in regs[carrier]["Checks"]] == [
        f"{carrier}:check0", f"{carrier}:check1"]
    for port in ("http", "metrics"):
        (alias,) = regs[f"prov:shop--prod--web:web-1:{port}"]["Checks"]
        assert alias["AliasService"] == carrier
        assert alias["DeregisterCriticalServiceAfter"] == "90s"
    (alias,) = regs["prov:shop--prod--web:web-2:http"]["Checks"]
    assert "DeregisterCriticalServiceAfter" not in alias
    assert regs["prov:shop--prod--web:web-3:http"]["Checks"] == []
    assert regs["prov:shop--prod--web:web-3:admin"]["Checks"] == []


def test_upgrade_rewrites_only_the_ports_that_alias():
    """
    Registrations an older Glimpse wrote (every check copied onto every
    port) are replaced on the next apply where the layout differs: the port
    carrying the checks is unchanged, so its checks keep their status; the
    other ports' hashes differ, so they are re-registered with their alias
    (and without the old copies: Glimpse registers with
    replace-existing-checks).  The hashes are those Glimpse 0.1 wrote.
    """
    state = {"instances": [web(checks=[{"http": "http://10.0.0.1:9090/health",
                                        "interval": "5s", "name": "health page"},
                                       {"ttl": "30s"}])]}
    assert hash_of(state, sid="prov:shop--prod--web:web-1:admin") == "991cd65fa54ae950"
    assert hash_of(state, sid="prov:shop--prod--web:web-1:http") != "6a52634ac0431c7c"
    old = {"prov:shop--prod--web:web-1:admin": {"Meta": {META_HASH: "991cd65fa54ae950"}},
           "prov:shop--prod--web:web-1:http": {"Meta": {META_HASH: "6a52634ac0431c7c"}}}
    desired = registrations("prov", validate_state(state))
    assert diff(desired, old) == ([], ["prov:shop--prod--web:web-1:http"], [],
                                  ["prov:shop--prod--web:web-1:admin"])


def hash_of(state, provider="prov", sid="prov:shop--prod--web:web-1:http"):
    """
    The Meta hash of one registration of a state.
    """
    return registrations(provider, validate_state(state))[sid]["Meta"][META_HASH]


def test_hash_stable():
    """
    The same state gives the same hash every time, whatever the order of
    its keys.
    """
    reordered = {"instances": [dict(reversed(list(web().items())))]}
    assert hash_of({"instances": [web()]}) == hash_of(reordered)


@pytest.mark.parametrize("change", [
    {"address": "10.0.0.2"},
    {"ports": {"http": 8081, "admin": 9090}},
    {"meta": {"version": "2"}},
    {"checks": [{"ttl": "30s"}]},
    {"drain": True},
])
def test_hash_changes_with_anything(change):
    """
    Changing anything about a registration changes its hash, so the next
    apply re-registers it.
    """
    assert hash_of({"instances": [web()]}) != hash_of({"instances": [web(**change)]})


def test_hash_ignores_other_ports():
    """
    Changing one port leaves the other port's registration hash alone.
    """
    before = hash_of({"instances": [web()]})
    after = hash_of({"instances": [web(ports={"http": 8080, "admin": 9999})]})
    assert before == after


def test_hash_changes_with_provider():
    """
    The provider is part of the registration, so of its hash.
    """
    assert hash_of({"instances": [web()]}) != hash_of(
        {"instances": [web()]}, provider="other", sid="other:shop--prod--web:web-1:http")


def test_diff():
    """
    Against the agent's services, registrations split into new, changed,
    gone and unchanged; a current service without a hash counts as changed.
    """
    desired = registrations("prov", validate_state({"instances": [
        web(), web("web-2", ports={"http": 8080}), web("web-3", ports={"http": 8080})]}))
    current = {
        "prov:shop--prod--web:web-1:http": desired["prov:shop--prod--web:web-1:http"],
        "prov:shop--prod--web:web-1:admin": {"Meta": {META_HASH: "0" * 16}},
        "prov:shop--prod--web:web-2:http": {"Meta": None},
        "prov:shop--prod--web:old-1:http": {"Meta": {}},
    }
    assert diff(desired, current) == (
        ["prov:shop--prod--web:web-3:http"],
        ["prov:shop--prod--web:web-1:admin", "prov:shop--prod--web:web-2:http"],
        ["prov:shop--prod--web:old-1:http"],
        ["prov:shop--prod--web:web-1:http"],
    )


def test_diff_nothing_to_do():
    """
    Applying the registrations the agent already has changes nothing.
    """
    desired = registrations("prov", validate_state(copy.deepcopy(FULL)))
    assert diff(desired, copy.deepcopy(desired)) == ([], [], [], sorted(desired))


# The JSON Schema, grpc checks, the config-file rendering and TTL check names.

REPO = Path(__file__).resolve().parents[2]
SCHEMA = json.loads((REPO / "glimpse" / "schema" / "provider-state.json").read_text())
EXAMPLE = json.loads((REPO / "etc" / "examples" / "provider-state.json").read_text())


def schema_accepts(document):
    """
    Whether the published JSON Schema accepts ``document``.
    """
    validator = jsonschema.Draft202012Validator(
        SCHEMA, format_checker=jsonschema.Draft202012Validator.FORMAT_CHECKER)
    return validator.is_valid(document)


def test_published_schema_is_the_package_one():
    """
    docs/provider-state.schema.json is the schema the OpenAPI document
    embeds (glimpse/schema/provider-state.json), and a valid JSON Schema.
    """
    assert json.loads((REPO / "docs" / "provider-state.schema.json").read_text()) == SCHEMA
    jsonschema.Draft202012Validator.check_schema(SCHEMA)


@pytest.mark.parametrize("document", [EXAMPLE, FULL, {"instances": []}])
def test_schema_and_validator_accept_the_same_valid_states(document):
    """
    The shipped example and the full test state pass both the schema and
    Glimpse's validator.
    """
    assert schema_accepts(document)
    validate_state(copy.deepcopy(document))


@pytest.mark.parametrize("instance", [
    web(ports={}), web(ports={"http": 0}), web(ports={"Bad": 80}), web(product="a--b"),
    web(product="addr"), web(address="10.0.0.999"), web(drain="yes"),
    web(checks=[{"tcp": "10.0.0.1:80"}]), web(checks=[{"ttl": "5s", "http": "http://x/"}]),
    web(checks=[{"grpc": "nope", "interval": "5s"}]), web(checks=[{"ttl": "5 s"}]),
    web(meta={"glimpse-x": "1"}), web(meta={"k": 1}), web(colour="red"),
])
def test_schema_and_validator_reject_the_same_mistakes(instance):
    """
    A mistake Glimpse's validator rejects is rejected by the published
    schema too, so a provider checking against the schema is not surprised.
    """
    document = {"instances": [instance]}
    assert not schema_accepts(document)
    with pytest.raises(InvalidState):
        validate_state(document)


def test_grpc_check_registration():
    """
    A grpc check becomes Consul's GRPC check with its interval and timeout,
    and a malformed target says what to write.
    """
    state = validate_state({"instances": [web(checks=[
        {"grpc": "10.0.0.1:50051/shop.Api", "interval": "10s", "timeout": "2s"}])]})
    regs = registrations("prov", state)
    check = regs["prov:shop--prod--web:web-1:admin"]["Checks"][0]
    assert check == {"CheckID": "prov:shop--prod--web:web-1:admin:check0",
                     "Name": "grpc 10.0.0.1:50051/shop.Api", "GRPC": "10.0.0.1:50051/shop.Api",
                     "Interval": "10s", "Timeout": "2s"}
    assert problems({"instances": [web(checks=[{"grpc": "x", "interval": "1s"}])]}) == {
        "$.instances[0].checks[0].grpc": "'x' is not host:port or host:port/service"}


def test_config_file_rendering_matches_http_registrations():
    """
    The file path writes the same registrations as the HTTP path, in the
    config file's spelling, marked as the file path's.
    """
    state = validate_state(copy.deepcopy(FULL))
    rendered = config_services("prov", state)["services"]
    api = {s["ID"]: s for s in registrations("prov", state, source="file").values()}
    assert [s["id"] for s in rendered] == sorted(api)
    first = rendered[0]
    assert first["meta"]["glimpse-source"] == "file"
    assert first["name"] == api[first["id"]]["Name"]
    web_admin = next(s for s in rendered if s["id"] == "prov:shop--prod--web:web-1:admin")
    assert web_admin["checks"][1]["deregister_critical_service_after"] == "1m30s"
    web_http = next(s for s in rendered if s["id"] == "prov:shop--prod--web:web-1:http")
    assert web_http["checks"] == [{
        "id": "prov:shop--prod--web:web-1:http:alias:admin",
        "name": "the instance's checks (run on port admin)",
        "alias_service": "prov:shop--prod--web:web-1:admin",
        "deregister_critical_service_after": "1m30s"}]
    for service in rendered:
        spelled = api[service["id"]]
        assert len(service["checks"]) == len(spelled["Checks"])
        assert service["port"] == spelled["Port"] and service["meta"] == spelled["Meta"]
    assert "glimpse-source" not in registrations("prov", state)[first["id"]]["Meta"]


def test_ttl_check_names():
    """
    A TTL check is named by instance (``<instance>.<job>.<env>.<product>``
    or its bare name) and check (its name or ``check<N>``); it maps to the
    one Consul check that runs, on the port carrying the instance's checks.
    """
    state = validate_state(copy.deepcopy(FULL))
    web1 = state["instances"][1]
    assert instance_ref(web1) == "web-1.web.prod.shop"
    expected = ["prov:shop--prod--web:web-1:admin:check2"]
    assert ttl_check_ids("prov", state, "web-1.web.prod.shop", "check2") == expected
    assert ttl_check_ids("prov", state, "web-1", "check2") == expected
    with pytest.raises(NoSuchCheck) as e:
        ttl_check_ids("prov", state, "web-1", "health page")
    assert e.value.status == 409
