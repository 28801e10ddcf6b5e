"""
Composition: the Consul client, the topology view, the DNS server and the
HTTP API, each given the one reactor.
"""

from treq.client import HTTPClient
from twisted.application import internet, service, strports
from twisted.internet.ssl import Certificate
from twisted.web.client import (
    Agent,
    BrowserLikePolicyForHTTPS,
    HTTPConnectionPool,
    _HTTP11ClientFactory,
)
from twisted.web.server import Site

from glimpse.config import read_secret
from glimpse.consul import ConsulClient
from glimpse.dns.answers import ZoneIdentity
from glimpse.dns.fastpath import FastDatagramProtocol
from glimpse.dns.server import GlimpseResolver, GlimpseServerFactory
from glimpse.dns.udpport import FastUDPServer
from glimpse.http.root import make_root
from glimpse.metrics.gcpauses import GCPauses
from glimpse.metrics.lag import LagProbe
from glimpse.providers.applier import Applier, ReconcileService
from glimpse.providers.store import ProviderStore
from glimpse.view.topology import Topology


class QuietSite(Site):
    """
    A Site that writes no access log: Glimpse logs state changes, not
    requests.
    """

    def log(self, request):
        pass


class TopologyService(service.Service):
    """
    Starts and stops the view's watches with the application.
    """

    def __init__(self, topology):
        self.topology = topology

    def startService(self):
        super().startService()
        self.topology.start()

    def stopService(self):
        super().stopService()
        self.topology.stop()


class _QuietClientFactory(_HTTP11ClientFactory):
    # Twisted logs "Starting factory" / "Stopping factory" for every new
    # connection: with hundreds of blocking queries, a line a second.
    noisy = False


class _QuietPool(HTTPConnectionPool):
    _factory = _QuietClientFactory


def http_client(reactor, consul_ca=None):
    """
    A treq client for Consul: persistent connections (not logged one by
    one), and TLS verified against the system's trust store or ``consul_ca``.
    """
    pool = _QuietPool(reactor, persistent=True)
    # Blocking queries each hold a connection; let them all stay open.
    pool.maxPersistentPerHost = 64
    pool.retryAutomatically = False
    if consul_ca:
        with open(consul_ca, "rb") as f:
            policy = BrowserLikePolicyForHTTPS(trustRoot=Certificate.loadPEM(f.read()))
    else:
        policy = BrowserLikePolicyForHTTPS()
    return HTTPClient(Agent(reactor, contextFactory=policy, pool=pool))


def build_agent(reactor, options):
    """
    Build the application's services.

    :return: a ``MultiService``; its ``.topology``, ``.consul`` and
        ``.dns_factory`` are kept for tests and benchmarks.
    """
    top = service.MultiService()
    consul = ConsulClient(http_client(reactor, options["consul-ca"]), options["consul"],
                          reactor, token=read_secret(options["consul-token-file"]))
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
    site = QuietSite(make_root(topology, applier, options["dns-zone"], reactor,
                               provider_token=read_secret(options.get("provider-token-file")),
                               consul=consul, dns_stats=factory.stats,
                               dns_flush=dns_udp.flush_stats,
                               lookup_cap=options.get("lookup-cap", 1000), lag=lag,
                               gc_pauses=gc_pauses))
    for endpoint in options["http"]:
        strports.service(endpoint, site, reactor=reactor).setServiceParent(top)
    # Last, so that it starts after the others: what they made as they
    # started is frozen too.
    gc_pauses.setServiceParent(top)

    top.topology, top.consul, top.dns_factory = topology, consul, factory
    top.dns_udp = dns_udp
    return top
