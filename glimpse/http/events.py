"""
Server-Sent Events as the hub sends them: encoding one event, the events
that turn one answer into the next (``add`` / ``remove`` / ``update`` per
item, then a ``summary``), and replaying them, as a stream's reader does.
Pure.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from typing import Any


def sse_event(kind: str, data: Any, event_id: str | None = None) -> bytes:
    """
    One Server-Sent Event, encoded.

    :param kind: its ``event:``.
    :param data: its ``data:``, encoded as JSON.
    :param event_id: its ``id:``, or ``None`` for none.
    """
    lines = [f"event: {kind}"]
    if event_id is not None:
        lines.append(f"id: {event_id}")
    lines.append("data: " + json.dumps(data, sort_keys=True, separators=(",", ":")))
    return ("\n".join(lines) + "\n\n").encode("utf-8")


def item_events(old: Mapping[str, Any] | None, new: Mapping[str, Any] | None, field: str,
                key: str) -> list[tuple[str, Any]] | None:
    """
    The events that turn body ``old`` into ``new``: ``add`` / ``remove`` /
    ``update`` per item, then a ``summary`` (the body without its items)
    when anything besides the items changed; ``None`` when there is no old
    body (a snapshot is needed).

    :param field: the key of the list of items in a body.
    :param key: the key of an item's identity.
    :return: ``(kind, data)`` pairs, or ``None``.
    """
    if old is None or new is None:
        return None
    before = {i[key]: i for i in old[field]}
    after = {i[key]: i for i in new[field]}
    events: list[tuple[str, Any]] = []
    for name, item in after.items():
        if name not in before:
            events.append(("add", item))
        elif before[name] != item:
            events.append(("update", item))
    events.extend(("remove", {key: name}) for name in before if name not in after)
    rest = {k: v for k, v in new.items() if k != field}
    if rest != {k: v for k, v in old.items() if k != field}:
        events.append(("summary", rest))
    return events


def replay(snapshot: Mapping[str, Any], events: Iterable[tuple[str, Any]], field: str,
           key: str) -> dict[str, Any]:
    """
    Apply ``events`` to a ``snapshot`` body: what a stream's reader holds.

    :param events: ``(kind, data)`` pairs, as :func:`item_events` makes them.
    :param field: the key of the list of items in a body.
    :param key: the key of an item's identity.
    """
    items = {i[key]: i for i in snapshot[field]}
    for kind, data in events:
        if kind == "snapshot":
            snapshot, items = data, {i[key]: i for i in data[field]}
        elif kind == "summary":
            snapshot = dict(data, **{field: []})
        elif kind == "remove":
            items.pop(data[key], None)
        else:
            items[data[key]] = data
    return dict(snapshot, **{field: sorted(items.values(), key=lambda i: i[key])})
