"""
:class:`ConsulClient`, on treq: every path, parameter and header of
Consul's HTTP API that Glimpse uses (but the blocking reload, in
``_reload.py``).
"""

import json
from collections.abc import Mapping
from typing import Any
from urllib.parse import quote

import attrs
from treq.client import HTTPClient
from twisted.internet.defer import CancelledError, Deferred
from twisted.internet.defer import TimeoutError as DeferTimeout
from twisted.internet.error import TimeoutError as ConnectTimeout
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web.client import ResponseFailed

from glimpse.consul._answers import (
    AgentSelf,
    ConsulError,
    ConsulTLSError,
    ConsulUnavailable,
    Response,
    _error_for,
)
from glimpse.consul._tls import ConsulTLS, tls_problem

#: The header that carries the ACL token.
TOKEN_HEADER = "X-Consul-Token"

#: The status words of ``PUT /v1/agent/check/<status>/<check id>``.
CHECK_STATUSES = ("pass", "warn", "fail")


class ConsulClient:
    """
    Ask the local Consul agent.

    :param http: a treq ``HTTPClient`` (or ``StubTreq``).
    :param base_url: e.g. ``http://127.0.0.1:8500``.
    :param clock: an ``IReactorTime`` for request timeouts.
    :param token: the ACL token sent as ``X-Consul-Token``, or ``None``.
    :param timeout: seconds a non-blocking request may take.
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
                 tls: ConsulTLS | None = None) -> None:
        self._http = http
        self._base = base_url.rstrip("/")
        self._tls = tls or ConsulTLS()
        self._clock = clock
        self._token = token
        self._timeout = timeout
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
    ) -> Deferred[Response]:
        """
        Send one request and decode its JSON answer.

        :param method: ``GET`` or ``PUT``.
        :param path: the API path after ``/v1/``, already quoted.
        :param params: query parameters (a dict; ``None`` values are left out).
        :param body: an object sent as JSON.
        :param timeout: seconds for the whole exchange, body included.
        :param endpoint: the name this request is counted and reported under.
        :param unchanged_index: an answer with this ``X-Consul-Index`` is
            not decoded and comes back ``unchanged``.
        :param reuse: ``(content, body)`` of an earlier answer: an answer
            with the same raw content is not decoded again, and comes back
            with that ``body``.
        :return: a Deferred firing with a :class:`Response` or failing with a
            :class:`ConsulError`.
        """
        endpoint = endpoint or path.split("?")[0]
        self.requests[endpoint] = self.requests.get(endpoint, 0) + 1
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
        d: Deferred[Any] = self._http.request(method, url, **kwargs)
        d.addCallback(self._read, endpoint, unchanged_index, reuse)
        d.addTimeout(timeout or self._timeout, self._clock)
        d.addErrback(self._translate, endpoint)
        self._pending.add(d)

        def done(result: object) -> object:
            self._pending.discard(d)
            return result

        return d.addBoth(done)

    def close(self) -> None:
        """
        Cancel every request under way (each fails with
        :class:`ConsulUnavailable`): Glimpse is stopping.
        """
        for d in list(self._pending):
            d.cancel()

    def _read(self, response: Any, endpoint: str, unchanged_index: int | None = None,
              reuse: tuple[bytes | None, Any] | None = None) -> Deferred[Response]:
        # response: treq's, whose content() reads the body.
        d: Deferred[bytes] = response.content()

        def decoded(content: bytes) -> Response:
            if response.code >= 400:
                text = content.decode("utf-8", "replace").strip() or response.phrase.decode()
                raise _error_for(response.code, endpoint, text)
            if response.code >= 300:
                where = response.headers.getRawHeaders(b"location", [b"nowhere"])[0]
                raise ConsulError(
                    endpoint, f"answered with a redirect to {where.decode('ascii', 'replace')}, "
                    "which Glimpse does not follow (the ACL token would go along): point "
                    "--consul at the Consul agent itself", response.code)
            index = response.headers.getRawHeaders(b"x-consul-index", [None])[0]
            if unchanged_index is not None and index and int(index) == unchanged_index:
                # Decoding a large answer costs the reactor milliseconds;
                # the same index means the same answer.
                return Response(body=None, index=unchanged_index, unchanged=True)
            if reuse is not None and content == reuse[0]:
                body = reuse[1]
            else:
                try:
                    body = json.loads(content) if content.strip() else None
                except ValueError:
                    raise ConsulError(
                        endpoint, "the answer was not JSON", response.code) from None
            return Response(body=body, index=int(index) if index else None, content=content)

        return d.addCallback(decoded)

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
             endpoint: str | None = None) -> Deferred[Response]:
        """
        A GET, blocking when ``index`` is given.

        :param index: the ``X-Consul-Index`` of the previous answer, for a
            blocking query (Consul's rule: never below 1).
        :param wait: seconds the blocking query may wait on Consul's side.
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
                             unchanged_index=max(1, index) if index is not None else None)

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
        The services of a datacenter, optionally blocking.

        :param dc: the datacenter.
        :param index: the index of the last answer, to block until a newer one.
        :param wait: seconds a blocking query may wait on Consul's side.
        :return: a Deferred firing with a :class:`Response` whose body is
            ``{service name: [tags]}``.
        """
        return self._get(
            "catalog/services", {"dc": dc}, index, wait, endpoint="catalog/services"
        )

    def health_service(self, dc: str, name: str, index: int | None = None,
                       wait: float | None = None) -> Deferred[Response]:
        """
        Every instance of a service with all its checks, optionally blocking.

        :param dc: the datacenter.
        :param name: the service's name.
        :param index: the index of the last answer, to block until a newer one.
        :param wait: seconds a blocking query may wait on Consul's side.
        :return: a Deferred firing with a :class:`Response` whose body is the
            list of ``{"Node", "Service", "Checks"}`` entries.
        """
        return self._get(
            f"health/service/{quote(name, safe='')}",
            {"dc": dc},
            index,
            wait,
            endpoint="health/service",
        )

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
            f"catalog/node-services/{quote(node, safe='')}", {"filter": filter_expr},
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
