"""
Test doubles for Glimpse: an in-memory Consul HTTP API and an agent that
cannot connect.

Use :class:`FakeConsul` through ``treq.testing.StubTreq``; since it holds blocking
queries with ``NOT_DONE_YET``, call the stub's ``flush()`` after anything
that answers one (:class:`FakeConsul.set`, :class:`FakeConsul.release`,
:class:`FakeConsul.fail`).
"""

import json
import random
from collections.abc import Callable
from typing import Any

import attrs
from twisted.internet.defer import Deferred, fail
from twisted.internet.error import ConnectionRefusedError
from twisted.web.iweb import IAgent
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET, Request
from zope.interface import implementer

from glimpse.duration import parse_duration

#: Index of a held request that only :class:`FakeConsul.release` answers.
_FOREVER = float("inf")


@attrs.frozen
class RecordedRequest:
    """
    One request the fake Consul received.

    :ivar method: ``GET``, ``PUT``, ...
    :ivar path: the API path after ``/v1/``, without the query.
    :ivar args: the query parameters, each its first value, as ``str``.
    :ivar headers: the request headers, lower-case names, each its first
        value, as ``str``.
    :ivar body: the request body (``bytes``).
    """

    method: str
    path: str
    args: dict[str, str]
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        """
        The body decoded as JSON.

        :return: the decoded body.
        """
        return json.loads(self.body)


@attrs.define
class _Held:
    """
    A request held open: a blocking query, or any request while stalled.
    """

    request: Request
    path: str
    index: float
    timer: Any = None


class FakeConsul(Resource):
    """
    A Consul agent's HTTP API in memory, enough for Glimpse's client.

    Each path (after ``/v1/``, without the query) holds a JSON body and an
    index, answered with ``X-Consul-Index``.  A GET with ``index=N`` where N
    is at least the path's index blocks, as Consul's blocking queries do,
    until the path is :obj:`set` again or :obj:`release`d, or, given a clock, until
    its ``wait`` (5 minutes by default) runs out.  A path that was never
    set answers 404.  ``agent/self``, ``catalog/datacenters``,
    ``catalog/services`` and ``coordinate/datacenters`` are set at the start.
    Answers carry ``X-Consul-KnownLeader`` and ``X-Consul-LastContact`` once
    :attr:`known_leader` is set.

    :param datacenter: the agent's datacenter.
    :param node: the agent's node name.
    :param clock: an ``IReactorTime`` to end blocking queries after their
        ``wait`` as Consul does (without its jitter); without one they are
        held until answered by hand.
    :ivar requests: every :class:`RecordedRequest`, in order.
    """

    isLeaf = True

    def __init__(self, datacenter: str = "dc1", clock: Any = None,
                 node: str = "node1") -> None:
        super().__init__()
        self._clock = clock
        self.requests: list[RecordedRequest] = []
        self._values: dict[str, tuple[Any, int]] = {}
        self._index = 0
        self._held: list[_Held] = []
        self._failure: tuple[int, str] | None = None
        self._stalled = False
        #: ``X-Consul-KnownLeader`` of every answer (``None``: not sent).
        self.known_leader: bool | None = None
        #: ``X-Consul-LastContact`` of every answer, seconds.
        self.last_contact = 0.0
        self.set("agent/self", {"Config": {"Datacenter": datacenter, "NodeName": node}})
        self.set("catalog/datacenters", [datacenter])
        self.set("catalog/services", {"consul": []})
        self.set("coordinate/datacenters", [])

    # Telling the fake what to answer

    def set(self, path: str, body: Any, index: int | None = None) -> None:
        """
        Give a path a new answer and wake the queries blocked on it.

        :param path: the API path after ``/v1/``, e.g.
            ``health/service/shop--prod--web``.
        :param body: the JSON-able answer.
        :param index: the path's new index; by default one more than any
            index so far, as Consul's raft index grows.
        """
        self._index = self._index + 1 if index is None else index
        self._values[path] = (body, self._index)
        self._answer_held(lambda held: held.path == path and held.index < self._index)

    def fail(self, status: int, message: str = "fake Consul failure") -> None:
        """
        Answer every request, and every held query, with an HTTP error until
        :obj:`recover` is called.

        :param status: the HTTP status, e.g. 500 or 403.
        :param message: the plain-text body, as Consul writes its errors.
        """
        self._failure = (status, message)
        self._answer_held(lambda held: True)

    def recover(self) -> None:
        """
        Stop failing: answer from the paths' values again.
        """
        self._failure = None

    def stall(self) -> None:
        """
        Hold every request from now on without answering it, like an agent
        that accepted the connection and hung.  :obj:`release` answers them.
        """
        self._stalled = True

    def unstall(self) -> None:
        """
        Answer new requests again; those already held stay held.
        """
        self._stalled = False

    def release(self, path: str | None = None) -> None:
        """
        Answer held queries now with their path's current value, as Consul
        does when a blocking query's ``wait`` runs out.

        :param path: only the queries of this path; every one by default.
        """
        self._answer_held(lambda held: path is None or held.path == path)

    # Reading what happened

    @property
    def held(self) -> int:
        """
        How many requests are being held unanswered.
        """
        return len(self._held)

    def count(self, path_prefix: str = "") -> int:
        """
        How many requests were received for some paths.

        :param path_prefix: count the paths starting with it (every path by
            default).
        :return: the count.
        """
        return sum(1 for r in self.requests if r.path.startswith(path_prefix))

    # The resource

    def render(self, request: Request) -> bytes | int:
        """
        Record the request, then answer it now or hold it.

        :param request: the request.
        :return: the body, or ``NOT_DONE_YET`` when held.
        """
        path = request.path.decode("utf-8")
        if not path.startswith("/v1/"):
            request.setResponseCode(404)
            return b"no such API"
        path = path[len("/v1/"):]
        args = {k.decode(): v[0].decode() for k, v in request.args.items()}
        headers = {k.decode().lower(): v[0].decode()
                   for k, v in request.requestHeaders.getAllRawHeaders()}
        content = request.content
        assert content is not None  # Request.requestReceived has set it.
        content.seek(0)
        self.requests.append(RecordedRequest(
            request.method.decode(), path, args, headers, content.read()))
        if self._stalled:
            index = _FOREVER
        elif self._failure is None and request.method == b"GET" and "index" in args:
            index = float(args["index"])
        else:
            index = None
        current = self._values.get(path, (None, None))[1]
        if index is not None and (current is None or index >= current):
            held = _Held(request, path, index)
            self._held.append(held)
            if self._clock is not None and index != _FOREVER:
                held.timer = self._clock.callLater(
                    parse_duration(args.get("wait", "5m"), bare_unit="s"),
                    self._answer_held, lambda h: h is held)
            request.notifyFinish().addBoth(lambda _: self._forget(held))
            return NOT_DONE_YET
        return self._body(request, path)

    def _forget(self, held: _Held) -> None:
        """
        Stop holding a request: it was answered or its client went away.
        """
        if held in self._held:
            self._held.remove(held)
        if held.timer is not None and held.timer.active():
            held.timer.cancel()

    def _answer_held(self, which: Callable[[_Held], bool]) -> None:
        """
        Answer the held requests for which ``which(held)`` is true.
        """
        answer = [h for h in self._held if which(h)]
        for held in answer:
            self._forget(held)
            held.request.write(self._body(held.request, held.path))
            held.request.finish()

    def _body(self, request: Request, path: str) -> bytes:
        """
        Set the status and headers of an answer and return its body.
        """
        if self._failure is not None:
            status, message = self._failure
            request.setResponseCode(status)
            request.setHeader(b"content-type", b"text/plain; charset=utf-8")
            return message.encode("utf-8")
        if path not in self._values:
            request.setResponseCode(404)
            return b"Unknown path in fake Consul: " + path.encode("utf-8")
        body, index = self._values[path]
        request.setHeader(b"content-type", b"application/json")
        request.setHeader(b"x-consul-index", str(index).encode())
        if self.known_leader is not None:
            request.setHeader(b"x-consul-knownleader", b"true" if self.known_leader else b"false")
            request.setHeader(b"x-consul-lastcontact", b"%d" % (self.last_contact * 1000))
        return json.dumps(body).encode("utf-8")


