"""
How Glimpse lays its topology out in Consul, in code: the names, Meta keys,
IDs and tags that ``docs/consul-mapping.md`` describes.  The write side
(:mod:`glimpse.providers`) writes registrations with them and the read side
(:mod:`glimpse.view`) reads them back with them; this module imports
neither.  Pure: no I/O.

The service-name scheme, ``<product>--<env>--<job>``, is defined with the
address rules it relies on (no ``--`` inside a field) in
:mod:`glimpse.address`, and re-exported here: :data:`SEPARATOR`,
:func:`consul_service_name`, :func:`split_consul_service`.
"""

import hashlib
import json
from collections.abc import Iterable, Mapping

from glimpse.address import SEPARATOR, consul_service_name, split_consul_service

__all__ = [
    "ANY_PROVIDER",
    "CONSUL_META_PREFIX",
    "DEFAULT_WEIGHT",
    "DRAINING",
    "META_DRAIN",
    "META_HASH",
    "META_INSTANCE",
    "META_PORT",
    "META_PREFIX",
    "META_PROVIDER",
    "META_SOURCE",
    "OWN_META_KEYS",
    "SEPARATOR",
    "SOURCE_FILE",
    "alias_check_id",
    "aliased_service",
    "check_id",
    "checks_port",
    "consul_service_name",
    "consul_weights",
    "fingerprint",
    "is_draining",
    "is_file_sourced",
    "is_own_meta_key",
    "port_tags",
    "provider_filter",
    "registration_hash",
    "registration_id",
    "split_consul_service",
    "weights_of",
]

#: Every Meta key Glimpse writes starts with this; a provider's own may not.
META_PREFIX = "glimpse-"
#: The provider that registered it (the registration ID starts with it too).
META_PROVIDER = "glimpse-provider"
#: The instance's name.
META_INSTANCE = "glimpse-instance"
#: The named port (also the registration's one tag).
META_PORT = "glimpse-port"
#: :data:`DRAINING` on a draining instance: registered, left out of DNS.
META_DRAIN = "glimpse-drain"
#: :data:`SOURCE_FILE` on registrations the file path wrote.
META_SOURCE = "glimpse-source"
#: The registration's fingerprint, from :func:`fingerprint`.
META_HASH = "glimpse-hash"
#: Glimpse's own keys: they count against Consul's 64 per registration.
OWN_META_KEYS = (META_PROVIDER, META_INSTANCE, META_PORT, META_DRAIN, META_SOURCE, META_HASH)
#: The prefix Consul keeps for its own Meta keys.
CONSUL_META_PREFIX = "consul-"

#: The value of :data:`META_DRAIN` that drains an instance.
DRAINING = "true"
#: The value of :data:`META_SOURCE` on the file path's registrations, which
#: the HTTP path leaves alone.
SOURCE_FILE = "file"

#: A Consul filter expression for every registration some provider made.
ANY_PROVIDER = f'"{META_PROVIDER}" in Meta'

#: Hex digits of SHA-256 kept in :data:`META_HASH`.
_HASH_DIGITS = 16

#: An instance's SRV weight when its registration says none (Consul's too).
DEFAULT_WEIGHT = 1
#: The largest SRV weight (RFC 2782: 16 bits).
_MAX_WEIGHT = 65535


def registration_id(provider: str, service_name: str, instance: str, port_name: str) -> str:
    """
    The Consul service ID of one named port of one instance:
    ``<provider>:<product>--<env>--<job>:<instance>:<port name>``.  It
    starts with the provider's name, so one provider's registrations never
    collide with another's.

    :param provider: the provider's name.
    :param service_name: the job's :func:`consul_service_name`.
    :param instance: the instance's name.
    :param port_name: the named port.
    :return: the ID, e.g. ``deploy:shop--prod--web:web-1:http``.
    """
    return f"{provider}:{service_name}:{instance}:{port_name}"


def check_id(service_id: str, index: int) -> str:
    """
    The Consul check ID of an instance's check on the registration that
    carries its checks (its :func:`checks_port`'s): ``<service id>:check<N>``.

    :param service_id: the registration's :func:`registration_id`.
    :param index: the check's place in the instance's checks, from 0.
    :return: the check ID.
    """
    return f"{service_id}:check{index}"


def checks_port(port_names: Iterable[str]) -> str:
    """
    The named port whose registration carries an instance's checks: the
    first in sorted order.  Each check then runs once per instance, and the
    other ports mirror it with an alias check (:func:`alias_check_id`).

    :param port_names: the instance's named ports (at least one).
    :return: one of them.
    """
    return min(port_names)


#: Between a registration's ID and the port whose checks its alias check
#: mirrors, in :func:`alias_check_id`.
_ALIAS = ":alias:"


