"""
``make run``: a throw-away Consul (unless one is given), a small demo
topology put in through Glimpse's provider API, and Glimpse in the
foreground, with the dig and curl lines to try.  Ctrl-C stops everything it
started.

Consul is a dev agent per zone, or with ``--cluster`` (``make run
CLUSTER=1``) a production-shaped zone: 3 servers and a client agent with
Consul's default settings, which Glimpse talks to.
"""

import argparse
import copy
import json
import os
import signal
import sys
import threading
from collections.abc import Sequence
from typing import Any

from glimpse.dev.cluster import Federation, Zone, start_zones
from glimpse.dev.consul import (
    ZONE_NAMES,
    ConsulNotFound,
    ConsulStartError,
    DevConsul,
    find_consul,
    start_dev_consul,
    wait_federated,
)
from glimpse.dev.twistd import REPO, DevGlimpse, GlimpseStartError, start_glimpse

STATE = REPO / "etc" / "examples" / "demo-state.json"


def _zone_state(state: dict[str, Any], index: int) -> dict[str, Any]:
    # Each zone gets the same jobs on its own addresses, so answers show
    # which zone they came from.
    state = copy.deepcopy(state)
    for inst in state["instances"]:
        inst["address"] = inst["address"].replace("127.0.10.", f"127.0.{10 + index}.")
    return state


def _tips(glimpses: list[tuple[str, DevGlimpse]], dns_zone: str) -> str:
    first = glimpses[0]
    zone = first[0]
    dns_port, http = first[1].dns_port, first[1].url
    lines = [
        "",
        "Glimpse is running. Try:",
        f"  dig @127.0.0.1 -p {dns_port} http.web.prod.shop.{zone}.{dns_zone} SRV",
        f"  dig @127.0.0.1 -p {dns_port} http.web.prod.shop.{zone}.{dns_zone} A +short",
        f"  dig @127.0.0.1 -p {dns_port} nope.web.prod.shop.{zone}.{dns_zone} SRV   # NXDOMAIN",
        f"  curl -s {http}/v1/lookup/http.web.prod.shop.{zone}      # web-3 is unhealthy",
        f"  curl -s {http}/v1/status",
        f"  curl -s {http}/v1/zones                     # every zone, its view's age, reachable?",
        f"  curl -s -X PUT --data @etc/examples/demo-state.json {http}/v1/providers/demo",
    ]
    for zone, g in glimpses[1:]:
        lines.append(f"  dig @127.0.0.1 -p {dns_port} http.web.prod.shop.{zone}.{dns_zone} SRV"
                     f"   # zone {zone}, through the {glimpses[0][0]} Glimpse")
        lines.append(f"  curl -s {g.url}/v1/lookup/http.web.prod.shop.{zone}"
                     f"   # {zone}'s own Glimpse")
    lines += ["", "Ctrl-C stops Glimpse and everything make run started.", ""]
    return "\n".join(lines)


def _describe(zone: Zone) -> str:
    # The PIDs are there to kill: the leader (a new one is elected), two servers (no quorum).
    leader = zone.leader()
    servers = ", ".join(f"{s.node} pid {s.process.pid if s.process else '-'}"
                        + (" (leader)" if s is leader else "") for s in zone.servers)
    return (f"make run: zone {zone.datacenter}: Glimpse uses client agent {zone.client.node} "
            f"at {zone.client.url}; servers {servers}")


def main(argv: Sequence[str] | None = None) -> int:
    """
    Run the demo until Ctrl-C.

    :param argv: Command-line arguments, without the program name.
    :return: The exit status.
    """
    parser = argparse.ArgumentParser(prog="make run", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--zones", type=int, default=1, choices=range(1, len(ZONE_NAMES) + 1),
                        help="WAN-federated zones to start (ams, fra, ...)")
    parser.add_argument("--cluster", action="store_true",
                        help="start each zone as Consul servers and a client agent with "
                        "Consul's default settings (Glimpse talks to the client), not a dev "
                        "agent; make run CLUSTER=1")
    parser.add_argument("--servers", type=int, default=3, choices=(1, 3, 5),
                        help="Consul servers per zone with --cluster (default 3)")
    parser.add_argument("--consul",
                        help="use this Consul agent instead of starting one "
                        "(default: $CONSUL_HTTP_ADDR, unless --cluster)")
    parser.add_argument("--dns-zone", default="glimpse.test")
    parser.add_argument("--dns-port", type=int, default=8053)
    parser.add_argument("--http-port", type=int, default=8411)
    parser.add_argument("--workdir", default=str(REPO / ".run"))
    options = parser.parse_args(argv)
    if options.cluster and options.consul:
        parser.error("--cluster starts its own Consul: drop --consul")
    external = options.consul or (None if options.cluster
                                  else os.environ.get("CONSUL_HTTP_ADDR"))

    stopping = threading.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *_: stopping.set())
    agents: list[DevConsul] = []
    federation = Federation([])
    glimpses: list[tuple[str, DevGlimpse]] = []
    consuls: list[tuple[str | None, str]]
    try:
        if external:
            consuls = [(None, external if "://" in external else f"http://{external}")]
        elif options.cluster:
            federation = start_zones(find_consul(), ZONE_NAMES[: options.zones],
                                     servers=options.servers)
            for zone in federation:
                print(_describe(zone), flush=True)
            consuls = [(z.datacenter, z.client.url) for z in federation]
        else:
            binary = find_consul()
            for name in ZONE_NAMES[: options.zones]:
                agents.append(start_dev_consul(binary, name, agents[0] if agents else None))
                print(f"make run: started Consul {name} at {agents[-1].url}", flush=True)
            wait_federated(agents)
            consuls = [(a.datacenter, a.url) for a in agents]
        state = json.loads(STATE.read_text())
        for i, (datacenter, url) in enumerate(consuls):
            workdir = os.path.join(options.workdir, datacenter or "external")
            os.makedirs(workdir, exist_ok=True)
            g = start_glimpse(url, options.dns_zone, workdir=workdir,
                              ports=(options.dns_port + i, options.http_port + i),
                              stdout=sys.stdout)
            status, body = g.put("/v1/providers/demo", _zone_state(state, i))
            if status != 200:
                print(f"make run: seeding the demo failed: {status} {body}", file=sys.stderr)
                return 1
            glimpses.append((datacenter or g.get("/v1/status")[1]["local_zone"], g))
        print(_tips(glimpses, options.dns_zone), flush=True)
        while not stopping.wait(0.5):
            for zone_name, g in glimpses:
                if g.process is None or g.process.poll() is not None:
                    print(f"make run: Glimpse for {zone_name} exited", file=sys.stderr)
                    return 1
        return 0
    except (ConsulNotFound, ConsulStartError, GlimpseStartError, OSError) as error:
        print(f"make run: {error}", file=sys.stderr)
        return 1
    finally:
        for _, g in glimpses:
            g.stop()
        for agent in agents:
            agent.stop()
        federation.stop()


if __name__ == "__main__":
    sys.exit(main())
