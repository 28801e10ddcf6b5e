"""
A provider's state: the full set of instances it runs on this host.
Validation and the mapping onto Consul registrations.  Pure: no I/O.

Validation collects every problem with its JSON path, so a provider can fix
all of them at once; a state with any problem is rejected whole.
"""

import ipaddress
import re
from collections.abc import Mapping
from typing import Any
from urllib.parse import urlsplit

import attrs

from glimpse.address import label_problem
from glimpse.duration import InvalidDuration, parse_duration
from glimpse.mapping import (
    CONSUL_META_PREFIX,
    DRAINING,
    META_DRAIN,
    META_HASH,
    META_INSTANCE,
    META_PORT,
    META_PREFIX,
    META_PROVIDER,
    META_SOURCE,
    OWN_META_KEYS,
    check_id,
    checks_port,
    consul_service_name,
    fingerprint,
    port_tags,
    registration_hash,
    registration_id,
)
from glimpse.providers.checks import CHECK_KINDS, port_checks
from glimpse.providers.weights import normal_weight, registration_weights, weight_problems

_META_KEY = re.compile(r"^[A-Za-z0-9_-]{1,128}$")
_INSTANCE_KEYS = {"product", "env", "job", "instance", "address", "ports", "checks", "meta",
                  "drain", "weight"}
_CHECK_KEYS = {"http", "tcp", "ttl", "grpc", "interval", "timeout", "deregister_after", "name"}
#: Consul allows 64 meta keys; Glimpse's own take some of them.
_MAX_PROVIDER_META = 64 - len(OWN_META_KEYS)
MAX_INSTANCES = 10000

#: A validated state, or a Consul registration: decoded JSON.
Document = dict[str, Any]
#: ``(json_path, message)`` pairs.
Problems = list[tuple[str, str]]


@attrs.define
class InvalidState(Exception):
    """
    A state with problems.

    :ivar problems: ``[(json_path, message), ...]``.
    """

    problems: Problems

    def __str__(self) -> str:
        return "; ".join(f"{path}: {message}" for path, message in self.problems)

    def to_json(self) -> list[dict[str, str]]:
        """
        The problems as the HTTP API and the CLI report them.

        :return: ``[{"path": ..., "problem": ...}, ...]``.
        """
        return [{"path": path, "problem": message} for path, message in self.problems]


def _duration_problem(value: object) -> str | None:
    if not isinstance(value, str):
        return f"{value!r} is not a duration: write e.g. '10s', '500ms' or '1m30s'"
    try:
        total = parse_duration(value)
    except InvalidDuration as e:
        return str(e)
    if total <= 0:
        return "a duration must be more than zero"
    # Consul (Go's time.ParseDuration) refuses what overflows int64 ns.
    if len(value) > 32 or total > 366 * 86400:
        return f"{value!r} is too long: at most a year, e.g. '24h'"
    return None


def _validate_check(check: object, path: str, problems: Problems) -> None:
    if not isinstance(check, dict):
        problems.append((path, "a check is an object, e.g. "
                         "{\"tcp\": \"10.0.0.1:80\", \"interval\": \"5s\"}"))
        return
    for key in sorted(set(check) - _CHECK_KEYS):
        problems.append((f"{path}.{key}",
                         f"unknown key; a check has {', '.join(sorted(_CHECK_KEYS))}"))
    kinds = [k for k in CHECK_KINDS if k in check]
    if len(kinds) != 1:
        problems.append((path, "a check has exactly one of 'http', 'tcp', 'ttl' or 'grpc'"))
        return
    kind = kinds[0]
    value = check[kind]
    if kind == "http":
        try:
            parts = urlsplit(value) if isinstance(value, str) else None
        except ValueError:  # e.g. an unbalanced '[' in the host
            parts = None
        if parts is None or parts.scheme not in ("http", "https") or not parts.netloc:
            problems.append((f"{path}.http", f"{value!r} is not an http:// or https:// URL"))
    elif kind in ("tcp", "grpc"):
        target = value.split("/", 1)[0] if kind == "grpc" and isinstance(value, str) else value
        host, _, port = target.rpartition(":") if isinstance(target, str) else ("", "", "")
        if not host or not port.isdigit() or not 0 < int(port) < 65536:
            shape = "host:port or host:port/service" if kind == "grpc" else "host:port"
            problems.append((f"{path}.{kind}", f"{value!r} is not {shape}"))
    else:
        problem = _duration_problem(value)
        if problem:
            problems.append((f"{path}.ttl", problem))
    if kind != "ttl" and "interval" not in check:
        problems.append((f"{path}.interval", f"a {kind} check needs an interval, e.g. '10s'"))
    for key in ("interval", "timeout", "deregister_after"):
        if key in check:
            problem = _duration_problem(check[key])
            if problem:
                problems.append((f"{path}.{key}", problem))
    if "name" in check and not isinstance(check["name"], str):
        problems.append((f"{path}.name", "a check's name is a string"))


