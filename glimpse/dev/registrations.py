"""
Registrations made straight on a Consul agent, shaped as a provider's
registrations are (docs/consul-mapping.md): for tests and benchmarks that
need topology in Consul without going through Glimpse's provider API.
Blocking (urllib).
"""

import urllib.parse

from glimpse.dev.twistd import http_json

__all__ = ["deregister", "register", "service_id", "set_check"]


def _check(status, answer, what):
    if status != 200:
        raise RuntimeError(f"Consul refused to {what} (HTTP {status}): {answer}")


def service_id(job, instance, port_name, product="shop", env="prod"):
    """
    The registration ID Glimpse's providers use (docs/consul-mapping.md).
    """
    return f"t:{product}--{env}--{job}:{instance}:{port_name}"


def register(consul_url, job, instance, port_name="http", port=8080, ip="127.0.5.1",
             status="passing", product="shop", env="prod", meta=None, drain=False):
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


def deregister(consul_url, sid):
    """
    Remove one registration from the agent.
    """
    status, answer = http_json(
        "PUT", f"{consul_url}/v1/agent/service/deregister/{urllib.parse.quote(sid, safe='')}")
    _check(status, answer, "deregister")


def set_check(consul_url, check_id, status, note=""):
    """
    Set a TTL check: ``passing``, ``warning`` or ``critical``.
    """
    verb = {"passing": "pass", "warning": "warn", "critical": "fail"}[status]
    url = (f"{consul_url}/v1/agent/check/{verb}/{urllib.parse.quote(check_id, safe='')}"
           f"?note={urllib.parse.quote(note)}")
    code, answer = http_json("PUT", url)
    _check(code, answer, "set a check")
