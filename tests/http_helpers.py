"""
Helpers for the HTTP API tests against a real Consul: registrations made
straight on the agent (as a provider's would be), and a blocking
Server-Sent Events reader.
"""

import socket
import threading
import urllib.parse
import urllib.request

from glimpse.cli.client import sse_events
from glimpse.dev.twistd import http_json


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
    assert status_code == 200, answer
    return f"{sid}:ttl"


def deregister(consul_url, sid):
    """
    Remove one registration from the agent.
    """
    status, answer = http_json(
        "PUT", f"{consul_url}/v1/agent/service/deregister/{urllib.parse.quote(sid, safe='')}")
    assert status == 200, answer


def set_check(consul_url, check_id, status, note=""):
    """
    Set a TTL check: ``passing``, ``warning`` or ``critical``.
    """
    verb = {"passing": "pass", "warning": "warn", "critical": "fail"}[status]
    url = (f"{consul_url}/v1/agent/check/{verb}/{urllib.parse.quote(check_id, safe='')}"
           f"?note={urllib.parse.quote(note)}")
    code, answer = http_json("PUT", url)
    assert code == 200, answer


class EventReader:
    """
    Reads a Server-Sent Event stream in a thread; ``events`` holds
    ``(event, id, data)`` in arrival order, ``comments`` the comment lines.
    """

    def __init__(self, url, last_event_id=None):
        headers = {"Accept": "text/event-stream"}
        if last_event_id:
            headers["Last-Event-ID"] = last_event_id
        self.events = []
        self.comments = []
        self.closed = False
        self._response = urllib.request.urlopen(
            urllib.request.Request(url, headers=headers), timeout=30)
        self.status = self._response.status
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()

    def _read(self):
        try:
            for event in sse_events(self._response, self.comments):
                self.events.append(event)
        except Exception:
            # Hanging up (close) ends the read with whatever http.client
            # raises then; the events read so far are what counts.
            pass
        self.closed = True

    def last_id(self):
        """
        The ``id`` of the last event read.
        """
        return self.events[-1][1] if self.events else None

    def close(self):
        """
        Hang up.
        """
        try:
            self._response.fp.raw._sock.shutdown(socket.SHUT_RDWR)
        except (AttributeError, OSError):
            pass
        self._response.close()


def replay_instances(events):
    """
    What a stream's reader holds after ``events``: ``{id: instance}``.
    """
    items = None
    for kind, _, data in events:
        if kind == "snapshot":
            items = {i["id"]: i for i in data["instances"]}
        elif kind == "remove":
            items.pop(data["id"], None)
        elif kind in ("add", "update"):
            items[data["id"]] = data
        elif kind == "unavailable":
            items = None
    return items
