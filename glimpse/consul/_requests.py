"""
How the Consul client asks: every request takes a connection of the budget
(:mod:`glimpse.consul._budget`), its answer is decoded
(:func:`glimpse.consul._answers.decode`) and its failures become
:class:`~glimpse.consul.ConsulError`; cached reads are pipelined per zone
(:mod:`glimpse.consul._pipeline`).  :class:`glimpse.consul.ConsulClient`
adds the endpoints.
"""

import json
from collections.abc import Callable, Mapping
from typing import Any
from urllib.parse import urlencode, urlsplit

from treq.client import HTTPClient
from twisted.internet.defer import CancelledError, Deferred
from twisted.internet.defer import TimeoutError as DeferTimeout
from twisted.internet.error import TimeoutError as ConnectTimeout
from twisted.internet.interfaces import IReactorTime, IStreamClientEndpoint
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web.client import ResponseFailed

from glimpse.consul._answers import (
    ConsulError,
    ConsulTLSError,
    ConsulUnavailable,
    Response,
    decode,
)
from glimpse.consul._budget import ConnectionBudget, Use
from glimpse.consul._paths import TOKEN_HEADER
from glimpse.consul._pipeline import PipelinedReader, PipelinePool
from glimpse.consul._tls import ConsulTLS, tls_problem


def _cancelled(failure: Failure) -> bool:
    # A cancelled request fails with CancelledError, or, once treq's agent
    # has sent it, with a ResponseFailed wrapping one.
    return bool(failure.check(CancelledError)) or (
        isinstance(failure.value, ResponseFailed)
        and any(r.check(CancelledError) for r in failure.value.reasons))


#: Seconds a pipelined connection stays open without a read.
PIPE_IDLE = 5.0