def _validate_instance(
    inst: object, path: str, problems: Problems,
) -> tuple[object, object, object, object] | None:
    if not isinstance(inst, dict):
        problems.append((path, "an instance is an object"))
        return None
    for key in sorted(set(inst) - _INSTANCE_KEYS):
        problems.append((f"{path}.{key}",
                         f"unknown key; an instance has {', '.join(sorted(_INSTANCE_KEYS))}"))
    for field in ("product", "env", "job", "instance"):
        if field not in inst:
            problems.append((f"{path}.{field}", "missing"))
            continue
        problem = label_problem(inst[field], "instance" if field == "instance" else field)
        if problem:
            problems.append((f"{path}.{field}", problem))
    if "address" in inst:
        try:
            ipaddress.ip_address(inst["address"])
        except (ValueError, TypeError):
            problems.append((f"{path}.address",
                             f"{inst['address']!r} is not an IPv4 or IPv6 address"))
    ports = inst.get("ports")
    if not isinstance(ports, dict) or not ports:
        problems.append((f"{path}.ports", "give at least one named port, e.g. {\"http\": 8080}"))
    else:
        for name, port in ports.items():
            problem = label_problem(name, "port name")
            if problem:
                problems.append((f"{path}.ports.{name}", problem))
            if isinstance(port, bool) or not isinstance(port, int) or not 0 < port < 65536:
                problems.append((f"{path}.ports.{name}",
                                 f"{port!r} is not a port number (1-65535)"))
    checks = inst.get("checks", [])
    if not isinstance(checks, list):
        problems.append((f"{path}.checks", "checks is a list"))
    else:
        for i, check in enumerate(checks):
            _validate_check(check, f"{path}.checks[{i}]", problems)
    meta = inst.get("meta", {})
    if not isinstance(meta, dict):
        problems.append((f"{path}.meta", "meta is an object of strings"))
    else:
        if len(meta) > _MAX_PROVIDER_META:
            problems.append((f"{path}.meta", f"at most {_MAX_PROVIDER_META} keys"))
        for key, value in meta.items():
            if not _META_KEY.match(key) or key.startswith((META_PREFIX, CONSUL_META_PREFIX)):
                problems.append((f"{path}.meta.{key}", "keys are 1-128 of A-Z a-z 0-9 _ -, "
                                 f"not starting with '{META_PREFIX}' or '{CONSUL_META_PREFIX}'"))
            if not isinstance(value, str) or len(value) > 512:
                problems.append((f"{path}.meta.{key}",
                                 "values are strings of at most 512 characters"))
    if "drain" in inst and not isinstance(inst["drain"], bool):
        problems.append((f"{path}.drain", "drain is true or false"))
    if "weight" in inst:
        problems.extend(weight_problems(inst["weight"], f"{path}.weight"))
    return (inst.get("product"), inst.get("env"), inst.get("job"), inst.get("instance"))


