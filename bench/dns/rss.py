#!/usr/bin/env python3
"""
RSS of Glimpse with 100,000 instances in the view: built in this process
from synthetic ``/v1/health/service`` answers (1,000 jobs of 100
instances; no Consul: registering 100,000 services in a dev agent takes
too long for a benchmark run), with the resolver, the fast path, and a
pre-encoded SRV and A answer for every job.
"""

import gc
from pathlib import Path

from treq.testing import StubTreq
from twisted.internet.task import Clock
from twisted.names import dns

from glimpse.consul import ConsulClient
from glimpse.dns import (
    FastDatagramProtocol,
    GlimpseResolver,
    GlimpseServerFactory,
    ZoneIdentity,
    opt_record,
)
from glimpse.testing import FakeConsul
from glimpse.view import JobView, Topology, ZoneView, instances_from_health

JOBS, PER_JOB = 1000, 100


def rss_mb():
    """
    This process's resident set size, MB.
    """
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS")


def health(job, n):
    """
    A ``/v1/health/service`` answer like Consul's for one job.
    """
    return [{
        "Node": {"Node": f"node-{i % 50}", "Address": f"10.0.{i % 50}.1"},
        "Service": {"ID": f"p:shop--prod--{job}:{job}-{i}:http", "Service": f"shop--prod--{job}",
                    "Tags": ["http"], "Address": f"10.{j // 250}.{j % 250}.{i + 1}",
                    "Port": 8080,
                    "Meta": {"glimpse-provider": "p", "glimpse-instance": f"{job}-{i}",
                             "glimpse-port": "http", "glimpse-hash": "0123456789abcdef",
                             "version": "1.4.2"}},
        "Checks": [{"CheckID": "serfHealth", "Name": "Serf Health Status", "Status": "passing",
                    "Output": "Agent alive and reachable", "ServiceID": "", "Type": ""},
                   {"CheckID": f"p:shop--prod--{job}:{job}-{i}:http:check0", "Name": "tcp",
                    "Status": "passing", "Output": "TCP connect: Success",
                    "ServiceID": f"p:shop--prod--{job}:{job}-{i}:http", "Type": "tcp"}],
    } for i in range(n) for j in [int(job[3:])]]


class _Sink:
    def write(self, data, address):
        pass


def main():
    clock = Clock()
    # A client that is never asked: the view is filled by hand below.
    consul = ConsulClient(StubTreq(FakeConsul(clock=clock)), "http://127.0.0.1:8500", clock)
    topology = Topology(consul=consul, clock=clock)
    before = rss_mb()
    topology.zones_fresh.ok()
    zone = topology.zones["ams"] = ZoneView("ams")
    zone.fresh.ok()
    for j in range(JOBS):
        name = f"job{j:04d}"
        zone.tree[("shop", "prod", name)] = frozenset({"http"})
        job = zone.jobs[f"shop--prod--{name}"] = JobView("ams", f"shop--prod--{name}")
        job.instances = instances_from_health(health(name, PER_JOB))
        job.fresh.ok()
    gc.collect()
    view = rss_mb()
    identity = ZoneIdentity("glimpse.test", "127.0.0.1")
    factory = GlimpseServerFactory(GlimpseResolver(topology, identity))
    fast = FastDatagramProtocol(factory, topology, clock)
    fast.makeConnection(_Sink())
    for j in range(JOBS):
        for qtype in (dns.SRV, dns.A):
            m = dns.Message(id=1)
            m.queries = [dns.Query(f"http.job{j:04d}.prod.shop.ams.glimpse.test", qtype)]
            m.additional = [opt_record(1232)]
            for _ in range(2):
                fast.datagramReceived(m.toStr(), ("127.0.0.1", 1))
    gc.collect()
    total = rss_mb()
    count = sum(len(j.instances) for j in zone.jobs.values())
    print(f"RSS with {count} instances in the view (in-process view from synthetic health "
          f"answers, no Consul): {total:.0f} MB total; the view {view - before:.0f} MB, "
          f"{fast.cache_size()} pre-encoded answers {total - view:.0f} MB, "
          f"the rest (Python, Twisted) {before:.0f} MB (target < 500 MB)")


if __name__ == "__main__":
    main()
