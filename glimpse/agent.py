"""
The composition root: the one place that builds Glimpse's long-lived parts
(the Consul client, the view, the DNS server, the write side, the HTTP API
and its subscriptions, the metrics), gives each the one reactor, and makes
each a service or owned by one, so that stopping Glimpse stops them all.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Protocol

import attrs
from prometheus_client import CollectorRegistry
from twisted.application import internet, service, strports

from glimpse.config import read_secret
from glimpse.consul import ConsulClient, ConsulTLS, connect_consul
from glimpse.dns import (
    ROTATIONS,
    FastDatagramProtocol,
    FastUDPServer,
    GlimpseResolver,
    GlimpseServerFactory,
    StreamFactory,
    ZoneIdentity,
    fitted_max_conns,
)
from glimpse.http import Context, GlimpseCollector, Hub, make_registry, make_root
from glimpse.http.limits import HTTPLimits, fitted_limits, with_backlog
from glimpse.http.site import LimitedSite
from glimpse.metrics import GCPauses, LagProbe
from glimpse.providers import Applier, ProviderStore, ReconcileService
from glimpse.view import CheckHistory, Steering, Topology


class _Startable(Protocol):
    def start(self) -> None: ...

    def stop(self) -> None: ...


class TopologyService(service.Service):
    """
    Starts and stops the view's watches (or another part of the view that
    has ``start`` and ``stop``, the :class:`glimpse.view.Steering`) with the
    application.
    """

    def __init__(self, topology: _Startable) -> None:
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


@attrs.frozen
class Glimpse:
    """
    Every long-lived part of one Glimpse, built by :func:`build` and owned
    by its ``service``: starting the service starts them all, stopping it
    stops them all (watches cancelled, streams closed, timers gone).

    :ivar service: the ``MultiService`` twistd runs.
    :ivar consul: the Consul client.
    :ivar topology: the view (the read side).
    :ivar steering: the rules that steer answers (failover, panic, warning).
    :ivar dns: the DNS server factory (twisted.names' side, and its stats).
    :ivar dns_udp: the fast path on the UDP port.
    :ivar dns_tcp: the DNS-over-TCP listener's factory (its connections,
        their cap and timeouts).
    :ivar applier: the provider states' applier (the write side).
    :ivar checks: when each check last changed, as Glimpse saw it.
    :ivar hub: the HTTP API's subscriptions.
    :ivar registry: the Prometheus registry ``/metrics`` serves.
    :ivar site: the HTTP API's site, with its limits.
    """

    service: service.MultiService
    consul: ConsulClient
    topology: Topology
    steering: Steering
    dns: GlimpseServerFactory
    dns_udp: FastDatagramProtocol
    dns_tcp: StreamFactory
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
        fit in (:func:`glimpse.http.limits.open_files_limit`), or ``None``.
    :return: a :class:`Glimpse`.
    :raises glimpse.consul.TLSConfigError: for TLS files that cannot be used.
    """
    top = service.MultiService()
    tls = ConsulTLS(options["consul-ca"], options.get("consul-cert"), options.get("consul-key"))
    consul, connections = connect_consul(
        reactor, options["consul"], token=read_secret(options["consul-token-file"]),
        tls=tls, max_conns=options.get("consul-max-conns", 64))
    # Stopped last (services stop in reverse order): what the others
    # leave under way as they stop is cancelled, then the connections go.
    connections.setServiceParent(top)
    topology = Topology(consul, reactor, max_stale=options["max-stale"],
                        idle_timeout=options["idle-timeout"],
                        zones_interval=options["zones-interval"],
                        catalog_interval=options.get("catalog-interval", 1.0),
                        refresh={"min_period": options.get("consul-poll-period", 1.0),
                                 "max_rate": options.get("consul-poll-rate", 4000.0)})
    TopologyService(topology).setServiceParent(top)
    # Built before the DNS server and the hub: its listener must see a
    # change of the view first (a job's panic state) for the answers
    # recomputed after it to show it.
    steering = Steering(topology, consul, reactor, failover_min=options.get("failover-min", 1),
                        failover_order=options.get("failover-order"),
                        serve_warning=bool(options.get("serve-warning")),
                        panic_threshold=options.get("panic-threshold"),
                        panic_hold=options.get("panic-hold", 30.0),
                        interval=options["zones-interval"])
    TopologyService(steering).setServiceParent(top)

    identity = ZoneIdentity(
        dns_zone=options["dns-zone"],
        ns_ip=options["dns-advertise"] or options["dns-interface"],
        ttl=options["dns-ttl"], negative_ttl=options["negative-ttl"])
    resolver = GlimpseResolver(topology, identity, steering)
    factory = GlimpseServerFactory(resolver, rotations=options.get("dns-rotations", ROTATIONS))
    interface, port = options["dns-interface"], options["dns-port"]
    # The fast path answers plain queries from pre-encoded answers and hands
    # the rest to the factory (twisted.names); counters in factory.stats.
    # Its port hands it the read loop (Twisted's costs more per datagram
    # than a pre-encoded answer does).
    dns_udp = FastDatagramProtocol(factory, topology, reactor)
    FastUDPServer(port, dns_udp, interface, reactor).setServiceParent(top)
    # TCP answers from the same pre-encoded answers, within a cap on
    # connections and an idle timeout (RFC 7766).
    dns_tcp = StreamFactory(
        factory, reactor, dns_udp.answers,
        max_conns=fitted_max_conns(options.get("dns-tcp-max-conns", 1024), open_files),
        idle_timeout=options.get("dns-tcp-idle-timeout", 30.0))
    internet.TCPServer(port, dns_tcp, backlog=1024, interface=interface,
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
    api = Context(topology, hub, checks, options["dns-zone"], steering=steering,
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
    return Glimpse(service=top, consul=consul, topology=topology, steering=steering,
                   dns=factory, dns_udp=dns_udp, dns_tcp=dns_tcp,
                   applier=applier, checks=checks, hub=hub, registry=registry, site=site)