def validate_state(body: object) -> Document:
    """
    Check a provider's state whole.

    :param body: the decoded JSON document.
    :return: the state, normalised (sorted instances, defaults filled in).
    :raises InvalidState: listing every problem.
    """
    problems: Problems = []
    if not isinstance(body, dict):
        raise InvalidState([("$", "the state is an object: {\"instances\": [...]}")])
    for key in sorted(set(body) - {"instances"}):
        problems.append((f"$.{key}", "unknown key; the state has only 'instances'"))
    instances = body.get("instances")
    if not isinstance(instances, list):
        problems.append(("$.instances", "missing or not a list (an empty list removes everything)"))
        instances = []
    if len(instances) > MAX_INSTANCES:
        problems.append(("$.instances", f"at most {MAX_INSTANCES} instances per provider"))
    seen: dict[tuple[object, ...], int] = {}
    for i, inst in enumerate(instances):
        key = _validate_instance(inst, f"$.instances[{i}]", problems)
        # A field of the wrong type (a list, say) is already a problem, and
        # would not hash.
        if key is not None and all(isinstance(k, str) for k in key):
            if key in seen:
                job = "/".join(str(k) for k in key[:3])
                problems.append((f"$.instances[{i}]", f"instance {key[3]!r} of "
                                 f"{job} is also $.instances[{seen[key]}]"))
            seen.setdefault(key, i)
    if problems:
        raise InvalidState(problems)
    return {"instances": sorted(
        (_normalise(inst) for inst in instances),
        key=lambda i: (i["product"], i["env"], i["job"], i["instance"]))}


def _normalise(inst: Mapping[str, Any]) -> Document:
    out = {k: inst[k] for k in ("product", "env", "job", "instance")}
    if "address" in inst:
        out["address"] = str(ipaddress.ip_address(inst["address"]))
    out["ports"] = dict(sorted(inst["ports"].items()))
    out["checks"] = list(inst.get("checks", []))
    out["meta"] = dict(sorted(inst.get("meta", {}).items()))
    out["drain"] = inst.get("drain", False)
    if "weight" in inst:
        out["weight"] = normal_weight(inst["weight"])
    return out


def service_id(provider: str, inst: Mapping[str, Any], port_name: str) -> str:
    """
    The Consul service ID of one named port of an instance
    (:func:`glimpse.mapping.registration_id`).

    :param provider: the provider's name.
    :param inst: an instance of a validated state.
    :param port_name: one of its named ports.
    :return: the ID.
    """
    job = consul_service_name(inst["product"], inst["env"], inst["job"])
    return registration_id(provider, job, inst["instance"], port_name)


def registrations(provider: str, state: Mapping[str, Any],
                  source: str | None = None) -> dict[str, Document]:
    """
    The Consul agent registrations of a validated state: one per (instance,
    named port), keyed by service ID.  The instance's checks are on its
    first port's registration, the others mirror them with an alias check
    (:mod:`glimpse.providers.checks`).  Each carries a hash of itself in its
    Meta, so an unchanged registration is recognised and left alone.

    :param provider: the provider's name.
    :param state: a state from :func:`validate_state`.
    :param source: ``None`` for the HTTP path;
        :data:`glimpse.mapping.SOURCE_FILE` for the file path, marked in
        ``Meta["glimpse-source"]`` so that each path leaves the other's
        registrations alone.
    :return: ``{service id: registration}``, as the agent API takes them.
    """
    out: dict[str, Document] = {}
    for inst in state["instances"]:
        carrier = checks_port(inst["ports"])
        carrier_id = service_id(provider, inst, carrier)
        for port_name, port in inst["ports"].items():
            sid = service_id(provider, inst, port_name)
            meta: dict[str, str] = dict(inst["meta"])
            meta.update({
                META_PROVIDER: provider,
                META_INSTANCE: inst["instance"],
                META_PORT: port_name,
            })
            if inst["drain"]:
                meta[META_DRAIN] = DRAINING
            if source:
                meta[META_SOURCE] = source
            definition: Document = {
                "ID": sid,
                "Name": consul_service_name(inst["product"], inst["env"], inst["job"]),
                "Tags": port_tags(port_name),
                "Port": port,
                "Meta": meta,
                "Checks": port_checks(sid, carrier_id, carrier, inst["checks"]),
            }
            if "address" in inst:
                definition["Address"] = inst["address"]
            definition.update(registration_weights(inst))
            definition["Meta"][META_HASH] = fingerprint(definition)
            out[sid] = definition
    return out


