"""A running Consul zone (datacenter) of real servers and client agents, and its faults.

Servers are ``-server -bootstrap-expect=N`` (not ``-dev``), tuned for speed; client agents keep
Consul's default settings.  :class:`Zone` kills the leader, kills servers down to no quorum,
stops and restarts clients or the whole zone, each waiting on a condition with a deadline.
Start zones with :mod:`glimpse.dev.cluster`.
"""

import shutil
import time
import uuid
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Self

import attrs

from glimpse.dev.agent import (
    LOOPBACK,
    ConsulAgent,
    ConsulStartError,
    NotYet,
    Ports,
    free_ports,
    wait_until,
)

__all__ = ["RETRY_INTERVAL", "SERVER_HCL", "ClusterAgent", "Zone"]

#: Settings of the servers only, for speed: clients keep Consul's defaults (that is the point:
#: Glimpse is tested against a default client, its ``http_max_conns_per_client = 200``).
SERVER_HCL = (
    "performance { raft_multiplier = 1 }",  # Production default 5: ~1 s elections, not ~5 s.
    "ui_config { enabled = false }",
    "connect { enabled = false }",
    "disable_update_check = true",
)
#: Seconds between join attempts of servers (Consul's default is 30): zones form at once.
RETRY_INTERVAL = "1s"


@attrs.define
class ClusterAgent(ConsulAgent):
    """One agent of a :class:`Zone`, a server or a client; restarts keep its node ID."""

    server: bool = False  #: Whether it is a server.
    node_id: str = attrs.field(factory=lambda: str(uuid.uuid4()), repr=False)  #: ``-node-id``.

    @classmethod
    def create(cls, zone_dir: Path, datacenter: str, node: str, server: bool,
               allocate_ports: Callable[[int], list[int]] = free_ports) -> "ClusterAgent":
        """A new agent, not started, in ``zone_dir/node``, on ports from ``allocate_ports``."""
        base = zone_dir / node
        agent = cls(datacenter=datacenter, node=node, ports=Ports(-1, -1, -1, -1, -1),
                    base_dir=base, data_dir=base / "data", log_path=base / "consul.log",
                    server=server)
        agent.new_ports(allocate_ports)
        agent.config_dir.mkdir(parents=True)
        return agent

    def new_ports(self, allocate_ports: Callable[[int], list[int]] = free_ports) -> None:
        """Give it fresh ports (takes effect at its next start)."""
        if self.server:
            self.ports = Ports(*allocate_ports(5))
        else:  # A client opens no Serf WAN nor server RPC port.
            http, dns, serf_lan = allocate_ports(3)
            self.ports = Ports(http, dns, serf_lan, serf_wan=-1, server=-1)

    @property
    def rpc_addr(self) -> str:
        """``ip:port`` of its server RPC port, as ``/v1/status/leader`` names the leader."""
        return f"{LOOPBACK}:{self.ports.server}"


