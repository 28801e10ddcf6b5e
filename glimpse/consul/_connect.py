"""
The connections to the Consul agent: a treq client over a pool of
persistent connections, the endpoints of the zones' pipelined readers, TLS
verified for an ``https://`` agent, and a service that closes them all when
Glimpse stops.
"""

from __future__ import annotations

from urllib.parse import urlsplit

from treq.client import HTTPClient
from twisted.application import service
from twisted.internet.defer import Deferred
from twisted.internet.endpoints import HostnameEndpoint, wrapClientTLS
from twisted.internet.interfaces import IReactorTime, IStreamClientEndpoint
from twisted.web.client import Agent, HTTPConnectionPool, _HTTP11ClientFactory

from glimpse.consul._budget import ConnectionBudget
from glimpse.consul._client import ConsulClient
from glimpse.consul._tls import ConsulTLS


class _QuietClientFactory(_HTTP11ClientFactory):
    # Twisted logs "Starting factory" / "Stopping factory" for every new
    # connection: with hundreds of blocking queries, a line a second.
    noisy = False


class _QuietPool(HTTPConnectionPool):
    _factory = _QuietClientFactory


class ConsulConnections(service.Service):
    """
    The connections to the Consul agent: on stop, every request under way
    is cancelled and every connection closed.

    :param consul: the :class:`ConsulClient`.
    :param pool: its connection pool.
    """

    def __init__(self, consul: ConsulClient, pool: HTTPConnectionPool) -> None:
        self._consul = consul
        self._pool = pool

    def stopService(self) -> Deferred[None]:
        """
        Cancel what is under way and close the connections.
        """
        super().stopService()
        self._consul.close()
        return self._pool.closeCachedConnections()


def connect_consul(reactor: IReactorTime, url: str, token: str | None = None,
                   tls: ConsulTLS | None = None, max_conns: int = 64,
                   reserved: int | None = None) -> tuple[ConsulClient, ConsulConnections]:
    """
    A client for the Consul agent at ``url``, holding at most ``max_conns``
    connections to it, and the service that closes them.

    :param reactor: the reactor (``IReactorTCP`` and ``IReactorTime``).
    :param url: the agent's HTTP API, ``http://`` or ``https://`` (verified
        against ``tls.ca`` or the system's trust store, with ``tls``'s client
        certificate if it has one).
    :param token: the ACL token sent with every request, or ``None``.
    :param tls: the TLS files for an ``https://`` agent.
    :param max_conns: the most connections at once (``--consul-max-conns``).
    :param reserved: the connections job watches never take (default: a
        quarter, between 2 and 16).
    :return: ``(client, service)``.
    :raises TLSConfigError: for TLS files that cannot be used.
    """
    if reserved is None:
        reserved = max(2, min(16, max_conns // 4))
    tls = tls or ConsulTLS()
    policy = tls.policy()
    parts = urlsplit(url)
    host = parts.hostname or "127.0.0.1"
    port = parts.port or (443 if parts.scheme == "https" else 80)

    def pipe_endpoint() -> IStreamClientEndpoint:
        endpoint: IStreamClientEndpoint = HostnameEndpoint(reactor, host, port)
        if parts.scheme == "https":
            endpoint = wrapClientTLS(policy.creatorForNetloc(host.encode(), port), endpoint)
        return endpoint

    pool = _QuietPool(reactor, persistent=True)
    # Every connection a request holds may stay open for the next one; the
    # budget keeps the number under way, so the pool never holds more.
    pool.maxPersistentPerHost = max_conns
    pool.retryAutomatically = False
    client = ConsulClient(HTTPClient(Agent(reactor, contextFactory=policy, pool=pool)), url,
                          reactor, token=token, budget=ConnectionBudget(max_conns, reserved),
                          pipe_endpoint=pipe_endpoint, tls=tls)
    return client, ConsulConnections(client, pool)