def diff(
    desired: Mapping[str, Mapping[str, Any]], current: Mapping[str, Mapping[str, Any]],
) -> tuple[list[str], list[str], list[str], list[str]]:
    """
    What applying ``desired`` registrations over ``current`` ones changes.

    :param desired: ``{id: definition}`` from :func:`registrations`.
    :param current: ``{id: agent service}`` as ``/v1/agent/services`` has
        them (for this provider only).
    :return: ``(add, change, remove, unchanged)``: sorted lists of IDs.
    """
    add: list[str] = []
    change: list[str] = []
    unchanged: list[str] = []
    for sid, definition in sorted(desired.items()):
        if sid not in current:
            add.append(sid)
        elif registration_hash(current[sid]) != definition["Meta"][META_HASH]:
            change.append(sid)
        else:
            unchanged.append(sid)
    remove = sorted(set(current) - set(desired))
    return add, change, remove, unchanged


def instance_ref(inst: Mapping[str, Any]) -> str:
    """
    The name of an instance in the provider API's paths.  Its bare name
    works too while it is unique within the provider's state.

    :param inst: an instance of a validated state.
    :return: ``<instance>.<job>.<env>.<product>``.
    """
    return f"{inst['instance']}.{inst['job']}.{inst['env']}.{inst['product']}"


@attrs.define
class NoSuchCheck(Exception):
    """
    A TTL check reference that does not name one.

    :ivar status: the HTTP status that fits (404 unknown, 409 not a ttl
        check, 400 ambiguous).
    :ivar message: what is wrong and what to write instead.
    """

    status: int
    message: str

    def __str__(self) -> str:
        return self.message


def ttl_check_ids(provider: str, state: Mapping[str, Any], instance: str,
                  check: str) -> list[str]:
    """
    The Consul check ID of one TTL check of one instance: one, on the
    registration carrying the instance's checks (the other ports mirror it).

    :param provider: the provider's name.
    :param state: its state, from :func:`validate_state`.
    :param instance: ``<instance>.<job>.<env>.<product>``, or the bare
        instance name when only one instance has it.
    :param check: the check's ``name``, or ``check<N>`` for the N-th check
        of the instance (from 0).
    :return: the check IDs (one).
    :raises NoSuchCheck: when they do not name exactly one TTL check.
    """
    matches = [i for i in state["instances"]
               if instance in (instance_ref(i), i["instance"])]
    if not matches:
        raise NoSuchCheck(404, f"provider {provider!r} has no instance {instance!r}; "
                          "name it <instance>.<job>.<env>.<product>")
    if len(matches) > 1:
        raise NoSuchCheck(400, f"{instance!r} names {len(matches)} instances; use one of "
                          + ", ".join(instance_ref(i) for i in matches))
    inst = matches[0]
    found = [n for n, c in enumerate(inst["checks"])
             if check == f"check{n}" or c.get("name") == check]
    if not found:
        raise NoSuchCheck(404, f"instance {instance_ref(inst)!r} has no check {check!r}; "
                          "use the check's name or check<N> (N counts from 0)")
    index = found[0]
    if "ttl" not in inst["checks"][index]:
        raise NoSuchCheck(409, f"check {check!r} is not a ttl check: Consul runs it itself")
    return [check_id(service_id(provider, inst, checks_port(inst["ports"])), index)]
