"""
:class:`ConsulClient`: every path, parameter and header of Consul's HTTP
API that Glimpse uses, on treq, with cached reads pipelined
(:mod:`glimpse.consul._pipeline`) and every connection within a budget
(:mod:`glimpse.consul._budget`).
"""

import json
from collections.abc import Callable, Mapping
from typing import Any
from urllib.parse import quote, urlencode, urlsplit

import attrs
from treq.client import HTTPClient
from twisted.internet.defer import CancelledError, Deferred
from twisted.internet.defer import TimeoutError as DeferTimeout
from twisted.internet.error import TimeoutError as ConnectTimeout
from twisted.internet.interfaces import IReactorTime, IStreamClientEndpoint
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web.client import ResponseFailed

from glimpse.consul._answers import (
    AgentSelf,
    ConsulError,
    ConsulTLSError,
    ConsulUnavailable,
    Response,
    decode,
)
from glimpse.consul._budget import ConnectionBudget, Use
from glimpse.consul._paths import CHECK_STATUSES, TOKEN_HEADER
from glimpse.consul._pipeline import PipelinedReader
from glimpse.consul._tls import ConsulTLS, tls_problem


class ConsulClient:
    """
    Ask the local Consul agent, over at most ``budget.total`` connections.

    :param http: a treq ``HTTPClient`` (or ``StubTreq``).
    :param base_url: e.g. ``http://127.0.0.1:8500``.
    :param clock: an ``IReactorTime`` for request timeouts.
    :param token: the ACL token sent as ``X-Consul-Token``, or ``None``.
    :param timeout: seconds a non-blocking request may take.
    :param budget: the :class:`ConnectionBudget` every request takes a slot
        of (default: 64, 16 of them reserved for everything but job watches).
    :param pipe_endpoint: makes the endpoint of the connection that carries
        a zone's pipelined cached reads (TLS wrapped in for ``https://``), or
        ``None`` to send them through ``http`` (tests with ``StubTreq``).
    :param tls: the TLS files ``http`` uses for an ``https://`` agent, so
        that a TLS failure is reported as :class:`ConsulTLSError` naming
        the option to fix.
    :ivar requests: requests sent, by endpoint; read by metrics and benchmarks.
    :ivar errors: requests that failed (error status or no answer), by
        endpoint.
    """

    log = Logger()

    def __init__(self, http: HTTPClient, base_url: str, clock: IReactorTime,
                 token: str | None = None, timeout: float = 10.0,
                 budget: ConnectionBudget | None = None,
                 pipe_endpoint: Callable[[], IStreamClientEndpoint] | None = None,
                 tls: ConsulTLS | None = None) -> None:
        self._http = http
        self._base = base_url.rstrip("/")
        self._tls = tls or ConsulTLS()
        self._clock = clock
        self._token = token
        self._timeout = timeout
        self.budget = budget or ConnectionBudget(64, 16)
        self._pipe_endpoint = pipe_endpoint
        self._readers: dict[str, PipelinedReader] = {}
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

        d = self.budget.acquire(use).addCallback(send)
        d.addTimeout(timeout or self._timeout, self._clock)
        d.addErrback(self._translate, endpoint)
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
        if failure.check(CancelledError, DeferTimeout, ConnectTimeout) or (
            # addTimeout cancels the request; the agent then fails it with
            # ResponseNeverReceived (a ResponseFailed) wrapping the cancel.
            isinstance(failure.value, ResponseFailed)
            and any(r.check(CancelledError) for r in failure.value.reasons)
        ):
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
            reader = self._readers[dc] = PipelinedReader(
                self._pipe_endpoint(), self._clock, urlsplit(self._base).netloc,
                {TOKEN_HEADER: self._token} if self._token else None, timeout=self._timeout,
                acquire=lambda: self.budget.acquire(Use.CONTROL),
                release=lambda: self.budget.release(Use.CONTROL))
        self.requests[endpoint] = self.requests.get(endpoint, 0) + 1
        target = f"/v1/{path}?{urlencode(params)}&cached"
        d = reader.get(target).addCallback(lambda answer: decode(
            answer.status, "", answer.headers.get, answer.body, endpoint, unchanged_index))
        return d.addErrback(self._translate, endpoint)

    def _put(self, path: str, body: object = None,
             params: Mapping[str, str | None] | None = None,
             endpoint: str | None = None) -> Deferred[Response]:
        """
        A PUT with an optional JSON body.
        """
        return self._request("PUT", path, params, body=body, endpoint=endpoint)

    # The endpoints Glimpse uses, so callers never build paths themselves.

    def agent_self(self) -> Deferred[AgentSelf]:
        """
        What the local agent says of itself: its datacenter (the local zone)
        and its node name.

        :return: a Deferred firing with an :class:`AgentSelf`.
        """
        def read(response: Response) -> AgentSelf:
            try:
                config = response.body["Config"]
                return AgentSelf(datacenter=config["Datacenter"], node=config["NodeName"])
            except (KeyError, TypeError):
                raise ConsulError("agent/self", "the answer has no Config.Datacenter and "
                                  "Config.NodeName") from None

        return self._get("agent/self", endpoint="agent/self").addCallback(read)

    def datacenters(self) -> Deferred[list[str]]:
        """
        Every WAN-federated datacenter, from the catalog.

        :return: a Deferred firing with their names, sorted.
        """
        d = self._get("catalog/datacenters", endpoint="catalog/datacenters")
        return d.addCallback(lambda r: sorted(r.body or []))

    def catalog_services(self, dc: str, index: int | None = None,
                         wait: float | None = None) -> Deferred[Response]:
        """
        The services of a datacenter, optionally blocking.  Read ``stale``:
        any server answers (``X-Consul-KnownLeader`` and
        ``X-Consul-LastContact`` say how fresh), so thousands of hosts do
        not all wait on the leader, and lookups go on while it is lost.

        :param dc: the datacenter.
        :param index: the index of the last answer, to block until a newer one.
        :param wait: seconds a blocking query may wait on Consul's side.
        :return: a Deferred firing with a :class:`Response` whose body is
            ``{service name: [tags]}``.
        """
        return self._get(
            "catalog/services", {"dc": dc, "stale": ""}, index, wait,
            endpoint="catalog/services")

    def health_service(self, dc: str, name: str, index: int | None = None,
                       wait: float | None = None) -> Deferred[Response]:
        """
        Every instance of a service with all its checks, optionally blocking:
        a job's watch, holding one of the job connections while it waits.
        A client agent answers a blocking read from its streaming view; the
        first, non-blocking read is ``stale`` (any server, no leader needed).

        :param dc: the datacenter.
        :param name: the service's name.
        :param index: the index of the last answer, to block until a newer one.
        :param wait: seconds a blocking query may wait on Consul's side.
        :return: a Deferred firing with a :class:`Response` whose body is the
            list of ``{"Node", "Service", "Checks"}`` entries.
        """
        return self._get(
            f"health/service/{quote(name, safe='')}", {"dc": dc, "stale": ""}, index, wait,
            endpoint="health/service", use=Use.JOBS)

    def health_cached(self, dc: str, name: str,
                      unchanged_index: int | None = None) -> Deferred[Response]:
        """
        Every instance of a service with all its checks, as the client
        agent's own view has them (``?cached``: its streaming view, kept
        current by the servers, so no server is asked), pipelined with the
        zone's other cached reads on one connection.

        :param dc: the datacenter.
        :param name: the service's name.
        :param unchanged_index: the index of the last answer: the same index
            comes back ``unchanged``, not decoded.
        :return: a Deferred firing with a :class:`Response`.
        """
        return self._cached(dc, f"health/service/{quote(name, safe='')}",
                            {"dc": dc, "stale": ""}, unchanged_index, "health/service?cached")

    def agent_services(self, filter_expr: str | None = None) -> Deferred[dict[str, Any]]:
        """
        The services registered on the local agent.

        An answer byte for byte the same as the last one for the same
        filter (every reconcile round, usually) is not decoded again: the
        same decoded services come back, so callers must not change them.
        Decoding thousands of registrations would stall the reactor for
        milliseconds (a DNS latency spike) every round.

        :param filter_expr: a Consul filter expression over the services.
        :return: a Deferred firing with ``{service id: service}``.
        """
        def keep(response: Response) -> dict[str, Any]:
            self._services[filter_expr] = (response.content, response.body or {})
            return response.body or {}

        return self._request(
            "GET", "agent/services", {"filter": filter_expr}, endpoint="agent/services",
            reuse=self._services.get(filter_expr)).addCallback(keep)

    def register(self, definition: Mapping[str, Any]) -> Deferred[Response]:
        """
        Register (or replace) one service with its checks on the local agent;
        checks it no longer has are removed.

        :param definition: the service definition, as the agent API has it.
        :return: a Deferred firing once the agent took it.
        """
        return self._put(
            "agent/service/register",
            definition,
            params={"replace-existing-checks": "true"},
            endpoint="agent/service/register",
        )

    def deregister(self, service_id: str) -> Deferred[Response]:
        """
        Remove one service from the local agent.

        :param service_id: the service's ID.
        :return: a Deferred firing once the agent removed it.
        """
        return self._put(
            f"agent/service/deregister/{quote(service_id, safe='')}",
            endpoint="agent/service/deregister",
        )

    def node_services(self, node: str, filter_expr: str | None = None, index: int | None = None,
                      wait: float | None = None) -> Deferred[Response]:
        """
        The services the catalog lists on one node, optionally blocking.
        Read ``stale``: an acknowledgement needs what the servers have
        committed, which any of them answers, also during an election.

        :param node: the node's name (:attr:`AgentSelf.node` for the local
            agent's).
        :param filter_expr: a Consul filter expression over the services.
        :param index: the index of the last answer, to block until a newer one.
        :param wait: seconds a blocking query may wait on Consul's side.
        :return: a Deferred firing with a :class:`Response` whose ``body`` is
            the list of services (empty when there are none), unless it is
            ``unchanged``; failing with :class:`ConsulNotFound` when the
            catalog does not know the node (yet).
        """
        def services(response: Response) -> Response:
            if response.unchanged:
                return response
            return attrs.evolve(response, body=(response.body or {}).get("Services") or [])

        return self._get(
            f"catalog/node-services/{quote(node, safe='')}", {"filter": filter_expr, "stale": ""},
            index, wait, endpoint="catalog/node-services",
        ).addCallback(services)

    def set_check(self, check_id: str, status: str,
                  note: str | None = None) -> Deferred[Response]:
        """
        Set the status of a TTL check on the local agent.

        :param check_id: the check's ID.
        :param status: ``pass``, ``warn`` or ``fail``.
        :param note: the check's output, or ``None`` for none.
        :return: a Deferred firing once the agent took it.
        :raises ValueError: at once, for another status word.
        """
        if status not in CHECK_STATUSES:
            raise ValueError(f"a TTL check's status is one of {', '.join(CHECK_STATUSES)}, "
                             f"not {status!r}")
        return self._put(
            f"agent/check/{status}/{quote(check_id, safe='')}",
            params={"note": note or None},
            endpoint=f"agent/check/{status}",
        )