class Requests:
    """
    How :class:`~glimpse.consul.ConsulClient` asks the agent: every request
    within the connection budget, decoded, its failures translated; cached
    reads pipelined per zone.  The parameters are the client's.
    """

    log = Logger()

    def __init__(self, http: HTTPClient, base_url: str, clock: IReactorTime,
                 token: str | None = None, timeout: float = 10.0,
                 budget: ConnectionBudget | None = None,
                 pipe_endpoint: Callable[[], IStreamClientEndpoint] | None = None,
                 tls: ConsulTLS | None = None, pipes: int | None = None) -> None:
        self._http = http
        self._base = base_url.rstrip("/")
        self._tls = tls or ConsulTLS()
        self._clock = clock
        self._token = token
        self._timeout = timeout
        self.budget = budget or ConnectionBudget(64, 16)
        self._pipe_endpoint = pipe_endpoint
        #: Pipelined connections per zone: a few, so that a burst of first
        #: reads is served by the agent in parallel, but never more than a
        #: quarter of the reserved connections.
        self._pipes = pipes or max(1, min(4, self.budget.reserved // 4))
        self._readers: dict[str, PipelinePool] = {}
        #: Read targets, made once each (a bounded memo).
        self._targets: dict[tuple[object, ...], str] = {}
        self.requests: dict[str, int] = {}
        self.errors: dict[str, int] = {}
        #: The last agent/services answer per filter: ``(content, body)``.
        self._services: dict[str | None, tuple[bytes | None, Any]] = {}
        #: Requests under way, cancelled by :meth:`close`.
        self._pending: set[Deferred[Response]] = set()

    def _headers(self) -> dict[str, list[str]]:
        headers = {"Accept": ["application/json"]}
        if self._token:
            headers[TOKEN_HEADER] = [self._token]
        return headers

    def _request(
        self, method: str, path: str, params: Mapping[str, str | None] | None = None,
        body: object = None, timeout: float | None = None, endpoint: str | None = None,
        unchanged_index: int | None = None, reuse: tuple[bytes | None, Any] | None = None,
        use: Use = Use.CONTROL,
    ) -> Deferred[Response]:
        """
        Send one request, once the budget has a connection for it, and
        decode its JSON answer.

        :param method: ``GET`` or ``PUT``.
        :param path: the API path after ``/v1/``, already quoted.
        :param params: query parameters (a dict; ``None`` values are left out).
        :param body: an object sent as JSON.
        :param timeout: seconds for the whole exchange, the wait for a
            connection and the body included.
        :param endpoint: the name this request is counted and reported under.
        :param unchanged_index: see :func:`glimpse.consul._answers.decode`.
        :param reuse: see :func:`glimpse.consul._answers.decode`.
        :param use: what the connection is for (job watches never take the
            reserved connections).
        :return: a Deferred firing with a :class:`Response` or failing with a
            :class:`ConsulError`.
        """
        endpoint = endpoint or path.split("?")[0]
        url = f"{self._base}/v1/{path}"
        # Consul never redirects, and a redirect followed would take the ACL
        # token to wherever it points.
        headers = self._headers()
        kwargs: dict[str, Any] = {"headers": headers, "allow_redirects": False}
        if params:
            kwargs["params"] = {k: v for k, v in params.items() if v is not None}
        if body is not None:
            kwargs["data"] = json.dumps(body).encode("utf-8")
            headers["Content-Type"] = ["application/json"]
        held = False

        def send(_: None) -> Deferred[Response]:
            nonlocal held
            held = True
            self.requests[endpoint] = self.requests.get(endpoint, 0) + 1
            sent: Deferred[Any] = self._http.request(method, url, **kwargs)
            return sent.addCallback(self._read, endpoint, unchanged_index, reuse)

        timed_out = False

        def expired(result: object, seconds: float) -> object:
            nonlocal timed_out
            timed_out = True
            return result

        def failed(failure: Failure) -> Failure:
            # A request its caller cancelled (a watch handed to another job,
            # Glimpse stopping) is no error of Consul's: not counted.
            if not timed_out and _cancelled(failure):
                raise ConsulUnavailable(endpoint, "cancelled")
            return self._translate(failure, endpoint)

        d = self.budget.acquire(use).addCallback(send)
        d.addTimeout(timeout or self._timeout, self._clock, onTimeoutCancel=expired)
        d.addErrback(failed)
        self._pending.add(d)

        def done(result: object) -> object:
            self._pending.discard(d)
            if held:
                self.budget.release(use)
            return result

        return d.addBoth(done)

    def close(self) -> None:
        """
        Cancel every request under way (each fails with
        :class:`ConsulUnavailable`) and close the pipelined connections:
        Glimpse is stopping.
        """
        for d in list(self._pending):
            d.cancel()
        for reader in self._readers.values():
            reader.close()

    def _read(self, response: Any, endpoint: str, unchanged_index: int | None = None,
              reuse: tuple[bytes | None, Any] | None = None) -> Deferred[Response]:
        # response: treq's, whose content() reads the body.
        d: Deferred[bytes] = response.content()

        def header(name: bytes) -> bytes | None:
            values = response.headers.getRawHeaders(name)
            return values[0] if values else None

        return d.addCallback(lambda content: decode(
            response.code, response.phrase.decode("ascii", "replace"), header, content,
            endpoint, unchanged_index, reuse))

    def _translate(self, failure: Failure, endpoint: str) -> Failure:
        self.errors[endpoint] = self.errors.get(endpoint, 0) + 1
        if failure.check(ConsulError):
            return failure
        if failure.check(DeferTimeout, ConnectTimeout) or _cancelled(failure):
            # addTimeout cancels the request; the agent then fails it with
            # ResponseNeverReceived (a ResponseFailed) wrapping the cancel.
            raise ConsulUnavailable(endpoint, "timed out")
        problem = tls_problem(failure, self._tls, self._base)
        if problem is not None:
            raise ConsulTLSError(endpoint, problem)
        raise ConsulUnavailable(endpoint, failure.getErrorMessage() or repr(failure.value))

    def _get(self, path: str, params: Mapping[str, str | None] | None = None,
             index: int | None = None, wait: float | None = None,
             endpoint: str | None = None, use: Use = Use.CONTROL) -> Deferred[Response]:
        """
        A GET, blocking when ``index`` is given.

        :param index: the ``X-Consul-Index`` of the previous answer, for a
            blocking query (Consul's rule: never below 1).
        :param wait: seconds the blocking query may wait on Consul's side.
        :param use: what the connection is for.
        """
        query = dict(params or {})
        timeout = None
        if index is not None:
            query["index"] = str(max(1, index))
            if wait is not None:
                query["wait"] = f"{int(wait)}s"
                # Consul adds up to wait/16 of jitter; leave room for it
                # before deciding the connection is dead.
                timeout = wait + wait / 16 + self._timeout
        return self._request("GET", path, query, timeout=timeout, endpoint=endpoint,
                             unchanged_index=max(1, index) if index is not None else None,
                             use=use)

    def _cached(self, dc: str, path: str, params: dict[str, str],
                unchanged_index: int | None, endpoint: str) -> Deferred[Response]:
        """
        A ``?cached`` GET, pipelined on the zone's connection: the client
        agent answers it from its own view (streaming), without asking a
        server.
        """
        if self._pipe_endpoint is None:
            return self._request("GET", path, {**params, "cached": ""}, endpoint=endpoint,
                                 unchanged_index=unchanged_index)
        reader = self._readers.get(dc)
        if reader is None:
            reader = self._readers[dc] = PipelinePool(self._pipelined_reader, self._pipes)
        self.requests[endpoint] = self.requests.get(endpoint, 0) + 1
        # The same few thousand reads go out every second: their targets
        # are made once (a bounded memo).
        key = (path, *params.items())
        target = self._targets.get(key)
        if target is None:
            if len(self._targets) >= 100_000:
                self._targets.clear()
            target = self._targets[key] = f"/v1/{path}?{urlencode(params)}&cached"
        d = reader.get(target).addCallback(lambda answer: decode(
            answer.status, "", answer.headers.get, answer.body, endpoint, unchanged_index))
        return d.addErrback(self._translate, endpoint)

    def _pipelined_reader(self) -> PipelinedReader:
        assert self._pipe_endpoint is not None
        return PipelinedReader(
            self._pipe_endpoint(), self._clock, urlsplit(self._base).netloc,
            {TOKEN_HEADER: self._token} if self._token else None, timeout=self._timeout,
            acquire=lambda: self.budget.acquire(Use.CONTROL),
            release=lambda: self.budget.release(Use.CONTROL), idle_timeout=PIPE_IDLE)

    def _put(self, path: str, body: object = None,
             params: Mapping[str, str | None] | None = None,
             endpoint: str | None = None) -> Deferred[Response]:
        """
        A PUT with an optional JSON body.
        """
        return self._request("PUT", path, params, body=body, endpoint=endpoint)