@implementer(IAgent)
class UnreachableAgent:
    """
    An ``IAgent`` whose every request fails with ``ConnectionRefusedError``,
    like one pointed at a port nothing listens on.  Wrap it in a treq
    ``HTTPClient``.

    :ivar attempts: how many requests were tried.
    """

    def __init__(self) -> None:
        self.attempts = 0

    def request(self, method: bytes, uri: bytes, headers: object = None,
                bodyProducer: object = None) -> Deferred[Any]:
        """
        Fail at once: the connection was refused.

        :return: a Deferred failing with ``ConnectionRefusedError``.
        """
        self.attempts += 1
        return fail(ConnectionRefusedError("fake Consul is down"))


def mutate_packet(rng: random.Random, data: bytes) -> bytes:
    """
    One random mutation of a DNS packet, for fuzzing: flipped bits, a cut,
    inserted bytes, a bad header byte, a compression pointer, random section
    counts, or fresh random bytes.  Shared by the suite's fuzz test and
    ``bench/fuzz``.

    :param rng: a ``random.Random`` (seeded, so a failure can be replayed).
    :param data: a valid packet (``bytes``).
    :return: the mutated packet (``bytes``).
    """
    buf = bytearray(data)
    kind = rng.randrange(7)
    if kind == 0 and buf:
        for _ in range(rng.randint(1, 4)):
            buf[rng.randrange(len(buf))] ^= 1 << rng.randrange(8)
    elif kind == 1 and buf:
        del buf[rng.randrange(len(buf)):]
    elif kind == 2:
        at = rng.randrange(len(buf) + 1)
        buf[at:at] = rng.randbytes(rng.randint(1, 16))
    elif kind == 3 and len(buf) > 2:
        buf[rng.randrange(2, min(12, len(buf)))] = rng.choice(
            (0x00, 0x01, 0x80, 0xFF, 0x28, 0x78, 0x30))
    elif kind == 4 and len(buf) > 12:
        at = rng.randrange(12, len(buf))
        buf[at:at + 2] = bytes((0xC0 | rng.randrange(64), rng.randrange(256)))
    elif kind == 5 and len(buf) >= 12:
        buf[4:12] = rng.randbytes(8)
    else:
        buf = bytearray(rng.randbytes(rng.randrange(600)))
    return bytes(buf)


class EmptyJobs:
    """
    What the metrics collector reads of :class:`glimpse.view.jobs.Jobs`,
    with no job in use.
    """

    def blocking_count(self) -> int:
        """
        No job with a blocking watch.
        """
        return 0

    def polled_count(self) -> int:
        """
        No job kept fresh by cached reads.
        """
        return 0

    def poll_period(self) -> float:
        """
        The default period.
        """
        return 1.0


class EmptyTopology:
    """
    What the metrics collector reads of a
    :class:`glimpse.view.topology.Topology`, with no zone and no job yet.
    """

    def __init__(self) -> None:
        self.zones: dict[str, Any] = {}
        self.jobs = EmptyJobs()

    def watch_count(self) -> int:
        """
        No blocking query.
        """
        return 0
