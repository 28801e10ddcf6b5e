"""
Names in Glimpse's DNS zone, parsed and formatted.  Pure: no I/O.

The topology is ordered product -> env -> job -> service and sliced by zone,
so an address is written most specific first, like a DNS name::

    <service>.<job>.<env>.<product>.<zone>.<dns_zone>.

Every other name inside ``dns_zone`` is one of: the apex, a zone, an interior
node of the tree (``<product>.<zone>``, ``<env>.<product>.<zone>``,
``<job>.<env>.<product>.<zone>``), or an SRV target
``<hex-ip>.addr.<zone>`` that Glimpse resolves itself.  The zone label
:data:`ANY_ZONE` (``any``) stands for the local zone, failing over to
another one.
"""

from __future__ import annotations

import ipaddress
import re

import attrs

#: A DNS label as RFC 1123 host names have them, lower case.
_LABEL = re.compile(r"^[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?$")

#: The label that marks SRV target names; no product may be called this.
TARGET_LABEL = "addr"

#: Consul service names join product, env and job with this, so no field may
#: contain it.
SEPARATOR = "--"

#: The zone label that means "the local zone, or the nearest zone that has
#: healthy instances" (failover, :mod:`glimpse.view.failover`); no Consul
#: datacenter may be called this.
ANY_ZONE = "any"


class InvalidName(ValueError):
    """
    A name that cannot be a Glimpse address; the message says why.
    """


def label_problem(value: object, field: str) -> str | None:
    """
    Say what is wrong with one field of an address, or nothing.

    :param value: the field's value.
    :param field: the field's name, for the message.
    :return: a message, or ``None`` when ``value`` is a valid label.
    """
    if not isinstance(value, str):
        return f"{field} must be a string"
    if not _LABEL.match(value):
        return (
            f"{field} {value!r} is not a DNS label: use 1-63 lower-case "
            "letters, digits and '-', starting and ending with a letter or digit"
        )
    if SEPARATOR in value and field in ("product", "env", "job"):
        return f"{field} {value!r} must not contain '--' (Glimpse joins fields with it)"
    if field == "product" and value == TARGET_LABEL:
        return f"product must not be {TARGET_LABEL!r}: that label names SRV targets"
    return None


def normalize_zone(dns_zone: str) -> str:
    """
    The canonical form of a DNS zone name: lower case, no trailing dot.

    :raises InvalidName: when a label of it is not a DNS label.
    """
    zone = dns_zone.strip().rstrip(".").lower()
    if not zone:
        raise InvalidName("the DNS zone must not be empty (e.g. glimpse.test)")
    for label in zone.split("."):
        if not _LABEL.match(label):
            raise InvalidName(f"{label!r} in DNS zone {dns_zone!r} is not a DNS label")
    return zone


@attrs.frozen
class Address:
    """
    The name of one named port of one job in one zone.
    """

    service: str
    job: str
    env: str
    product: str
    zone: str

    @property
    def consul_service(self) -> str:
        """
        The Consul service name that holds this job's registrations.
        """
        return consul_service_name(self.product, self.env, self.job)

    def relative(self) -> str:
        """
        The address without the DNS zone: ``http.web.prod.shop.ams``.
        """
        return ".".join((self.service, self.job, self.env, self.product, self.zone))

    def fqdn(self, dns_zone: str) -> str:
        """
        The fully qualified DNS name, with the trailing dot.
        """
        return f"{self.relative()}.{dns_zone}."


def consul_service_name(product: str, env: str, job: str) -> str:
    """
    The Consul service name for a job: ``<product>--<env>--<job>``.
    """
    return SEPARATOR.join((product, env, job))


def split_consul_service(name: str) -> tuple[str, str, str] | None:
    """
    The (product, env, job) of a Consul service name, or ``None`` when the
    name is not one Glimpse wrote (e.g. Consul's own ``consul`` service).
    """
    parts = name.split(SEPARATOR)
    if len(parts) != 3:
        return None
    if any(label_problem(p, f) for p, f in zip(parts, ("product", "env", "job"), strict=True)):
        return None
    return parts[0], parts[1], parts[2]


def relative_labels(name: str, dns_zone: str) -> list[str] | None:
    """
    The labels of ``name`` below ``dns_zone``, outermost first
    (``zone, product, env, ...``), lower-cased.

    :param name: a DNS name (``str``), with or without the trailing dot.
    :param dns_zone: a zone in the form :func:`normalize_zone` returns.
    :return: a list of labels, empty for the apex, or ``None`` when ``name``
        is not inside ``dns_zone``.
    """
    name = name.rstrip(".").lower()
    if name == dns_zone:
        return []
    suffix = "." + dns_zone
    if not name.endswith(suffix):
        return None
    head = name[: -len(suffix)]
    return list(reversed(head.split(".")))


def parse_address(text: str, dns_zone: str, wildcard: bool = False) -> Address:
    """
    Parse an address as HTTP clients write it: with or without the DNS zone
    and the trailing dot, any case.

    :param wildcard: allow ``*`` as a whole label (not as the zone).
    :raises InvalidName: with a message saying what to write instead.
    """
    labels = relative_labels(text, dns_zone)
    if labels is None:
        labels = list(reversed(text.rstrip(".").lower().split(".")))
    if len(labels) != 5:
        raise InvalidName(
            f"{text!r} is not an address: write "
            f"<service>.<job>.<env>.<product>.<zone>[.{dns_zone}], "
            "e.g. http.web.prod.shop.ams"
        )
    zone, product, env, job, service = labels
    if zone == "*":
        raise InvalidName("the zone of an address cannot be '*': name one zone")
    fields = {"service": service, "job": job, "env": env, "product": product, "zone": zone}
    for field, value in fields.items():
        if wildcard and value == "*":
            continue
        problem = label_problem(value, field)
        if problem:
            raise InvalidName(problem)
    return Address(**fields)


def target_name(zone: str, ip: str, dns_zone: str) -> str:
    """
    The SRV target name Glimpse gives an instance IP: ``<hex>.addr.<zone>``.
    """
    packed = ipaddress.ip_address(ip).packed
    return f"{packed.hex()}.{TARGET_LABEL}.{zone}.{dns_zone}."


def parse_target_label(label: str) -> str | None:
    """
    The IP address encoded in the first label of a target name, or ``None``.
    """
    if len(label) not in (8, 32):
        return None
    try:
        return str(ipaddress.ip_address(bytes.fromhex(label)))
    except ValueError:
        return None
