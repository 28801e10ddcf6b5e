"""
The composition root: the one place that builds Glimpse's long-lived parts
(the Consul client, the view, the DNS server, the write side, the HTTP API
and its subscriptions, the metrics), gives each the one reactor, and makes
each a service or owned by one, so that stopping Glimpse stops them all.
"""

from __future__ import annotations

import resource
from collections.abc import Mapping
from typing import Any

import attrs
from prometheus_client import CollectorRegistry
from treq.client import HTTPClient
from twisted.application import internet, service, strports
from twisted.internet.defer import Deferred
from twisted.logger import Logger
from twisted.web.client import (
    Agent,
    HTTPConnectionPool,
    _HTTP11ClientFactory,
)

from glimpse.config import read_secret
from glimpse.consul import ConsulClient, ConsulTLS
from glimpse.dns.answers import ZoneIdentity
from glimpse.dns.fastpath import FastDatagramProtocol
from glimpse.dns.server import GlimpseResolver, GlimpseServerFactory
from glimpse.dns.udpport import FastUDPServer
from glimpse.http.hub import Hub
from glimpse.http.limits import HTTPLimits
from glimpse.http.lookup import Context
from glimpse.http.root import make_root
from glimpse.http.site import LimitedSite
from glimpse.metrics.gcpauses import GCPauses
from glimpse.metrics.lag import LagProbe
from glimpse.metrics.registry import GlimpseCollector, make_registry
from glimpse.providers.applier import Applier, ReconcileService
from glimpse.providers.store import ProviderStore
from glimpse.view.history import CheckHistory
from glimpse.view.topology import Topology

log = Logger()


class TopologyService(service.Service):
    """
    Starts and stops the view's watches with the application.
    """

    def __init__(self, topology: Topology) -> None:
        self._topology = topology

    def startService(self) -> None:
        """
        Start the watches.
        """
        super().startService()
        self._topology.start()

    def stopService(self) -> None:
        """
        Stop every watch.
        """
        super().stopService()
        self._topology.stop()


class _QuietClientFactory(_HTTP11ClientFactory):
    # Twisted logs "Starting factory" / "Stopping factory" for every new
    # connection: with hundreds of blocking queries, a line a second.
    noisy = False


class _QuietPool(HTTPConnectionPool):
    _factory = _QuietClientFactory


