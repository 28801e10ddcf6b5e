"""
A small client for the local Consul agent's HTTP API, on treq: the one
place that knows Consul's paths, parameters, headers and answer shapes.
Callers ask for what they need (:meth:`ConsulClient.agent_self`,
:meth:`ConsulClient.node_services`, ...) and never build a path.

It is given its treq ``HTTPClient`` and a clock, so tests drive it with
``StubTreq`` and ``Clock``.  Every failure becomes a :class:`ConsulError`: callers
never see treq's or Twisted's transport exceptions.  :func:`reload_agent`
is the one blocking request, for the file path, which runs outside any
reactor.
"""

import json
import ssl
import urllib.error
import urllib.request
from urllib.parse import quote

import attrs
from twisted.internet.defer import CancelledError
from twisted.internet.defer import TimeoutError as DeferTimeout
from twisted.internet.error import TimeoutError as ConnectTimeout
from twisted.logger import Logger
from twisted.web.client import ResponseFailed


@attrs.define
class ConsulError(Exception):
    """
    Consul answered with an error, or could not be asked.

    :ivar status: the HTTP status, or ``None`` when no answer came.
    :ivar endpoint: the API path asked, without the query.
    :ivar message: what went wrong, for logs and error bodies.
    """

    endpoint: str
    message: str
    status: int = None

    def __str__(self):
        status = f" (HTTP {self.status})" if self.status else ""
        return f"Consul {self.endpoint}{status}: {self.message}"


class ConsulUnavailable(ConsulError):
    """
    No answer: the agent refused the connection, timed out, or went away.
    """


class ConsulNotFound(ConsulError):
    """
    Consul answered 404.
    """


class ConsulDenied(ConsulError):
    """
    Consul answered 403: the ACL token is missing or lacks a permission.
    """


@attrs.frozen
class Response:
    """
    A decoded Consul answer.

    :ivar body: the decoded JSON body (or ``None`` for an empty body).
    :ivar index: ``X-Consul-Index`` as an int, or ``None``.
    :ivar unchanged: a blocking query ended with the index it was sent
        (its wait ran out): the body is the same as before and was not
        read (``body`` is ``None``).
    :ivar content: the raw body (``None`` when ``unchanged``).
    """

    body: object
    index: int = None
    unchanged: bool = False
    content: bytes = attrs.field(default=None, repr=False, eq=False)


@attrs.frozen
class AgentSelf:
    """
    What the local agent says of itself (``/v1/agent/self``), as far as
    Glimpse needs it.

    :ivar datacenter: the agent's datacenter: the local zone.
    :ivar node: the agent's node name, under which the catalog lists the
        registrations made on it.
    """

    datacenter: str
    node: str


#: The header that carries the ACL token.
TOKEN_HEADER = "X-Consul-Token"

#: The status words of ``PUT /v1/agent/check/<status>/<check id>``.
CHECK_STATUSES = ("pass", "warn", "fail")


def _error_for(status, endpoint, message):
    cls = {403: ConsulDenied, 404: ConsulNotFound}.get(status, ConsulError)
    return cls(endpoint=endpoint, message=message, status=status)