def alias_check_id(service_id: str, carrier_port: str) -> str:
    """
    The Consul check ID of the alias check on a named port's registration
    that mirrors the instance's checks (Consul's ``AliasService``): the
    registration's ID, ``:alias:`` and the port carrying the checks.  The ID
    names its target because Consul's health answers leave the alias's
    definition out, and the read side shows the carrier's checks instead.

    :param service_id: the registration's :func:`registration_id`.
    :param carrier_port: the instance's :func:`checks_port`.
    :return: e.g. ``deploy:shop--prod--web:web-1:http:alias:admin``.
    """
    return f"{service_id}{_ALIAS}{carrier_port}"


def aliased_service(service_id: str, check: str) -> str | None:
    """
    The registration an alias check of :func:`alias_check_id` mirrors.

    :param service_id: the registration the check is on.
    :param check: the check's ID.
    :return: the carrier's registration ID, or ``None`` when ``check`` is
        not such an alias check of ``service_id``'s.
    """
    prefix = service_id + _ALIAS
    port = check[len(prefix):] if check.startswith(prefix) else ""
    head, sep, _ = service_id.rpartition(":")
    if not port or not sep or ":" in port:
        return None
    return f"{head}:{port}"


def port_tags(port_name: str) -> list[str]:
    """
    A registration's tags: its port name alone, so that Consul's own DNS
    answers ``<port>.<service name>.service.<dc>.consul`` for it.

    :param port_name: the named port.
    :return: the tags.
    """
    return [port_name]


def fingerprint(definition: Mapping[str, object]) -> str:
    """
    The fingerprint kept in :data:`META_HASH`: 16 hex digits of SHA-256 over
    the registration's JSON with sorted keys.  An unchanged registration
    keeps it, so it is not written again.  Changing how it is computed
    rewrites every registration once, on the upgrade.

    :param definition: the registration, without its fingerprint.
    :return: the fingerprint.
    """
    encoded = json.dumps(definition, sort_keys=True).encode()
    return hashlib.sha256(encoded).hexdigest()[:_HASH_DIGITS]


def provider_filter(provider: str) -> str:
    """
    A Consul filter expression for the registrations of one provider.

    :param provider: the provider's name.
    :return: e.g. ``Meta["glimpse-provider"] == "deploy"``.
    """
    return f'Meta["{META_PROVIDER}"] == "{provider}"'


def _meta(service: Mapping[str, object]) -> Mapping[str, object]:
    meta = service.get("Meta")
    return meta if isinstance(meta, Mapping) else {}


def registration_hash(service: Mapping[str, object]) -> str | None:
    """
    The fingerprint a registration carries.

    :param service: a service as ``/v1/agent/services`` or the catalog show
        it, or a definition Glimpse built.
    :return: its :data:`META_HASH`, or ``None`` when it has none.
    """
    value = _meta(service).get(META_HASH)
    return value if isinstance(value, str) else None


def is_file_sourced(service: Mapping[str, object]) -> bool:
    """
    Whether a registration was written by the file path.

    :param service: a service as ``/v1/agent/services`` or the catalog show it.
    :return: whether its :data:`META_SOURCE` is :data:`SOURCE_FILE`.
    """
    return _meta(service).get(META_SOURCE) == SOURCE_FILE


def is_draining(meta: Mapping[str, object]) -> bool:
    """
    Whether a registration's Meta drains its instance.

    :param meta: the registration's Meta.
    :return: whether :data:`META_DRAIN` is :data:`DRAINING`.
    """
    return meta.get(META_DRAIN) == DRAINING


def is_own_meta_key(key: str) -> bool:
    """
    Whether a Meta key is one of Glimpse's rather than the provider's.

    :param key: a Meta key.
    :return: whether it starts with :data:`META_PREFIX`.
    """
    return key.startswith(META_PREFIX)


def consul_weights(passing: int, warning: int) -> dict[str, int]:
    """
    A registration's ``Weights``: the SRV weight Consul's DNS (and Glimpse's)
    gives the instance while its checks pass, and while one warns.

    :param passing: the weight while every check passes.
    :param warning: the weight while a check warns.
    :return: ``{"Passing": passing, "Warning": warning}``.
    """
    return {"Passing": passing, "Warning": warning}


def weights_of(service: Mapping[str, object]) -> tuple[int, int]:
    """
    The weights a registration carries, as Consul answers it.

    :param service: a service as the health or catalog API shows it.
    :return: ``(passing, warning)``; :data:`DEFAULT_WEIGHT` for what it
        lacks or that is not a weight.
    """
    weights = service.get("Weights")
    if not isinstance(weights, Mapping):
        return DEFAULT_WEIGHT, DEFAULT_WEIGHT

    def one(key: str) -> int:
        value = weights.get(key)
        if isinstance(value, bool) or not isinstance(value, int):
            return DEFAULT_WEIGHT
        return value if 1 <= value <= _MAX_WEIGHT else DEFAULT_WEIGHT

    return one("Passing"), one("Warning")
