"""
Helpers for the HTTP API tests against a real Consul: the registrations of
:mod:`glimpse.dev.registrations`, a blocking Server-Sent Events reader, and a
reader of one response from a raw socket.
"""

import json
import socket
import threading
import urllib.parse
import urllib.request

from glimpse.cli import sse_events


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


def read_response(sock, timeout=10.0):
    """
    ``(status, headers, decoded JSON body)`` of the response read from a
    blocking socket (the server closes or sends Content-Length bytes).
    """
    sock.settimeout(timeout)
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        if not chunk:
            break
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = dict(line.split(": ", 1) for line in lines[1:])
    length = int(headers.get("Content-Length", "0"))
    while len(body) < length:
        chunk = sock.recv(65536)
        if not chunk:
            break
        body += chunk
    return int(lines[0].split(" ")[1]), headers, json.loads(body) if body else None
