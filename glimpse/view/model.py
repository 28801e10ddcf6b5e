"""
The topology as Glimpse sees it: instances with their health, built from
Consul's health API answers.  Pure: no I/O.
"""

import attrs

from glimpse.mapping import (
    META_INSTANCE,
    META_PORT,
    META_PROVIDER,
    is_draining,
    is_own_meta_key,
    split_consul_service,
)

PASSING = "passing"


@attrs.frozen
class Check:
    """
    One Consul health check as it bears on an instance.

    :ivar node_level: the check belongs to the node (e.g. serfHealth), not
        to the service; a failing node check takes every instance on it out.
    """

    id: str
    name: str
    type: str
    status: str
    output: str
    node_level: bool

    def to_json(self):
        """
        The check as the HTTP API shows it.
        """
        return {
            "id": self.id,
            "name": self.name,
            "type": self.type or ("node" if self.node_level else ""),
            "status": self.status,
            "output": self.output,
            "node_level": self.node_level,
        }


@attrs.frozen
class Instance:
    """
    One named port of one instance: one Consul registration.
    """

    id: str
    product: str
    env: str
    job: str
    instance: str
    service: str
    provider: str
    node: str
    ip: str
    port: int
    meta: tuple = ()
    checks: tuple = ()
    drain: bool = False

    @property
    def healthy(self):
        """
        Whether DNS serves this instance: every check, the node's included,
        is passing (a warning is not), and it is not draining.
        """
        return not self.drain and all(c.status == PASSING for c in self.checks)

    def to_json(self, zone):
        """
        The instance as the HTTP API shows it.
        """
        return {
            "id": self.id,
            "instance": self.instance,
            "service": self.service,
            "host": self.node,
            "node": self.node,
            "ip": self.ip,
            "port": self.port,
            "zone": zone,
            "provider": self.provider,
            "meta": dict(self.meta),
            "drain": self.drain,
            "healthy": self.healthy,
            "checks": [c.to_json() for c in self.checks],
        }


def instance_from_entry(entry):
    """
    Build the :class:`Instance` of one entry of ``/v1/health/service/<name>``.

    :return: the instance, or ``None`` for a registration Glimpse did not
        write (its Meta lacks the port name) or that is malformed.
    """
    try:
        node = entry["Node"]
        service = entry["Service"]
        meta = service.get("Meta") or {}
        fields = split_consul_service(service["Service"])
        port_name = meta.get(META_PORT)
        if fields is None or not port_name:
            return None
        checks = tuple(
            sorted(
                (
                    Check(
                        id=c["CheckID"],
                        name=c.get("Name", ""),
                        type=c.get("Type", ""),
                        status=c.get("Status", ""),
                        output=c.get("Output", ""),
                        node_level=not c.get("ServiceID"),
                    )
                    for c in entry.get("Checks") or ()
                ),
                key=lambda c: (not c.node_level, c.id),
            )
        )
        product, env, job = fields
        return Instance(
            id=service["ID"],
            product=product,
            env=env,
            job=job,
            instance=meta.get(META_INSTANCE, service["ID"]),
            service=port_name,
            provider=meta.get(META_PROVIDER, ""),
            node=node["Node"],
            ip=service.get("Address") or node["Address"],
            port=int(service["Port"]),
            meta=tuple(
                sorted((k, v) for k, v in meta.items() if not is_own_meta_key(k))
            ),
            checks=checks,
            drain=is_draining(meta),
        )
    except (AttributeError, KeyError, TypeError, ValueError):
        return None


def instances_from_health(entries):
    """
    The instances of a ``/v1/health/service/<name>`` answer, sorted by ID so
    that equal topologies compare equal.
    """
    found = (instance_from_entry(e) for e in entries or ())
    return tuple(sorted((i for i in found if i is not None), key=lambda i: (i.node, i.id)))
