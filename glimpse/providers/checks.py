"""
How an instance's checks are laid out on its registrations: each check
runs once per instance, on the registration of its first named port (the
*carrier*, :func:`glimpse.mapping.checks_port`), and every other named port
carries one Consul alias check (``AliasService``) that mirrors the carrier.
So an instance with three ports is probed once per interval, not three
times, and its ports never disagree.  Pure: no I/O.
"""

from collections.abc import Mapping, Sequence
from typing import Any

from glimpse.duration import parse_duration
from glimpse.mapping import alias_check_id, check_id

#: The kinds of check a provider may give; each check has exactly one.
CHECK_KINDS = ("http", "tcp", "ttl", "grpc")

#: A check as the agent API takes it: decoded JSON.
Definition = dict[str, Any]


def check_definition(service_id: str, index: int, check: Mapping[str, Any]) -> Definition:
    """
    One of an instance's checks, as its carrier's registration holds it.

    :param service_id: the carrier's registration ID.
    :param index: the check's place in the instance's checks, from 0.
    :param check: the check, from a validated state.
    :return: the check's definition for the agent API.
    """
    kind = next(k for k in CHECK_KINDS if k in check)
    definition: Definition = {
        "CheckID": check_id(service_id, index),
        "Name": check.get("name") or f"{kind} {check[kind]}",
    }
    definition[kind.upper()] = check[kind]
    if "interval" in check:
        definition["Interval"] = check["interval"]
    if "timeout" in check:
        definition["Timeout"] = check["timeout"]
    if "deregister_after" in check:
        definition["DeregisterCriticalServiceAfter"] = check["deregister_after"]
    return definition


def alias_definition(service_id: str, carrier_id: str, carrier_port: str,
                     checks: Sequence[Mapping[str, Any]]) -> Definition:
    """
    The alias check of a named port that does not carry its instance's
    checks.  Consul gives it the worst status of the carrier's checks (and
    the node's), and says which check fails in its output.

    It carries the shortest ``deregister_after`` of the instance's checks,
    if any has one: when Consul reaps the carrier, the other ports follow
    rather than stay registered, critical, for good.

    :param service_id: this port's registration ID.
    :param carrier_id: the carrier's registration ID.
    :param carrier_port: the carrier's named port.
    :param checks: the instance's checks, from a validated state.
    :return: the alias check's definition for the agent API.
    """
    definition: Definition = {
        "CheckID": alias_check_id(service_id, carrier_port),
        "Name": f"the instance's checks (run on port {carrier_port})",
        "AliasService": carrier_id,
    }
    reaps = [c["deregister_after"] for c in checks if "deregister_after" in c]
    if reaps:
        definition["DeregisterCriticalServiceAfter"] = min(reaps, key=parse_duration)
    return definition


def port_checks(service_id: str, carrier_id: str, carrier_port: str,
                checks: Sequence[Mapping[str, Any]]) -> list[Definition]:
    """
    The checks of one named port's registration: every check of the
    instance on its carrier, one alias check on each other port, none at
    all for an instance without checks (every port then has the node's
    checks alone, the same status on each).

    :param service_id: the port's registration ID.
    :param carrier_id: the registration ID of the instance's
        :func:`glimpse.mapping.checks_port`.
    :param carrier_port: that named port.
    :param checks: the instance's checks, from a validated state.
    :return: the definitions for the agent API.
    """
    if service_id == carrier_id:
        return [check_definition(service_id, i, c) for i, c in enumerate(checks)]
    if not checks:
        return []
    return [alias_definition(service_id, carrier_id, carrier_port, checks)]
