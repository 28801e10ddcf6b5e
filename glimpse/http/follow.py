"""
What lookups and topology answers share: ``X-Glimpse-Index`` on every
answer, long-polls (``?index=N&wait=30s``) and Server-Sent Event streams,
all through the :class:`glimpse.http.hub.Hub`.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import TYPE_CHECKING

import attrs
from twisted.internet.defer import CancelledError
from twisted.logger import Logger
from twisted.web.server import NOT_DONE_YET

from glimpse.duration import InvalidDuration, parse_duration
from glimpse.http._json import HTTPError, error_body, finish, write_json
from glimpse.http.events import sse_event
from glimpse.http.limits import client_key
from glimpse.mapping import CONSUL_META_PREFIX, is_own_meta_key

if TYPE_CHECKING:
    from twisted.python.failure import Failure
    from twisted.web.server import Request

    from glimpse.http.hub import Compute, Hub, Jobs, Key, Matches, Subject
    from glimpse.http.limits import ClientSlots
    from glimpse.view.serving import MetaFilter

log = Logger()

#: The longest long-poll a client may ask for, as Consul's blocking queries.
MAX_WAIT = 600.0

#: A provider's meta key, as the provider state takes them.
_META_KEY = re.compile(r"^[A-Za-z0-9_-]{1,128}$")
#: The longest meta value a provider may give.
_MAX_META_VALUE = 512

#: The ``Retry-After`` (seconds) of a long-poll or stream refused because
#: its client has too many open.
HOLD_RETRY_AFTER = 5


def hold(request: Request, slots: ClientSlots | None) -> None:
    """
    Count ``request`` (a long-poll or a stream) among those its client has
    open, until it ends.

    :param slots: the count per client, or ``None`` for no cap.
    :raises HTTPError: 429 with ``Retry-After`` when the client has
        ``slots.cap`` open already.
    """
    if slots is None:
        return
    client = client_key(request.getClientAddress())
    if not slots.take(client):
        raise HTTPError(
            429, f"too many long-polls and streams from {client}: {slots.cap} are open",
            "close the streams and long-polls you no longer read; follow many addresses of "
            "a job or env with one stream of /v1/watch/topology/<zone>/<product>/<env>; "
            f"retry after {HOLD_RETRY_AFTER}s (an operator can raise "
            "--http-max-streams-per-client)", {b"retry-after": b"%d" % HOLD_RETRY_AFTER})
    request.notifyFinish().addBoth(lambda _: slots.give_back(client))


def parse_wait(request: Request, default: float = 30.0) -> float:
    """
    The ``wait`` parameter in seconds (``30s``, ``500ms``, ``2m``, ``10``).

    :param default: seconds when there is none.
    :raises HTTPError: 400 for what is not a duration, or longer than
        :obj:`MAX_WAIT`.
    """
    raw = request.args.get(b"wait", [None])[0]
    if raw is None:
        return default
    try:
        seconds = parse_duration(raw.decode("ascii", "replace"), bare_unit="s")
    except InvalidDuration:
        raise HTTPError(400, "invalid 'wait'",
                        "write a duration such as wait=30s, 500ms or 2m") from None
    if seconds > MAX_WAIT:
        raise HTTPError(400, "'wait' is too long", f"at most {MAX_WAIT:g}s")
    return seconds


def parse_index(request: Request) -> int | None:
    """
    The ``index`` parameter, or ``None``.

    :raises HTTPError: 400 for what is not an index.
    """
    raw = request.args.get(b"index", [None])[0]
    if raw is None:
        return None
    if not raw.isdigit() or len(raw) > 19:
        raise HTTPError(400, "invalid 'index'",
                        "use the X-Glimpse-Index of an earlier answer, e.g. index=1234")
    return int(raw)


def parse_bool(request: Request, name: str) -> bool:
    """
    A ``true``/``false`` parameter (default false; ``1`` and ``0`` too).

    :raises HTTPError: 400 for any other value.
    """
    raw = request.args.get(name.encode(), [b"false"])[0].lower()
    if raw not in (b"true", b"false", b"1", b"0"):
        raise HTTPError(400, f"invalid {name!r}", f"use ?{name}=true or ?{name}=false")
    return raw in (b"true", b"1")


def parse_meta(request: Request) -> MetaFilter:
    """
    The meta filter of ``?meta.<key>=<value>`` parameters (repeatable: every
    one must match), sorted.

    :raises HTTPError: 400 for a key that is not a provider's meta key, a
        value too long, ``meta`` without a key, or one key given two values.
    """
    found: dict[str, str] = {}
    for raw, values in sorted(request.args.items()):
        if raw == b"meta":
            raise HTTPError(400, "a meta filter names its key",
                            "write ?meta.<key>=<value>, e.g. ?meta.version=1.4.2 "
                            "(repeat it: every one must match)")
        if not raw.startswith(b"meta."):
            continue
        key = raw[len(b"meta."):].decode("utf-8", "replace")
        if not _META_KEY.match(key) or is_own_meta_key(key) \
                or key.startswith(CONSUL_META_PREFIX):
            raise HTTPError(400, f"invalid meta key {key!r}",
                            "a provider's meta key is 1-128 of A-Z a-z 0-9 _ -, not starting "
                            "with 'glimpse-' or 'consul-': e.g. ?meta.version=1.4.2")
        for value in (v.decode("utf-8", "replace") for v in values):
            if len(value) > _MAX_META_VALUE:
                raise HTTPError(400, f"meta.{key} is too long",
                                f"a meta value has at most {_MAX_META_VALUE} characters")
            if found.setdefault(key, value) != value:
                raise HTTPError(400, f"meta.{key} is given two values",
                                f"an instance has one value of {key}, so nothing could "
                                f"match both {found[key]!r} and {value!r}; give one")
    return tuple(sorted(found.items()))


@attrs.frozen
class Followed:
    """
    What a resource tells the hub about the answer it serves.

    :ivar key: the answer's identity among the hub's subjects.
    :ivar compute: returns a Deferred of the body (or an :class:`HTTPError`).
    :ivar matches: ``matches(zone, name)``: can this change of the view
        change the answer?  (``name`` is ``None`` for a change of the zone's
        catalog.)
    :ivar jobs: returns the ``(zone, consul service)`` pairs it reads.
    :ivar field: the list of items in the body.
    :ivar item_key: an item's id.
    :ivar check: raises the :class:`HTTPError` that an answer kept from before
        would hide (the zone's view has grown too old), else nothing.
    """

    key: Key
    compute: Compute
    matches: Matches
    jobs: Jobs
    field: str
    item_key: str
    check: Callable[[], None] | None = None

    def subject(self, hub: Hub) -> Subject:
        """
        The hub's subject for this answer.
        """
        return hub.subject(self.key, self.compute, self.matches, self.field,
                           self.item_key, self.jobs)


def _gone_or_log(failure: Failure, request: Request) -> None:
    # A client that hangs up cancels its wait: nothing to report.
    if not failure.check(CancelledError):
        log.failure("Answering {uri} failed", failure, uri=request.uri)


def _send(request: Request, subject: Subject) -> None:
    if request._disconnected or request.finished:
        return
    request.setResponseCode(200 if subject.error is None else subject.error[0])
    request.setHeader(b"content-type", b"application/json")
    request.setHeader(b"x-glimpse-index", str(subject.index).encode())
    request.write(subject.encoded)
    request.finish()


def answer(request: Request, hub: Hub, followed: Followed,
           slots: ClientSlots | None = None) -> int:
    """
    Render a GET: at once, or as a long-poll when ``?index=`` is given.

    Both are served from the hub's subject, which keeps the encoded answer
    current as the view changes: a steady-state lookup costs no
    computation, only the check that the view may still serve.

    :param slots: the long-polls and streams each client has open, or
        ``None`` for no cap.
    :return: ``NOT_DONE_YET``.
    :raises HTTPError: for bad parameters, a view too old to serve, or
        (429) a client with too many long-polls and streams open.
    """
    index = parse_index(request)
    wait = parse_wait(request)
    if followed.check is not None:
        followed.check()
    subject = followed.subject(hub)
    if index is None:
        if subject.error is not None and subject.error[0] >= 500:
            # A failure may have passed without a change event to say so.
            subject.refresh()
        d = subject.current()
        d.addCallback(lambda s: _send(request, s))
        # Keep no subject for what does not exist: a scan of made-up
        # addresses must not fill the hub.
        d.addCallback(lambda _: hub.forget_if_idle(subject, errors_only=True))
        d.addErrback(lambda f: finish(request, 500, error_body(
            "internal error", "Glimpse failed to answer; its log has the details")))
        return NOT_DONE_YET
    hold(request, slots)
    d = hub.wait(subject, index, wait)
    request.notifyFinish().addErrback(lambda _: d.cancel())

    d.addCallback(lambda s: _send(request, s))
    d.addErrback(_gone_or_log, request)
    return NOT_DONE_YET


class Stream:
    """
    One Server-Sent Event stream: writes what its subject sends, holding
    at most ``limit`` bytes while the client does not read, then closing the
    stream with the reason.  It is the request's push producer.

    :ivar closed: the stream has ended (closed, or the client went away).
    """

    def __init__(self, request: Request, subject: Subject, limit: int) -> None:
        self._request = request
        self._subject = subject
        self._limit = limit
        self._paused = False
        self._pending: list[bytes] = []
        self._pending_bytes = 0
        self.closed = False
        request.registerProducer(self, True)
        request.notifyFinish().addBoth(lambda _: self._gone())

    def send(self, data: bytes) -> None:
        """
        Write ``data``, or hold it while the client is not reading.
        """
        if self.closed:
            return
        if not self._paused:
            self._request.write(data)
            return
        self._pending.append(data)
        self._pending_bytes += len(data)
        if self._pending_bytes > self._limit:
            self.close(f"the client read too slowly: more than {self._limit} bytes "
                       "were waiting; reconnect with Last-Event-ID to resume")

    def close(self, reason: str) -> None:
        """
        End the stream with a ``close`` event saying why.
        """
        if self.closed:
            return
        self._gone()
        log.info("Closed a stream of {subject}: {reason}", subject=self._subject.key,
                 reason=reason)
        self._request.write(sse_event("close", {"reason": reason}))
        self._request.unregisterProducer()
        self._request.finish()

    def _gone(self) -> None:
        self.closed = True
        self._subject.streams.discard(self)

    def pauseProducing(self) -> None:
        """
        The client's socket is full: hold events from now on.
        """
        self._paused = True

    def resumeProducing(self) -> None:
        """
        The client reads again: write what was held.
        """
        self._paused = False
        pending, self._pending, self._pending_bytes = self._pending, [], 0
        for data in pending:
            self.send(data)

    def stopProducing(self) -> None:
        """
        The connection is gone.
        """
        self._gone()


def stream(request: Request, hub: Hub, followed: Followed, limit: int,
           slots: ClientSlots | None = None) -> int:
    """
    Render a ``text/event-stream`` of ``followed``: a snapshot (or, with a
    known ``Last-Event-ID``, the events missed), then changes as they come.

    What does not exist (yet) is followed too: the stream starts with an
    ``unavailable`` event of status 404, and a snapshot follows when it
    appears (a deploy waiting for its new job).  Only bad input ends the
    request at once, with its 400.

    :param limit: bytes held for a client that does not read, before the
        stream is closed.
    :param slots: the long-polls and streams each client has open, or
        ``None`` for no cap.
    :return: ``NOT_DONE_YET``.
    :raises HTTPError: 429 for a client with too many long-polls and
        streams open.
    """
    hold(request, slots)
    last_id = request.getHeader(b"last-event-id")
    subject = followed.subject(hub)
    request.setHeader(b"content-type", b"text/event-stream; charset=utf-8")
    request.setHeader(b"cache-control", b"no-cache")
    request.setHeader(b"x-accel-buffering", b"no")

    def ready(subject: Subject) -> None:
        if request._disconnected or request.finished:
            return
        if subject.error is not None and subject.error[0] == 400:
            # Nothing could ever be there: say so, as a GET would.
            finish(request, subject.error[0], subject.error[1])
            hub.forget_if_idle(subject, errors_only=True)
            return
        s = Stream(request, subject, limit)
        missed = subject.since(last_id.decode("ascii", "replace")) if last_id else None
        request.write(b"retry: 2000\n\n")
        for data in missed if missed is not None else [subject.snapshot()]:
            s.send(data)
        subject.streams.add(s)

    # current() gives a Deferred of our own: a failure here must not poison
    # the subject's for everyone else.
    d = subject.current().addCallback(ready)
    d.addErrback(_gone_or_log, request)
    return NOT_DONE_YET


def render_error(request: Request, e: HTTPError) -> bytes:
    """
    An :class:`HTTPError` as a JSON answer (for resources that render bytes).
    """
    return write_json(request, e.code, error_body(e.error, e.detail), e.headers)
