"""
What every ``glimpse`` subcommand shares: the exit codes, one blocking HTTP
request to the agent, error messages and tables.
"""

from __future__ import annotations

import json
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import Any, TextIO

#: The exit codes, as ``glimpse --help`` lists them: found or done; not
#: found; a usage error; the agent unreachable; the agent refused.
EXIT_OK, EXIT_NOT_FOUND, EXIT_USAGE, EXIT_UNREACHABLE, EXIT_REFUSED = 0, 1, 2, 3, 4


class Unreachable(Exception):
    """
    The agent could not be asked.
    """


def request(method: str, url: str, body: Any = None, headers: Mapping[str, str] | None = None,
            timeout: float = 30.0) -> tuple[int, Any]:
    """
    One HTTP request; returns ``(status, decoded JSON or text)`` whatever
    the status (``None`` for an empty body).  ``body`` is sent as JSON;
    ``headers`` given override the JSON ``Accept`` and ``Content-Type``.

    :param method: the HTTP method, e.g. ``GET``.
    :param url: the full URL.
    :param body: a JSON-able body, or ``None`` for none.
    :param headers: more request headers.
    :param timeout: seconds to wait for the answer.
    :return: ``(status, body)``.
    :raises Unreachable: when no answer came.
    """
    data = None if body is None else json.dumps(body).encode("utf-8")
    sent = dict(headers or {})
    sent.setdefault("Accept", "application/json")
    if data is not None:
        sent.setdefault("Content-Type", "application/json")
    req = urllib.request.Request(url, data=data, method=method, headers=sent)
    try:
        with urllib.request.urlopen(req, timeout=timeout) as response:
            status, raw = response.status, response.read()
    except urllib.error.HTTPError as e:
        status, raw = e.code, e.read()
    except (urllib.error.URLError, OSError) as e:
        raise Unreachable(f"cannot reach the Glimpse agent at {url}: "
                          f"{getattr(e, 'reason', e)}") from e
    if not raw:
        return status, None
    try:
        return status, json.loads(raw)
    except ValueError:
        return status, raw.decode("utf-8", "replace")


def table(rows: Iterable[Mapping[str, Any]], columns: Sequence[str], out: TextIO) -> None:
    """
    Print ``rows`` as an aligned table of ``columns``: a header, then a line
    per row, ``-`` for a missing or ``None`` value.
    """
    cells = [[str(c).upper() for c in columns]]
    cells += [["-" if row.get(c) is None else str(row.get(c)) for c in columns] for row in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(columns))]
    for r in cells:
        out.write("  ".join(v.ljust(w) for v, w in zip(r, widths, strict=True)).rstrip() + "\n")


def print_error(status: int, body: Any, out: TextIO) -> None:
    """
    Print an error answer: its ``error`` and ``detail`` when it is one of
    the agent's JSON errors, else the status and the body as they came.
    """
    if isinstance(body, dict) and "error" in body:
        detail = body.get("detail")
        if not isinstance(detail, str):
            detail = json.dumps(detail, indent=2)
        out.write(f"glimpse: {body['error']} (HTTP {status})\n")
        if detail:
            out.write(f"  {detail}\n")
    else:
        out.write(f"glimpse: HTTP {status}: {body}\n")


def exit_code(status: int) -> int:
    """
    The exit code for an answer's HTTP status: :obj:`EXIT_OK` below 400,
    :obj:`EXIT_NOT_FOUND` for a 404, else :obj:`EXIT_REFUSED`.
    """
    if status < 400:
        return EXIT_OK
    return EXIT_NOT_FOUND if status == 404 else EXIT_REFUSED


def quote_segment(text: str) -> str:
    """
    ``text`` (an address, a provider name) quoted as one URL path segment,
    keeping ``*`` and ``.`` as they are.
    """
    return urllib.parse.quote(text, safe="*.")


def fetch(method: str, url: str, err: TextIO, body: Any = None,
          headers: Mapping[str, str] | None = None,
          failed: int | None = None) -> tuple[Any, int]:
    """
    One request whose good answer is a 200; any other answer is printed to
    ``err``.

    :param method: the HTTP method.
    :param url: the full URL.
    :param err: where an error answer is printed.
    :param body: a JSON-able body, or ``None`` for none.
    :param headers: more request headers.
    :param failed: the exit code for an error answer (default: by status).
    :return: ``(decoded body, EXIT_OK)``, or ``(None, exit code)``.
    """
    status, answer = request(method, url, body, headers)
    if status != 200:
        print_error(status, answer, err)
        return None, exit_code(status) if failed is None else failed
    return answer, EXIT_OK


def print_json(body: Any, out: TextIO) -> None:
    """
    Print a body for scripts (``--json``).
    """
    json.dump(body, out, indent=2, sort_keys=True)
    out.write("\n")


def sse_events(lines: Iterable[bytes],
               comments: list[str] | None = None) -> Iterator[tuple[str, str | None, Any]]:
    """
    The Server-Sent Events of a stream: ``(event, id, data)`` for each, the
    data decoded as JSON.

    :param lines: the stream's lines (``bytes``), e.g. an HTTP response.
    :param comments: a list to append comment lines (heartbeats) to, or
        ``None`` to skip them.
    """
    kind, event_id = "message", None
    data: list[str] = []
    for raw in lines:
        line = raw.decode("utf-8").rstrip("\r\n")
        if not line:
            if data:
                yield kind, event_id, json.loads("\n".join(data))
            kind, data = "message", []
        elif line.startswith(":"):
            if comments is not None:
                comments.append(line)
        else:
            name, _, value = line.partition(":")
            value = value[1:] if value.startswith(" ") else value
            if name == "event":
                kind = value
            elif name == "id":
                event_id = value
            elif name == "data":
                data.append(value)
