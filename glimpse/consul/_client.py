"""
:class:`ConsulClient`: every path, parameter and header of Consul's HTTP
API that Glimpse uses, on the request mechanics of
:mod:`glimpse.consul._requests`.
"""

from collections.abc import Mapping
from typing import Any
from urllib.parse import quote

import attrs
from twisted.internet.defer import Deferred

from glimpse.consul._answers import AgentSelf, ConsulError, Response
from glimpse.consul._budget import Use
from glimpse.consul._paths import CHECK_STATUSES
from glimpse.consul._requests import Requests


class ConsulClient(Requests):
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
    :param pipes: the most pipelined connections per zone (default: 4, or a
        quarter of the budget's reserved connections if fewer).
    :param tls: the TLS files ``http`` uses for an ``https://`` agent, so
        that a TLS failure is reported as :class:`ConsulTLSError` naming
        the option to fix.
    :ivar requests: requests sent, by endpoint; read by metrics and benchmarks.
    :ivar errors: requests that failed (error status or no answer), by
        endpoint.
    """

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

    def coordinate_datacenters(self) -> Deferred[list[dict[str, Any]]]:
        """
        The network coordinates of every WAN-federated datacenter's servers
        (Serf's Vivaldi estimates), from which round-trip times between
        datacenters are computed.  Asked now and then, never per lookup.

        :return: a Deferred firing with Consul's list of
            ``{"Datacenter", "AreaID", "Coordinates": [{"Node", "Coord"}]}``
            (empty when it has none yet).
        """
        d = self._get("coordinate/datacenters", endpoint="coordinate/datacenters")
        return d.addCallback(lambda r: r.body if isinstance(r.body, list) else [])

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

    def servers(self, dc: str) -> Deferred[Response]:
        """
        The servers of a datacenter (Consul's own ``consul`` service), read
        ``stale``: any server answers, also without a leader, and says
        whether it knows one and how long since it heard from it
        (``known_leader``, ``last_contact``).  A few entries: a cheap way to
        learn a zone's leader while its blocking queries wait.

        :param dc: the datacenter.
        :return: a Deferred firing with a :class:`Response`.
        """
        return self._get("catalog/service/consul", {"dc": dc, "stale": ""},
                         endpoint="catalog/service")

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