class ConsulConnections(service.Service):
    """
    The connections to the Consul agent: on stop, every request under way
    is cancelled and every kept-alive connection closed.

    :param consul: the :class:`glimpse.consul.ConsulClient`.
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


def consul_pool(reactor: Any) -> HTTPConnectionPool:
    """
    The persistent connections to the Consul agent, not logged one by one.
    """
    pool = _QuietPool(reactor, persistent=True)
    # Blocking queries each hold a connection; let them all stay open.
    pool.maxPersistentPerHost = 64
    pool.retryAutomatically = False
    return pool


def http_client(reactor: Any, pool: HTTPConnectionPool, tls: ConsulTLS) -> HTTPClient:
    """
    A treq client for Consul over ``pool``: TLS (for an ``https://`` agent)
    verified against the system's trust store or ``tls.ca``, with the client
    certificate of ``tls`` if it has one.

    :raises glimpse.consul.TLSConfigError: for TLS files that cannot be used.
    """
    return HTTPClient(Agent(reactor, contextFactory=tls.policy(), pool=pool))


#: The listen backlog of an HTTP endpoint that does not give one: the
#: connections the kernel completes before Glimpse accepts them.  With
#: Twisted's default of 50 a burst of clients (a thousand subscribers
#: reconnecting) overflows it and the kernel drops their connections
#: silently: they wait a second or more to retry, instead of being served
#: or refused with a 429/503.
HTTP_BACKLOG = 1024


def with_backlog(endpoint: str, backlog: int = HTTP_BACKLOG) -> str:
    """
    ``endpoint`` (a server endpoint string) with ``backlog`` when it is a
    ``tcp:``, ``tcp6:``, ``ssl:`` or ``unix:`` endpoint that sets none.
    """
    kind = endpoint.split(":", 1)[0]
    if kind not in ("tcp", "tcp6", "ssl", "unix") or "backlog=" in endpoint:
        return endpoint
    return f"{endpoint}:backlog={backlog}"


def open_files_limit() -> int | None:
    """
    The process's soft limit of open files, or ``None`` when unlimited.
    """
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    return None if soft == resource.RLIM_INFINITY else soft


def fitted_limits(limits: HTTPLimits, open_files: int | None) -> HTTPLimits:
    """
    ``limits`` fitted to the open-file limit (:meth:`HTTPLimits.fitted`),
    saying so in the log when that lowers them.
    """
    fitted = limits.fitted(open_files)
    if fitted != limits:
        log.warn("HTTP: --http-max-conns={asked} does not fit the open-file limit ({files}): "
                 "at most {conns} HTTP connections; raise the limit (systemd: LimitNOFILE=) "
                 "to allow more", asked=limits.max_conns, files=open_files,
                 conns=fitted.max_conns)
    return fitted


@attrs.frozen
class Glimpse:
    """
    Every long-lived part of one Glimpse, built by :func:`build` and owned
    by its ``service``: starting the service starts them all, stopping it
    stops them all (watches cancelled, streams closed, timers gone).

    :ivar service: the ``MultiService`` twistd runs.
    :ivar consul: the Consul client.
    :ivar topology: the view (the read side).
    :ivar dns: the DNS server factory (twisted.names' side, and its stats).
    :ivar dns_udp: the fast path on the UDP port.
    :ivar applier: the provider states' applier (the write side).
    :ivar checks: when each check last changed, as Glimpse saw it.
    :ivar hub: the HTTP API's subscriptions.
    :ivar registry: the Prometheus registry ``/metrics`` serves.
    :ivar site: the HTTP API's site, with its limits.
    """

    service: service.MultiService
    consul: ConsulClient
    topology: Topology
    dns: GlimpseServerFactory
    dns_udp: FastDatagramProtocol
    applier: Applier
    checks: CheckHistory
    hub: Hub
    registry: CollectorRegistry
    site: LimitedSite


def build(reactor: Any, options: Mapping[str, Any],
          open_files: int | None = None) -> Glimpse:
    """
    Build every part of Glimpse on ``reactor``: the one place that does.

    :param reactor: the reactor everything runs on (a
        ``MemoryReactorClock`` in tests).
    :param options: a parsed :class:`glimpse.tap.Options` (or a dict with
        the same keys).
    :param open_files: the open-file limit the HTTP API's connections must
        fit in (:func:`open_files_limit`), or ``None`` for none.
    :return: a :class:`Glimpse`.
    """
    top = service.MultiService()
    pool = consul_pool(reactor)
    tls = ConsulTLS(options["consul-ca"], options.get("consul-cert"), options.get("consul-key"))
    consul = ConsulClient(http_client(reactor, pool, tls), options["consul"],
                          reactor, token=read_secret(options["consul-token-file"]), tls=tls)
    # Stopped last (services stop in reverse order): what the others
    # leave under way as they stop is cancelled, then the connections go.
    ConsulConnections(consul, pool).setServiceParent(top)
    topology = Topology(consul, reactor, max_stale=options["max-stale"],
                        idle_timeout=options["idle-timeout"],
                        zones_interval=options["zones-interval"])
    TopologyService(topology).setServiceParent(top)

    identity = ZoneIdentity(
        dns_zone=options["dns-zone"],
        ns_ip=options["dns-advertise"] or options["dns-interface"],
        ttl=options["dns-ttl"], negative_ttl=options["negative-ttl"])
    resolver = GlimpseResolver(topology, identity)
    factory = GlimpseServerFactory(resolver)
    interface, port = options["dns-interface"], options["dns-port"]
    # The fast path answers plain queries from pre-encoded answers and hands
    # the rest to the factory (twisted.names); counters in factory.stats.
    # Its port hands it the read loop (Twisted's costs more per datagram
    # than a pre-encoded answer does).
    dns_udp = FastDatagramProtocol(factory, topology, reactor)
    FastUDPServer(port, dns_udp, interface, reactor).setServiceParent(top)
    internet.TCPServer(port, factory, interface=interface,
                       reactor=reactor).setServiceParent(top)

    applier = Applier(consul, ProviderStore(options["state-dir"]), reactor)
    # At start and every few seconds: roll back an apply a crash cut short,
    # and restore the acknowledged states after a Consul agent restart.
    ReconcileService(applier, reactor).setServiceParent(top)
    lag = LagProbe(reactor)
    lag.setServiceParent(top)
    gc_pauses = GCPauses()

    # The view calls its listeners in order: the check history must have
    # recorded a change before the hub recomputes the answers that show it.
    checks = CheckHistory(topology, reactor)
    hub = Hub(topology, reactor)
    hub.setServiceParent(top)
    registry, latency = make_registry(GlimpseCollector(
        topology, reactor, consul=consul, dns_stats=factory.stats, hub=hub, applier=applier,
        dns_flush=dns_udp.flush_stats, lag=lag, gc_pauses=gc_pauses))
    limits = fitted_limits(HTTPLimits.from_options(options), open_files)
    api = Context(topology, hub, checks, options["dns-zone"],
                  cap=options.get("lookup-cap", 1000),
                  max_streams_per_client=limits.max_streams_per_client)
    # The site holds every connection to its limits (header and body
    # deadlines, body size, connections per client and in all).
    site = LimitedSite(make_root(
        api, applier, registry, latency, reactor,
        provider_token=read_secret(options.get("provider-token-file")),
        max_body=limits.max_body), limits, reactor)
    for endpoint in options["http"]:
        strports.service(with_backlog(endpoint), site, reactor=reactor).setServiceParent(top)
    # Last, so that it starts after the others: what they made as they
    # started is frozen too.
    gc_pauses.setServiceParent(top)
    return Glimpse(service=top, consul=consul, topology=topology, dns=factory, dns_udp=dns_udp,
                   applier=applier, checks=checks, hub=hub, registry=registry, site=site)