@attrs.define
class Zone:
    """A running Consul datacenter: :attr:`servers` and :attr:`clients`.

    Build it with :func:`glimpse.dev.cluster.start_zone` or
    :func:`~glimpse.dev.cluster.start_zones`; as a context manager, it is torn down
    (:meth:`stop`) on exit.
    """

    datacenter: str  #: Its name (Glimpse zone).
    servers: list[ClusterAgent]  #: Its servers, ``<dc>-s1`` ...
    clients: list[ClusterAgent]  #: Its client agents, ``<dc>-c1`` ...
    base_dir: Path  #: Its temporary directory, one sub-directory per agent.
    binary: str = attrs.field(repr=False)  #: The consul binary.
    gossip_key: str = attrs.field(repr=False)  #: ``-encrypt``: no other run's agent joins.
    server_hcl: Sequence[str] = attrs.field(default=(), repr=False)  #: Servers' ``-hcl``.
    client_hcl: Sequence[str] = attrs.field(default=(), repr=False)  #: Clients' ``-hcl``.
    #: Serf WAN addresses of the other zones' servers, for ``-retry-join-wan``.
    join_wan: list[str] = attrs.field(factory=list, repr=False)
    #: Every datacenter its clients must list in ``/v1/catalog/datacenters``.
    datacenters: frozenset[str] = attrs.field(factory=frozenset, repr=False)
    #: Every WAN member (``<node>.<dc>``) its servers must see alive.
    wan_members: frozenset[str] = attrs.field(factory=frozenset, repr=False)
    #: Gives fresh ports to an agent that could not bind its own at the first start.
    allocate_ports: Callable[[int], list[int]] = attrs.field(default=free_ports, repr=False)

    @property
    def client(self) -> ClusterAgent:
        """Its first client agent: where Glimpse points."""
        return self.clients[0]

    @property
    def agents(self) -> list[ClusterAgent]:
        """Its servers, then its clients."""
        return [*self.servers, *self.clients]

    @property
    def quorum(self) -> int:
        """How many servers must run for it to have a leader."""
        return len(self.servers) // 2 + 1

    def leaders_named(self) -> dict[str, str]:
        """``/v1/status/leader`` of each running server that answers: node -> ``ip:port``
        (``""``: it knows no leader)."""
        named = {}
        for server in self.servers:
            if server.running:
                try:
                    named[server.node] = server.get_json("status/leader")
                except (OSError, ValueError):
                    continue
        return named

    def leader(self) -> ClusterAgent | None:
        """The leader, if each running server that answers names the same running server;
        else ``None``."""
        named = set(self.leaders_named().values())
        by_rpc = {s.rpc_addr: s for s in self.servers if s.running}
        return by_rpc.get(named.pop()) if len(named) == 1 else None

    def wait_for_leader(self, timeout: float = 30.0) -> ClusterAgent:
        """Wait until :meth:`leader` is a server, and return it.

        :raises ConsulStartError: On timeout.
        """
        def elected() -> ClusterAgent:
            leader = self.leader()
            if leader is None:
                raise NotYet(f"leaders named: {self.leaders_named()}")
            return leader
        return wait_until(elected, timeout, "elect a leader", self.servers, 0.1, must_run=False)

    def kill_leader(self, timeout: float = 30.0) -> tuple[ClusterAgent, ClusterAgent]:
        """SIGKILL the leader; wait until the other servers elect a new one (see
        :meth:`kill_servers` about clients meanwhile).

        :return: ``(killed, new_leader)``; :meth:`up` restarts the killed one.
        """
        old = self.wait_for_leader(timeout)
        old.kill()
        return old, self.wait_for_leader(timeout)

    def kill_servers(self, count: int, timeout: float = 30.0) -> list[ClusterAgent]:
        """SIGKILL ``count`` running servers, followers first; wait until the others have a
        leader or, short of a quorum, none names one.  Until Serf notices (up to ~15 s), a
        client may still send a request to a killed server and answer it with a 500.

        :return: The killed servers; :meth:`up` restarts them on their ports and data dirs.
        :raises ValueError: If fewer than ``count`` servers run.
        """
        leader = self.leader()
        running = [s for s in self.servers if s.running]
        if not 0 < count <= len(running):
            raise ValueError(f"cannot kill {count} of the {len(running)} running servers")
        victims = sorted(running, key=lambda s: s is leader)[:count]
        for server in victims:
            server.kill()
        if len(running) - count >= self.quorum:
            self.wait_for_leader(timeout)
        else:
            self.wait_leaderless(timeout)
        return victims

    def lose_quorum(self, timeout: float = 30.0) -> list[ClusterAgent]:
        """:meth:`kill_servers` as few as leave no quorum (2 of 3, 3 of 5; fewer if some are
        down already), and wait until no server names a leader."""
        count = sum(s.running for s in self.servers) - self.quorum + 1
        if count > 0:
            return self.kill_servers(count, timeout)
        self.wait_leaderless(timeout)
        return []

    def wait_leaderless(self, timeout: float = 30.0) -> None:
        """Wait until no running server names a leader.

        :raises ConsulStartError: On timeout.
        """
        def leaderless() -> bool:
            named = self.leaders_named()
            if any(named.values()):
                raise NotYet(f"leaders named: {named}")
            return True
        wait_until(leaderless, timeout, "lose its leader", self.servers, 0.1, must_run=False)

    def down(self, kill: bool = False) -> None:
        """Stop every agent (clients first), SIGTERM or SIGKILL; files stay for :meth:`up`."""
        for agent in reversed(self.agents):
            (agent.kill if kill else agent.terminate)()

    def up(self, timeout: float = 60.0) -> None:
        """(Re)start every agent that is not running, on its ports and data dir; wait until
        :meth:`wait_ready`.  In a federation whose other zones are down too, use
        :meth:`glimpse.dev.cluster.Federation.up`: a zone is ready only once it sees the others.

        :raises ConsulStartError: If one exits (e.g. another process took its port meanwhile)
            or the zone is not ready in time.
        """
        _up([self], timeout)

    def wait_ready(self, timeout: float = 60.0) -> None:
        """Wait until every agent runs, a leader is elected and every server is a voter, every
        member is alive in each agent's ``/v1/agent/members``, each client answers
        ``/v1/catalog/services`` and lists every zone, each server sees every WAN member alive.

        :raises ConsulStartError: If an agent exits, or on timeout.
        """
        wait_until(self._ready, timeout, "be ready", self.agents, 0.1)

    def _ready(self) -> bool:
        leader = self.leader()
        if leader is None:
            raise NotYet(f"no leader; servers name {self.leaders_named()}")
        raft = leader.get_json("operator/raft/configuration")["Servers"]
        voters = {s["Node"] for s in raft if s["Voter"]}
        if voters != {s.node for s in self.servers}:
            raise NotYet(f"raft voters {sorted(voters)}")
        names = {a.node for a in self.agents}
        for agent in self.agents:
            alive = {m["Name"] for m in agent.get_json("agent/members") if m["Status"] == 1}
            if not names <= alive:
                raise NotYet(f"{agent.node} sees only {sorted(alive & names)} alive")
        for client in self.clients:
            client.get_json("catalog/services")
            listed = set(client.get_json("catalog/datacenters"))
            if not self.datacenters <= listed:
                raise NotYet(f"{client.node} lists datacenters {sorted(listed)}")
        for server in self.servers:
            wan = {m["Name"] for m in server.get_json("agent/members?wan=1") if m["Status"] == 1}
            if not self.wan_members <= wan:
                raise NotYet(f"{server.node} sees WAN members {sorted(wan)} alive")
        return True

    def command(self, agent: ClusterAgent) -> list[str]:
        """The argv of one of its agents, joining the servers' current ports."""
        seeds = [f"-retry-join={LOOPBACK}:{s.ports.serf_lan}" for s in self.servers
                 if s is not agent]
        argv = [self.binary, "agent", f"-datacenter={self.datacenter}", f"-node={agent.node}",
                f"-node-id={agent.node_id}", f"-bind={LOOPBACK}", f"-client={LOOPBACK}",
                *agent.ports.flags(), f"-data-dir={agent.data_dir}",
                f"-config-dir={agent.config_dir}", f"-encrypt={self.gossip_key}", *seeds]
        if not agent.server:
            return [*argv, *(f"-hcl={snippet}" for snippet in self.client_hcl)]
        hcl = [*SERVER_HCL,
               # Autopilot would drop a dead server from raft, and then one kill more than
               # the tests planned would end the quorum.
               f"autopilot {{ min_quorum = {len(self.servers)} }}", *self.server_hcl]
        return [*argv, "-server", f"-bootstrap-expect={len(self.servers)}",
                # A server's gRPC-TLS port is 8503 by default: the second one would collide.
                "-grpc-port=-1", "-grpc-tls-port=-1",
                f"-retry-interval={RETRY_INTERVAL}", f"-retry-interval-wan={RETRY_INTERVAL}",
                *(f"-retry-join-wan={address}" for address in self.join_wan),
                *(f"-hcl={snippet}" for snippet in hcl)]

    def stop(self) -> None:
        """SIGKILL every agent and remove the zone's directory; idempotent."""
        for agent in self.agents:
            agent.kill()
        shutil.rmtree(self.base_dir, ignore_errors=True)

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()


