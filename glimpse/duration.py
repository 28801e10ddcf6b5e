"""
Durations written the way Consul and Go write them (``500ms``, ``10s``,
``1m30s``, ``2h``), read in one place for the provider state, the HTTP
API's ``wait`` and the fake Consul.  Pure.
"""

from __future__ import annotations

import re

__all__ = ["UNITS", "InvalidDuration", "parse_duration"]

#: Seconds per unit, as Go's ``time.ParseDuration`` names them.
UNITS = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0}

_PART = r"(\d+(?:\.\d+)?)(ns|us|µs|ms|s|m|h)"
_DURATION = re.compile(rf"^(?:{_PART})+$")


class InvalidDuration(ValueError):
    """
    Text that is not a duration; the message says how to write one.
    """


def parse_duration(text: str, bare_unit: str | None = None) -> float:
    """
    The seconds a duration stands for.

    :param text: e.g. ``"1m30s"``.
    :param bare_unit: the unit of a bare number (``"10"``), or ``None`` when
        a bare number is not a duration.
    :raises InvalidDuration: for anything else.
    """
    if bare_unit is not None and re.fullmatch(r"\d+(?:\.\d+)?", text):
        return float(text) * UNITS[bare_unit]
    if not _DURATION.match(text):
        raise InvalidDuration(f"{text!r} is not a duration: write e.g. '10s', '500ms' or '1m30s'")
    return sum(float(number) * UNITS[unit] for number, unit in re.findall(_PART, text))
