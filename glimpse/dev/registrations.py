"""
Registrations made straight on a Consul agent, shaped as a provider's
registrations are (docs/consul-mapping.md): for tests and benchmarks that
need topology in Consul without going through Glimpse's provider API.
Blocking (urllib).
"""

import urllib.parse
from typing import Any

from glimpse.dev.twistd import http_json

__all__ = ["deregister", "register", "service_id", "set_check"]


def _check(status: int, answer: Any, what: str) -> None:
    if status != 200:
        raise RuntimeError(f"Consul refused to {what} (HTTP {status}): {answer}")


def service_id(job: str, instance: str, port_name: str, product: str = "shop",
               env: str = "prod") -> str:
    """
    The registration ID Glimpse's providers use (docs/consul-mapping.md).
    """
    return f"t:{product}--{env}--{job}:{instance}:{port_name}"


def register(consul_url: str, job: str, instance: str, port_name: str = "http",
             port: int = 8080, ip: str = "127.0.5.1", status: str = "passing",
             product: str = "shop", env: str = "prod", meta: dict[str, str] | None = None,
             drain: bool = False) -> str:
    """
    Register one named port of an instance on the Consul agent, with one
    TTL check in ``status``, as a provider's registration looks.

    :return: the check's ID, to flip it with :obj:`set_check`.
    """
    sid = service_id(job, instance, port_name, product, env)
    full_meta = {"glimpse-provider": "t", "glimpse-instance": instance,
                 "glimpse-port": port_name, **(meta or {})}
    if drain:
        full_meta["glimpse-drain"] = "true"
    body = {"ID": sid, "Name": f"{product}--{env}--{job}", "Tags": [port_name], "Port": port,
            "Address": ip, "Meta": full_meta,
            "Checks": [{"CheckID": f"{sid}:ttl", "Name": "ttl", "TTL": "10m",
                        "Status": status}]}
    status_code, answer = http_json("PUT", f"{consul_url}/v1/agent/service/register", body)
    _check(status_code, answer, "register")
    return f"{sid}:ttl"


def deregister(consul_url: str, sid: str) -> None:
    """
    Remove one registration from the agent.
    """
    status, answer = http_json(
        "PUT", f"{consul_url}/v1/agent/service/deregister/{urllib.parse.quote(sid, safe='')}")
    _check(status, answer, "deregister")


def set_check(consul_url: str, check_id: str, status: str, note: str = "") -> None:
    """
    Set a TTL check: ``passing``, ``warning`` or ``critical``.
    """
    verb = {"passing": "pass", "warning": "warn", "critical": "fail"}[status]
    url = (f"{consul_url}/v1/agent/check/{verb}/{urllib.parse.quote(check_id, safe='')}"
           f"?note={urllib.parse.quote(note)}")
    code, answer = http_json("PUT", url)
    _check(code, answer, "set a check")
