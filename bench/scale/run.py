"""
Fleet scale benchmark (#13): one Glimpse on a production-shaped zone, 3
servers and a client agent with Consul's defaults, with thousands of jobs
in real Consul, and the load it puts on the servers next to plain
blocking-query clients and Consul's own DNS doing the same lookups, in the
same run.

    make bench-scale                      # 10,000 jobs, 100,000 instances
    python -m bench.scale.run --jobs 2000 --instances 20000 --no-outage

Figures: the time a fresh Glimpse takes to answer ``/v1/topology/ams``
(every job read); Glimpse's time from start to serving every job (each
looked up once over DNS, 200 at a time), its RSS, its connections to the agent (the
most seen), Consul requests a second idle, with 10 changes a second and
during an outage of every server; change -> DNS p50/p99; and, from the
servers' own metrics (``/v1/agent/metrics``), RPCs a second, blocking
queries parked and streaming subscriptions open, for Glimpse and for each
baseline:

- ``blocking``: one blocking query per job, each on its own connection,
  through a client agent with Consul's defaults but
  ``http_max_conns_per_client`` raised so it can (streaming on: the agent
  serves them from its views);
- ``blocking, no streaming``: the same through an agent with
  ``use_streaming_backend = false`` (what servers carry without streaming);
- ``consul dns``: every job looked up once through the client agent's DNS
  (defaults: every lookup is an RPC).
"""

import argparse
import os
import sys
import tempfile
import time

from bench.scale.phases import (
    blocking_phase,
    consul_dns_phase,
    glimpse_phase,
    topology_phase,
)
from bench.scale.probe import TELEMETRY, dump
from bench.scale.report import report
from glimpse.dev.catalog import synthetic_topology, write_catalog
from glimpse.dev.cluster import start_zone
from glimpse.dev.consul import find_consul

#: The baseline agents' settings: enough connections for a query per job (Consul wants
#: that many and 20 more open files, and the VM allows 20,000).
BLOCKING_HCL = "limits { http_max_conns_per_client = 15000 }\n"
NO_STREAMING_HCL = BLOCKING_HCL + "use_streaming_backend = false\n"


def configure_baseline_agents(zone):
    """
    Give the zone's second and third client agents the baselines'
    settings, and start them again with those.
    """
    for agent, hcl in zip(zone.clients[1:], (BLOCKING_HCL, NO_STREAMING_HCL), strict=True):
        (agent.config_dir / "bench.hcl").write_text(hcl)
        agent.terminate()
    zone.up()


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--jobs", type=int, default=10_000)
    parser.add_argument("--instances", type=int, default=100_000)
    parser.add_argument("--idle", type=float, default=20.0, help="seconds of each idle window")
    parser.add_argument("--changes", type=float, default=20.0,
                        help="seconds of each window with changes")
    parser.add_argument("--rate", type=float, default=10.0, help="changes a second")
    parser.add_argument("--outage", type=float, default=20.0,
                        help="seconds every server is down (0: no outage)")
    parser.add_argument("--no-outage", dest="outage", action="store_const", const=0.0)
    parser.add_argument("--no-baselines", action="store_true")
    parser.add_argument("--json", help="also write the figures to this file")
    parser.add_argument("--workdir", default=None)
    args = parser.parse_args()
    workdir = args.workdir or tempfile.mkdtemp(prefix="glimpse-bench-scale-")
    consul = find_consul()
    print(f"bench-scale: {args.jobs} jobs, {args.instances} instances, in {workdir}", flush=True)
    started = time.monotonic()
    clients = 1 if args.no_baselines else 3
    with start_zone(consul, "ams", servers=3, clients=clients, server_hcl=[TELEMETRY],
                    workdir=workdir, timeout=120) as zone:
        if not args.no_baselines:
            configure_baseline_agents(zone)
        topology = synthetic_topology(args.jobs, args.instances)
        t = time.monotonic()
        write_catalog(zone.servers[0].url, topology, threads=8, timeout=120)
        registered = time.monotonic() - t
        print(f"registered {args.instances} instances of {args.jobs} jobs in real Consul "
              f"(/v1/txn) in {registered:.1f} s", flush=True)
        results = {"jobs": args.jobs, "instances": args.instances, "registered_s": registered,
                   "runs": {}}
        results["topology"] = topology_phase(zone, topology, workdir)
        results["runs"]["glimpse"] = glimpse_phase(zone, topology, args, workdir)
        if not args.no_baselines:
            names = os.path.join(workdir, "names.txt")
            with open(names, "w") as f:
                f.write("".join(f"shop--prod--{job}\n" for job in topology.jobs))
            results["runs"]["blocking"] = blocking_phase(zone, zone.clients[1], topology,
                                                         names, args)
            results["runs"]["blocking, no streaming"] = blocking_phase(
                zone, zone.clients[2], topology, names, args)
            results["runs"]["consul dns"] = consul_dns_phase(zone, topology)
        results["total_s"] = time.monotonic() - started
        report(results)
        if args.json:
            dump(args.json, results)
    return 0


if __name__ == "__main__":
    sys.exit(main())