def _launch(pairs: Sequence[tuple[Zone, ClusterAgent]], timeout: float, fresh_ports: bool,
            tries: int = 3, restarts: int = 20) -> None:
    """Spawn the agents and wait until each answers ``/v1/agent/self`` (its Serf is up then).

    An agent that could not bind a port (another process took it since :func:`free_ports`, or
    since the agent was killed) is started again: with ``fresh_ports`` on new ports, up to
    ``tries`` times; else on its own ports (a restart must keep them: they are in the raft
    configuration and the others' join lists), up to ``restarts`` times, a quarter of a second
    apart, since what took one is usually a short-lived socket (a DNS query's).
    """
    spawns = {id(agent): 1 for _, agent in pairs}
    for zone, agent in pairs:
        agent.command = zone.command(agent)
        agent.spawn()

    def listening() -> bool:
        for zone, agent in pairs:
            if agent.running:
                # Short: a port squatter may accept and never answer while the agent exits.
                agent.get_json("agent/self", timeout=0.5)
                continue
            taken = "address already in use" in agent.log_since_start()
            if not (taken and spawns[id(agent)] < (tries if fresh_ports else restarts)):
                why = "could not bind a port (taken by another process?)" if taken else "failed"
                raise ConsulStartError(f"consul {agent.node} exited ({agent.exit_status}): {why}",
                                       agent.log_tail())
            if fresh_ports:
                agent.new_ports(zone.allocate_ports)
                # It never ran: start afresh (a lone server bootstrapped raft on its old port).
                shutil.rmtree(agent.data_dir, ignore_errors=True)
                agent.command = zone.command(agent)
            else:
                time.sleep(0.25)
            agent.spawn()
            spawns[id(agent)] += 1
            raise NotYet(f"{agent.node} started again: a port was taken")
        return True
    wait_until(listening, timeout, "answer HTTP", [a for _, a in pairs], must_run=False)


def _up(zones: Sequence[Zone], timeout: float, fresh_ports: bool = False) -> None:
    # Servers first: a client that finds no server to join retries only after 30 s.
    _launch([(z, s) for z in zones for s in z.servers if not s.running], timeout, fresh_ports)
    _launch([(z, c) for z in zones for c in z.clients if not c.running], timeout, fresh_ports)
    for zone in zones:
        zone.wait_ready(timeout)
