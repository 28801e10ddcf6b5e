"""Production-shaped Consul for tests and ``make run CLUSTER=1`` (issue #13).

A zone (Consul datacenter) is N real servers (``-server -bootstrap-expect=N``, not ``-dev``)
and M client agents with Consul's default settings; zones may be WAN-joined.  Every agent has
its own free loopback ports, data dir, config dir, log and process group.  A
:class:`~glimpse.dev.zone.Zone` holds the faults tests need (leader loss, quorum loss, a client
or the whole zone down), each waiting on a condition with a deadline.  Usage::

    with start_zone(find_consul(), "ams") as zone:      # 3 servers, 1 client; ready
        glimpse = start_glimpse(zone.client.url)        # Glimpse talks to the client agent
        zone.leader()                                   # the server leading, or None
        killed, new = zone.kill_leader()                # SIGKILL it; another one leads
        down = zone.lose_quorum()                       # 2 of 3 killed; no leader
        zone.client.kill()                              # or .terminate(): it leaves
        zone.down()                                     # every agent, files kept
        zone.up()                                       # all back on their ports; ready

    with start_zones(find_consul(), ("ams", "fra")) as (ams, fra):  # WAN-joined
        ...

Tests get them from the ``consul_cluster`` and ``consul_cluster_pair`` fixtures.
"""

import base64
import os
import tempfile
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Self

import attrs

from glimpse.dev.agent import LOOPBACK, free_ports
from glimpse.dev.zone import ClusterAgent, Zone, _up

__all__ = ["ClusterAgent", "Federation", "Zone", "start_zone", "start_zones"]


@attrs.define
class Federation:
    """WAN-joined zones (:class:`Zone`): iterates over them (``ams, fra = federation``),
    indexes by position or name.  As a context manager, torn down (:meth:`stop`) on exit."""

    zones: list[Zone]  #: The zones, in the order they were asked for.

    def __iter__(self) -> Iterator[Zone]:
        return iter(self.zones)

    def __len__(self) -> int:
        return len(self.zones)

    def __getitem__(self, key: int | str) -> Zone:
        if isinstance(key, int):
            return self.zones[key]
        for zone in self.zones:
            if zone.datacenter == key:
                return zone
        raise KeyError(key)

    def up(self, timeout: float = 60.0) -> None:
        """:meth:`Zone.up` for every zone at once (servers first, then clients)."""
        _up(self.zones, timeout)

    def stop(self) -> None:
        """:meth:`Zone.stop` every zone; idempotent."""
        for zone in self.zones:
            zone.stop()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()


def start_zones(
    binary: str, datacenters: Sequence[str] = ("ams", "fra"), servers: int = 3, clients: int = 1,
    workdir: str | None = None, server_hcl: Sequence[str] = (), client_hcl: Sequence[str] = (),
    timeout: float = 60.0, allocate_ports: Callable[[int], list[int]] = free_ports,
) -> Federation:
    """Start WAN-joined zones and wait until each is ready (:meth:`Zone.wait_ready`).

    :param binary: Path of the consul binary (:func:`glimpse.dev.consul.find_consul`).
    :param datacenters: The zones' names.
    :param servers: Servers per zone (1, 3 or 5).
    :param clients: Client agents per zone, at least 1.
    :param workdir: Where to create the zones' temporary directories.
    :param server_hcl: More ``-hcl`` snippets for the servers.
    :param client_hcl: ``-hcl`` snippets for the clients (by default they have none).
    :param timeout: Seconds to wait for each stage of the start.
    :param allocate_ports: Returns N free loopback ports (:func:`free_ports`).
    :raises ConsulStartError: If an agent exits or the zones are not ready in time; then
        everything started is stopped and removed.
    """
    if servers < 1 or clients < 1:
        raise ValueError(f"a zone needs servers and clients, not {servers} and {clients}")
    # Gossip encryption keeps out every agent but ours: a -retry-join address whose agent
    # moved to fresh ports may belong to another test run's Consul by now.
    key = base64.b64encode(os.urandom(32)).decode()
    # All ports from one call: separate calls could hand the same port to two agents.
    pool = iter(allocate_ports(len(datacenters) * (5 * servers + 3 * clients)))

    def draw(n: int) -> list[int]:
        return [next(pool) for _ in range(n)]
    zones: list[Zone] = []
    try:
        for name in datacenters:
            base = Path(tempfile.mkdtemp(prefix=f"glimpse-cluster-{name}-", dir=workdir))
            zone = Zone(datacenter=name, servers=[], clients=[], base_dir=base, binary=binary,
                        gossip_key=key, server_hcl=tuple(server_hcl),
                        client_hcl=tuple(client_hcl), allocate_ports=allocate_ports)
            zones.append(zone)
            zone.servers += [ClusterAgent.create(base, name, f"{name}-s{i}", True, draw)
                             for i in range(1, servers + 1)]
            zone.clients += [ClusterAgent.create(base, name, f"{name}-c{i}", False, draw)
                             for i in range(1, clients + 1)]
        for zone in zones:
            zone.datacenters = frozenset(datacenters)
            zone.wan_members = frozenset(f"{s.node}.{z.datacenter}" for z in zones
                                         for s in z.servers)
            zone.join_wan = [f"{LOOPBACK}:{s.ports.serf_wan}" for z in zones if z is not zone
                             for s in z.servers]
        _up(zones, timeout, fresh_ports=True)
    except BaseException:
        for zone in zones:
            zone.stop()
        raise
    return Federation(zones)


def start_zone(binary: str, datacenter: str = "ams", servers: int = 3, clients: int = 1,
               workdir: str | None = None, server_hcl: Sequence[str] = (),
               client_hcl: Sequence[str] = (), timeout: float = 60.0,
               allocate_ports: Callable[[int], list[int]] = free_ports) -> Zone:
    """Start one zone and wait until it is ready; parameters as :func:`start_zones`."""
    return start_zones(binary, [datacenter], servers, clients, workdir, server_hcl, client_hcl,
                       timeout, allocate_ports)[0]
