"""
What ``make bench-scale`` measures with: DNS queries, many at once; the
zone's servers' own metrics (RPCs, blocking queries, streaming
subscriptions) and every process's CPU; Glimpse's ``/metrics``.
"""

import json
import socket
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor

from twisted.names import dns

from glimpse.dev.observe import cpu_seconds, metric, metrics, rss_bytes

#: What :func:`rates` takes as it is (the later value), not per second.
GAUGES = ("blocking", "streams", "rss_mb")

#: Server settings the bench adds: Prometheus-format metrics, cumulative.
TELEMETRY = 'telemetry { prometheus_retention_time = "1h" disable_hostname = true }'


def ask(server, name, qtype=dns.A, timeout=5.0):
    """
    ``(rcode, {addresses} or {(target, port)})`` of one query, or
    ``("timeout", None)``.
    """
    message = dns.Message(id=int(time.monotonic() * 1000) & 0xFFFF, recDes=0)
    message.queries = [dns.Query(name, qtype, dns.IN)]
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.settimeout(timeout)
        try:
            s.sendto(message.toStr(), server)
            data = s.recvfrom(65535)[0]
        except OSError:
            return "timeout", None
    answer = dns.Message()
    answer.fromStr(data)
    if qtype == dns.SRV:
        found = {(r.payload.target.name.decode(), r.payload.port) for r in answer.answers
                 if r.type == dns.SRV}
    else:
        found = {r.payload.dottedQuad() for r in answer.answers if r.type == dns.A}
    return answer.rCode, found


def ask_all(server, names, threads=200, qtype=dns.A, timeout=10.0):
    """
    Every name asked once, ``threads`` at a time: ``[(rcode, answer)]`` in
    the names' order.
    """
    with ThreadPoolExecutor(threads) as pool:
        return list(pool.map(lambda n: ask(server, n, qtype, timeout), names))


def http_get(url, timeout=10.0):
    with urllib.request.urlopen(url, timeout=timeout) as response:
        return response.read().decode()


def servers_snapshot(zone):
    """
    The zone's servers, summed: ``rpc`` (RPCs served, a counter),
    ``queries`` (read queries, blocking ones included, a counter),
    ``blocking`` (blocking queries parked now), ``streams`` (streaming
    subscriptions open now), ``cpu`` (seconds), ``rss_mb``, at ``t``.
    """
    snap = {"t": time.monotonic(), "rpc": 0.0, "queries": 0.0, "blocking": 0.0,
            "streams": 0.0, "cpu": 0.0, "rss_mb": 0.0}
    for server in zone.servers:
        if not server.running:
            continue
        try:
            text = http_get(f"{server.url}/v1/agent/metrics?format=prometheus", timeout=5)
        except OSError:
            continue
        snap["rpc"] += metric(text, "consul_rpc_request")
        snap["queries"] += metric(text, "consul_rpc_query")
        snap["blocking"] += metric(text, "consul_rpc_queries_blocking")
        snap["streams"] += metric(text, "consul_grpc_server_streams")
        snap["cpu"] += cpu_seconds(server.process.pid)
        snap["rss_mb"] += rss_bytes(server.process.pid) / 2**20
    return snap


def rates(before, after):
    """
    Per second between two :func:`servers_snapshot` (or any dicts of
    counters with ``t``), counters only; gauges are the later value.
    """
    elapsed = after["t"] - before["t"]
    return {key: (after[key] - before[key]) / elapsed if key not in GAUGES
            else after[key] for key in after if key != "t" and not isinstance(after[key], dict)}


def glimpse_snapshot(glimpse, agent_pid):
    """
    Glimpse's Consul requests and errors (counters), its and its agent's
    CPU, at ``t``.
    """
    text = http_get(f"{glimpse.url}/metrics")
    errors = {endpoint: value for (name, labels), value in metrics(text).items()
              if name == "glimpse_consul_errors_total" for _, endpoint in labels}
    return {"t": time.monotonic(), "errors_by_endpoint": errors,
            "requests": metric(text, "glimpse_consul_requests_total"),
            "cached": metric(text, "glimpse_consul_requests_total",
                             endpoint="health/service?cached"),
            "errors": metric(text, "glimpse_consul_errors_total"),
            "cpu": cpu_seconds(glimpse.process.pid), "agent_cpu": cpu_seconds(agent_pid)}


def dump(path, results):
    """
    Keep the figures as JSON.
    """
    with open(path, "w") as f:
        json.dump(results, f, indent=2, sort_keys=True)
