"""
What ``/metrics`` serves: Glimpse's figures in Prometheus' text format.

Everything is read when Prometheus scrapes, from the plain counters the
parts of Glimpse keep (the DNS server's ``stats``, the Consul client's
``requests`` and ``errors``, the view, the subscription hub), by one
collector on a :class:`CollectorRegistry` made here: no global registry, so two
Glimpses in one process (tests) do not mix their figures.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from typing import TYPE_CHECKING

from prometheus_client import CollectorRegistry, Histogram
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from twisted.names import dns

if TYPE_CHECKING:
    from twisted.internet.interfaces import IReactorTime

    from glimpse.consul import ConsulClient
    from glimpse.dns.wire import DNSStats
    from glimpse.http.hub import Hub
    from glimpse.metrics.gcpauses import GCPauses
    from glimpse.metrics.lag import LagProbe
    from glimpse.providers.applier import Applier
    from glimpse.view.topology import Topology

#: Latency buckets, seconds: lookups are served from memory, so the
#: interesting part is well below a millisecond.
BUCKETS = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1,
           0.25, 0.5, 1.0, 2.5)


def _qtype(number: int) -> str:
    return dns.QUERY_TYPES.get(number, dns.EXT_QUERIES.get(number, str(number)))


_RCODES = {0: "NOERROR", 1: "FORMERR", 2: "SERVFAIL", 3: "NXDOMAIN", 4: "NOTIMP",
           5: "REFUSED", 16: "BADVERS"}


class GlimpseCollector:
    """
    Reads Glimpse's counters at scrape time.

    :param topology: the :class:`glimpse.view.topology.Topology`.
    :param clock: ``IReactorTime``, for the views' ages.
    :param consul: the :class:`glimpse.consul.ConsulClient`, or ``None``.
    :param dns_stats: the DNS server's :class:`glimpse.dns.wire.DNSStats`, or
        ``None``.
    :param hub: the :class:`glimpse.http.hub.Hub`, or ``None``.
    :param applier: the :class:`glimpse.providers.applier.Applier`, or ``None``.
    :param dns_flush: a callable bringing ``dns_stats`` up to date, or
        ``None``.
    :param lag: a :class:`glimpse.metrics.lag.LagProbe`, or ``None``.
    :param gc_pauses: a :class:`glimpse.metrics.gcpauses.GCPauses`, or ``None``.
    """

    def __init__(self, topology: Topology, clock: IReactorTime, consul: ConsulClient | None = None,
                 dns_stats: DNSStats | None = None, hub: Hub | None = None,
                 applier: Applier | None = None, dns_flush: Callable[[], object] | None = None,
                 lag: LagProbe | None = None, gc_pauses: GCPauses | None = None) -> None:
        self._lag = lag
        self._gc = gc_pauses
        self._dns_flush = dns_flush
        self._topology = topology
        self._clock = clock
        self._consul = consul
        self._dns = dns_stats
        self._hub = hub
        self._applier = applier

    def _budget(self) -> Iterator[Metric]:
        if self._consul is None:
            return
        budget = self._consul.budget
        conns = GaugeMetricFamily("glimpse_consul_connections",
                                  "Connections to the Consul agent under way, by use",
                                  labels=["use"])
        for use, count in sorted(budget.in_use.items(), key=lambda item: item[0].value):
            conns.add_metric([use.value], count)
        yield conns
        yield GaugeMetricFamily("glimpse_consul_connections_max",
                                "The most connections to the Consul agent at once "
                                "(--consul-max-conns)", value=budget.total)
        yield GaugeMetricFamily("glimpse_consul_connections_waiting",
                                "Requests waiting for a connection to the Consul agent",
                                value=budget.waiting)

    def collect(self) -> Iterator[Metric]:
        """
        The metric families, as prometheus-client's ``Collector`` protocol
        asks.
        """
        if self._dns_flush is not None:
            self._dns_flush()
        if self._dns is not None:
            responses = CounterMetricFamily(
                "glimpse_dns_responses", "DNS responses sent, by query type and rcode",
                labels=["qtype", "rcode"])
            for (qtype, rcode), count in sorted(self._dns.responses.items()):
                responses.add_metric([_qtype(qtype), _RCODES.get(rcode, str(rcode))], count)
            yield responses
            for name, help_text in (
                    ("fast_hits", "DNS queries answered by the fast path's pre-encoded answers"),
                    ("fast_misses", "DNS queries the fast path handed to twisted.names"),
                    ("dropped", "DNS packets that got no answer"),
                    ("truncated", "UDP responses sent truncated (TC=1)"),
                    ("panic_answers", "DNS answers given while their job was in panic: every "
                                      "instance served, the healthy ones first")):
                yield CounterMetricFamily(f"glimpse_dns_{name}", help_text,
                                          value=getattr(self._dns, name, 0))
            yield _latency_histogram(self._dns)
        if self._consul is not None:
            for attr, help_text in (("requests", "Requests sent to Consul, by endpoint"),
                                    ("errors", "Consul requests that failed, by endpoint")):
                family = CounterMetricFamily(f"glimpse_consul_{attr}", help_text,
                                             labels=["endpoint"])
                for endpoint, count in sorted(getattr(self._consul, attr, {}).items()):
                    family.add_metric([endpoint], count)
                yield family
        yield from self._budget()
        yield GaugeMetricFamily("glimpse_watches", "Consul blocking queries kept running",
                                value=self._topology.watch_count())
        jobs = GaugeMetricFamily("glimpse_jobs", "Jobs in use, by how they are kept fresh: "
                                 "a blocking watch each, or cached reads", labels=["mode"])
        jobs.add_metric(["blocking"], self._topology.jobs.blocking_count())
        jobs.add_metric(["polled"], self._topology.jobs.polled_count())
        yield jobs
        yield GaugeMetricFamily("glimpse_poll_period_seconds",
                                "Seconds between two cached reads of a polled job",
                                value=self._topology.jobs.poll_period())
        age = GaugeMetricFamily("glimpse_view_age_seconds",
                                "Seconds each zone's view has gone without Consul (0: current)",
                                labels=["zone"])
        serving = GaugeMetricFamily("glimpse_zone_serving",
                                    "1 when lookups in the zone are served", labels=["zone"])
        now = self._clock.seconds()
        leader = GaugeMetricFamily("glimpse_consul_known_leader",
                                   "1 when the Consul server that last answered the zone's "
                                   "catalog knew a leader", labels=["zone"])
        contact = GaugeMetricFamily("glimpse_consul_last_contact_seconds",
                                    "Seconds since that server heard from the leader: how old "
                                    "the zone's data may be", labels=["zone"])
        for name, zone in sorted(self._topology.zones.items()):
            age.add_metric([name], zone.fresh.age(now))
            serving.add_metric([name], int(self._topology.zone_problem(name) is None))
            if zone.known_leader is not None:
                leader.add_metric([name], int(zone.known_leader))
            if zone.last_contact is not None:
                contact.add_metric([name], zone.last_contact)
        yield age
        yield serving
        yield leader
        yield contact
        if self._hub is not None:
            yield GaugeMetricFamily("glimpse_subscribers",
                                    "Open event streams and long-polls",
                                    value=self._hub.subscribers())
            yield GaugeMetricFamily("glimpse_subjects",
                                    "Distinct answers followed by streams and long-polls",
                                    value=len(self._hub.subjects))
        if self._lag is not None:
            yield _histogram("glimpse_reactor_lag_seconds",
                             "How much later than due the reactor ran a timer due every 0.1 s "
                             "(an event-loop stall delays every answer as much)",
                             self._lag.lags.bounds, self._lag.lags.counts,
                             self._lag.lags.total)
            yield GaugeMetricFamily("glimpse_reactor_lag_max_seconds",
                                    "The longest reactor lag of the last 60 s",
                                    value=self._lag.longest())
        if self._gc is not None:
            pauses = HistogramMetricFamily(
                "glimpse_gc_pause_seconds",
                "How long each garbage collection stopped the process (every answer waits "
                "meanwhile), by generation (2: full)", labels=["generation"])
            for generation, stalls in enumerate(self._gc.pauses):
                pauses.add_metric([str(generation)], _buckets(stalls.bounds, stalls.counts),
                                  stalls.total)
            yield pauses
            yield GaugeMetricFamily("glimpse_gc_frozen_objects",
                                    "Objects made at startup, left out of garbage collections",
                                    value=self._gc.frozen)
        applies = getattr(self._applier, "applies", None)
        if applies is not None:
            family = CounterMetricFamily("glimpse_provider_applies",
                                         "Provider states applied, by outcome",
                                         labels=["outcome"])
            for outcome, count in sorted(applies.items()):
                family.add_metric([outcome], count)
            yield family


def make_registry(collector: GlimpseCollector) -> tuple[CollectorRegistry, Histogram]:
    """
    A registry holding ``collector`` and the HTTP latency histogram.

    :return: ``(registry, http_latency)``.
    """
    registry = CollectorRegistry()
    registry.register(collector)
    latency = Histogram("glimpse_http_request_duration_seconds",
                        "Time to answer HTTP requests (streams excluded), by route and code",
                        ["route", "method", "code"], buckets=BUCKETS, registry=registry)
    return registry, latency


def _latency_histogram(stats: DNSStats) -> HistogramMetricFamily:
    """
    The DNS server's latency buckets as a Prometheus histogram (seconds).
    """
    return _histogram(
        "glimpse_dns_response_duration_seconds",
        "Server-side time from a DNS query's arrival to its response, both paths",
        tuple(bound / 1e9 for bound in stats.latency.bounds), stats.latency.counts,
        stats.latency.total / 1e9)


def _histogram(name: str, help_text: str, bounds: Sequence[float], counts: Sequence[int],
               total: float) -> HistogramMetricFamily:
    return HistogramMetricFamily(name, help_text, buckets=_buckets(bounds, counts),
                                 sum_value=total)


def _buckets(bounds: Sequence[float], counts: Sequence[int]) -> list[tuple[str, float]]:
    # Plain per-bucket counts (the last one above every bound) as a
    # Prometheus histogram's cumulative buckets, in seconds.
    buckets: list[tuple[str, float]] = []
    running = 0
    for bound, count in zip((*bounds, float("inf")), counts, strict=True):
        running += count
        buckets.append(("+Inf" if bound == float("inf") else repr(bound), running))
    return buckets
