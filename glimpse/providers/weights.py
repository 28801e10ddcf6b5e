"""
An instance's SRV weights in a provider's state: ``"weight": {"passing":
10, "warning": 1}``, written as the registration's Consul ``Weights``, so
that Consul's own DNS gives the same weights as Glimpse's.  Pure: no I/O.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from glimpse.mapping import DEFAULT_WEIGHT, consul_weights

#: The states that have a weight; one the state leaves out is
#: :data:`glimpse.mapping.DEFAULT_WEIGHT`.
STATES = ("passing", "warning")
#: The largest weight: SRV weights are 16 bits (RFC 2782); 0 means "pick
#: last" there, and Consul takes it for "unset", so the least is 1.
MAX_WEIGHT = 65535

_EXAMPLE = '{"passing": 10, "warning": 1}'


def weight_problems(value: object, path: str) -> list[tuple[str, str]]:
    """
    What is wrong with an instance's ``weight``.

    :param value: the ``weight`` given.
    :param path: its JSON path, e.g. ``$.instances[0].weight``.
    :return: ``(json_path, message)`` pairs, empty when it is valid.
    """
    if not isinstance(value, dict):
        return [(path, f"weight is an object of SRV weights, e.g. {_EXAMPLE}")]
    problems = [(f"{path}.{key}", f"unknown key; weight has {' and '.join(STATES)}, "
                                  f"e.g. {_EXAMPLE}")
                for key in sorted(set(value) - set(STATES), key=str)]
    for state in STATES:
        if state not in value:
            continue
        weight = value[state]
        if isinstance(weight, bool) or not isinstance(weight, int) \
                or not 1 <= weight <= MAX_WEIGHT:
            problems.append((f"{path}.{state}",
                             f"{weight!r} is not a weight: an integer from 1 to {MAX_WEIGHT}"))
    return problems


def normal_weight(value: Mapping[str, int]) -> dict[str, int]:
    """
    A valid ``weight`` with both states: the default for one left out.
    """
    return {state: value.get(state, DEFAULT_WEIGHT) for state in STATES}


def registration_weights(inst: Mapping[str, Any]) -> dict[str, dict[str, int]]:
    """
    The ``Weights`` field of an instance's registrations.

    :param inst: an instance of a validated state.
    :return: ``{"Weights": ...}``, or nothing when the instance has no
        ``weight`` (Consul's defaults then, and its registrations' hash is
        what it was before weights existed: nothing is written again).
    """
    weight = inst.get("weight")
    if weight is None:
        return {}
    return {"Weights": consul_weights(weight["passing"], weight["warning"])}