class ConsulClient:
    """
    Ask the local Consul agent.

    :param http: a treq ``HTTPClient`` (or ``StubTreq``).
    :param base_url: e.g. ``http://127.0.0.1:8500``.
    :param clock: an ``IReactorTime`` for request timeouts.
    :param token: the ACL token sent as ``X-Consul-Token``, or ``None``.
    :param timeout: seconds a non-blocking request may take.
    """

    log = Logger()

    def __init__(self, http, base_url, clock, token=None, timeout=10.0):
        self._http = http
        self._base = base_url.rstrip("/")
        self._clock = clock
        self._token = token
        self._timeout = timeout
        #: Requests sent, by endpoint; read by metrics and benchmarks.
        self.requests = {}
        #: Requests that failed (error status or no answer), by endpoint.
        self.errors = {}
        #: The last agent/services answer per filter: ``(content, body)``.
        self._services = {}

    def _headers(self):
        headers = {"Accept": ["application/json"]}
        if self._token:
            headers[TOKEN_HEADER] = [self._token]
        return headers

    def request(self, method, path, params=None, body=None, timeout=None, endpoint=None,
                unchanged_index=None, reuse=None):
        """
        Send one request and decode its JSON answer.

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
        kwargs = {"headers": self._headers(), "allow_redirects": False}
        if params:
            kwargs["params"] = {k: v for k, v in params.items() if v is not None}
        if body is not None:
            kwargs["data"] = json.dumps(body).encode("utf-8")
            kwargs["headers"]["Content-Type"] = ["application/json"]
        d = self._http.request(method, url, **kwargs)
        d.addCallback(self._read, endpoint, unchanged_index, reuse)
        d.addTimeout(timeout or self._timeout, self._clock)
        d.addErrback(self._translate, endpoint)
        return d

    def _read(self, response, endpoint, unchanged_index=None, reuse=None):
        d = response.content()

        def decoded(content):
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
                    raise ConsulError(endpoint, "the answer was not JSON", response.code)
            return Response(body=body, index=int(index) if index else None, content=content)

        return d.addCallback(decoded)

    def _translate(self, failure, endpoint):
        self.errors[endpoint] = self.errors.get(endpoint, 0) + 1
        if failure.check(ConsulError):
            return failure
        if failure.check(CancelledError, DeferTimeout, ConnectTimeout) or (
            # addTimeout cancels the request; the agent then fails it with
            # ResponseNeverReceived (a ResponseFailed) wrapping the cancel.
            failure.check(ResponseFailed)
            and any(r.check(CancelledError) for r in failure.value.reasons)
        ):
            raise ConsulUnavailable(endpoint, "timed out")
        raise ConsulUnavailable(endpoint, failure.getErrorMessage() or repr(failure.value))

    def get(self, path, params=None, index=None, wait=None, endpoint=None):
        """
        A GET, blocking when ``index`` is given.

        :param index: the ``X-Consul-Index`` of the previous answer, for a
            blocking query (Consul's rule: never below 1).
        :param wait: seconds the blocking query may wait on Consul's side.
        """
        params = dict(params or {})
        timeout = None
        if index is not None:
            params["index"] = str(max(1, index))
            if wait is not None:
                params["wait"] = f"{int(wait)}s"
                # Consul adds up to wait/16 of jitter; leave room for it
                # before deciding the connection is dead.
                timeout = wait + wait / 16 + self._timeout
        return self.request("GET", path, params, timeout=timeout, endpoint=endpoint,
                            unchanged_index=max(1, index) if index is not None else None)

    def put(self, path, body=None, params=None, endpoint=None):
        """
        A PUT with an optional JSON body.
        """
        return self.request("PUT", path, params, body=body, endpoint=endpoint)

    # The endpoints Glimpse uses, so callers never build paths themselves.

    def agent_self(self):
        """
        What the local agent says of itself: its datacenter (the local zone)
        and its node name.

        :return: a Deferred firing with an :class:`AgentSelf`.
        """
        def read(response):
            try:
                config = response.body["Config"]
                return AgentSelf(datacenter=config["Datacenter"], node=config["NodeName"])
            except (KeyError, TypeError):
                raise ConsulError("agent/self", "the answer has no Config.Datacenter and "
                                  "Config.NodeName") from None

        return self.get("agent/self", endpoint="agent/self").addCallback(read)

    def datacenters(self):
        """
        Every WAN-federated datacenter, from the catalog.
        """
        d = self.get("catalog/datacenters", endpoint="catalog/datacenters")
        return d.addCallback(lambda r: sorted(r.body or []))

    def catalog_services(self, dc, index=None, wait=None):
        """
        ``{service name: [tags]}`` of a datacenter, optionally blocking.
        """
        return self.get(
            "catalog/services", {"dc": dc}, index, wait, endpoint="catalog/services"
        )

    def health_service(self, dc, name, index=None, wait=None):
        """
        Every instance of a service with all its checks, optionally blocking.
        """
        return self.get(
            f"health/service/{quote(name, safe='')}",
            {"dc": dc},
            index,
            wait,
            endpoint="health/service",
        )

    def agent_services(self, filter_expr=None):
        """
        The services registered on the local agent, ``{id: service}``.

        An answer byte for byte the same as the last one for the same
        filter (every reconcile round, usually) is not decoded again: the
        same decoded services come back, so callers must not change them.
        Decoding thousands of registrations would stall the reactor for
        milliseconds (a DNS latency spike) every round.
        """
        def keep(response):
            self._services[filter_expr] = (response.content, response.body or {})
            return response.body or {}

        return self.request(
            "GET", "agent/services", {"filter": filter_expr}, endpoint="agent/services",
            reuse=self._services.get(filter_expr)).addCallback(keep)

    def register(self, definition):
        """
        Register (or replace) one service with its checks on the local agent.
        """
        return self.put(
            "agent/service/register",
            definition,
            params={"replace-existing-checks": "true"},
            endpoint="agent/service/register",
        )

    def deregister(self, service_id):
        """
        Remove one service from the local agent.
        """
        return self.put(
            f"agent/service/deregister/{quote(service_id, safe='')}",
            endpoint="agent/service/deregister",
        )

    def node_services(self, node, filter_expr=None, index=None, wait=None):
        """
        The services the catalog lists on one node, optionally blocking.

        :param node: the node's name (:attr:`AgentSelf.node` for the local
            agent's).
        :param filter_expr: a Consul filter expression over the services.
        :return: a Deferred firing with a :class:`Response` whose ``body`` is
            the list of services (empty when there are none), unless it is
            ``unchanged``; failing with :class:`ConsulNotFound` when the
            catalog does not know the node (yet).
        """
        def services(response):
            if response.unchanged:
                return response
            return attrs.evolve(response, body=(response.body or {}).get("Services") or [])

        return self.get(
            f"catalog/node-services/{quote(node, safe='')}", {"filter": filter_expr},
            index, wait, endpoint="catalog/node-services",
        ).addCallback(services)

    def set_check(self, check_id, status, note=None):
        """
        Set the status of a TTL check on the local agent.

        :param check_id: the check's ID.
        :param status: ``pass``, ``warn`` or ``fail``.
        :param note: the check's output, or ``None`` for none.
        :raises ValueError: at once, for another status word.
        """
        if status not in CHECK_STATUSES:
            raise ValueError(f"a TTL check's status is one of {', '.join(CHECK_STATUSES)}, "
                             f"not {status!r}")
        return self.put(
            f"agent/check/{status}/{quote(check_id, safe='')}",
            params={"note": note or None},
            endpoint=f"agent/check/{status}",
        )


def reload_agent(base_url, token=None, ca=None, timeout=30.0):
    """
    ``PUT /v1/agent/reload``, blocking: the agent re-reads its configuration
    (its config directories among it).  For ``glimpse provide --config-dir``,
    which runs once per command, outside any reactor: so ``urllib``, not
    :class:`ConsulClient`.

    :param base_url: e.g. ``http://127.0.0.1:8500``; ``https://`` is
        verified against ``ca`` or the system's trust store.
    :param token: the ACL token (it needs ``agent:write``), or ``None``.
    :param ca: PEM file of the CA for an ``https://`` agent, or ``None``.
    :param timeout: seconds the reload may take.
    :raises ConsulUnavailable: when the agent could not be asked.
    :raises ConsulError: when it answered with an error: it refused the new
        configuration and kept its old one.
    """
    request = urllib.request.Request(
        base_url.rstrip("/") + "/v1/agent/reload", data=b"", method="PUT")
    if token:
        request.add_header(TOKEN_HEADER, token)
    context = ssl.create_default_context(cafile=ca) if base_url.startswith("https:") else None
    try:
        with urllib.request.urlopen(request, timeout=timeout, context=context):
            return
    except urllib.error.HTTPError as e:
        detail = e.read().decode("utf-8", "replace").strip()
        raise _error_for(e.code, "agent/reload", detail) from None
    except (urllib.error.URLError, OSError) as e:
        reason = getattr(e, "reason", e)
        raise ConsulUnavailable("agent/reload", str(reason)) from None
