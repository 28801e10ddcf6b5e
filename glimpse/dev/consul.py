"""Throw-away ``consul agent -dev`` agents for tests, ``make run`` and benchmarks.

Loopback, free ports, own temporary directory and process group (consul.md, "Throw-away agent").
"""

import argparse
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
from collections.abc import Sequence
from pathlib import Path

import attrs

from glimpse.dev.agent import (
    LOOPBACK,
    ConsulAgent,
    ConsulStartError,
    Ports,
    free_ports,
    wait_until,
)

# What the agent module holds is re-exported: tests and benchmarks import it from here.
__all__ = ["LOOPBACK", "ZONE_NAMES", "ConsulAgent", "ConsulNotFound", "ConsulStartError",
           "DevConsul", "Ports", "find_consul", "free_ports", "main", "start_dev_consul",
           "wait_federated"]

ZONE_NAMES = ("ams", "fra", "lon", "nyc")


@attrs.define(auto_exc=True)
class ConsulNotFound(Exception):
    """No usable consul binary could be found or built."""

    reason: str  #: What went wrong.

    def __str__(self) -> str:
        return f"{self.reason}; run `make consul`, or set GLIMPSE_CONSUL to a consul binary"


def find_consul() -> str:
    """Return ``$GLIMPSE_CONSUL``, else what the checkout's ``tools/build-consul.sh``
    prints (it builds once), else ``consul`` on ``PATH`` outside a checkout.

    :raises ConsulNotFound: If none of these yields a binary.
    """
    override = os.environ.get("GLIMPSE_CONSUL")
    if override:
        if not os.access(override, os.X_OK):
            raise ConsulNotFound(f"GLIMPSE_CONSUL={override} is not an executable file")
        return override
    script = Path(__file__).resolve().parents[2] / "tools" / "build-consul.sh"
    if script.exists():
        # stderr is inherited so that a first-time build shows its progress.
        result = subprocess.run([str(script)], stdout=subprocess.PIPE, text=True, check=False)
        if result.returncode != 0 or not result.stdout.strip():
            raise ConsulNotFound(f"{script} failed with status {result.returncode}")
        return result.stdout.split()[-1]
    found = shutil.which("consul")
    if found is None:
        raise ConsulNotFound("no consul binary: not in a Glimpse checkout, none on PATH")
    return found


@attrs.define
class DevConsul(ConsulAgent):
    """A throw-away ``consul agent -dev``; as a context manager, stopped on exit."""

    def restart(self, timeout: float = 30.0) -> None:
        """(Re)start it (not after :meth:`stop`) on its ports and data dir; wait for a leader.

        :param timeout: Seconds to wait for the leader.
        :raises ConsulStartError: If it exits or times out; it is then killed.
        """
        self.spawn()
        try:
            self.wait_for(lambda: self.get_json("status/leader"), timeout, "elect a leader")
        except ConsulStartError:
            self.kill()
            raise


def start_dev_consul(
    binary: str, datacenter: str = "dc1", join_wan: DevConsul | None = None,
    extra_hcl: Sequence[str] = (), workdir: str | None = None,
    acl_token: str | None = None, timeout: float = 30.0,
) -> DevConsul:
    """Start a throw-away dev agent and wait until it has a leader.

    :param binary: Path of the consul binary (see :func:`find_consul`).
    :param datacenter: Its datacenter; the node is ``g-<datacenter>``.
    :param join_wan: Another DC's agent to WAN-join; wait until each lists both.
    :param extra_hcl: More ``-hcl`` snippets.
    :param workdir: Where to create its temporary directory.
    :param acl_token: Enable ACLs (default deny) with this management and agent
        token; each agent is then its own ACL primary.
    :param timeout: Seconds to wait for each readiness condition.
    :raises ConsulStartError: If it exits or is not ready in time; it is stopped.
    """
    base = Path(tempfile.mkdtemp(prefix=f"glimpse-consul-{datacenter}-", dir=workdir))
    agent = DevConsul(
        datacenter=datacenter, node=f"g-{datacenter}", ports=Ports(*free_ports(5)), base_dir=base,
        data_dir=base / "data", log_path=base / "consul.log", acl_token=acl_token)
    agent.config_dir.mkdir()
    hcl = ["ui_config { enabled = false }", "connect { enabled = false }",
           # Every blocking query holds a connection; 200 is too few for tests.
           "limits { http_max_conns_per_client = 1000 }"]
    if acl_token:
        hcl.append('acl { enabled = true default_policy = "deny" tokens { '
                   f'initial_management = "{acl_token}" agent = "{acl_token}" }} }}')
    agent.command = [
        binary, "agent", "-dev", f"-node={agent.node}", f"-datacenter={datacenter}",
        f"-bind={LOOPBACK}", f"-client={LOOPBACK}",
        *agent.ports.flags(),
        # Dev mode's fixed gRPC ports 8502/8503 would collide between agents.
        "-grpc-port=-1", "-grpc-tls-port=-1", f"-data-dir={agent.data_dir}",
        f"-config-dir={agent.config_dir}", "-log-level=warn",
        *(f"-hcl={snippet}" for snippet in [*hcl, *extra_hcl]),
    ]
    if join_wan is not None:
        agent.command.append(f"-retry-join-wan={LOOPBACK}:{join_wan.ports.serf_wan}")
    try:
        agent.restart(timeout)
        if join_wan is not None:
            pair, both = (agent, join_wan), {datacenter, join_wan.datacenter}
            agent.wait_for(lambda: all(both <= set(a.get_json("catalog/datacenters"))
                                        for a in pair),
                            timeout, f"see {join_wan.datacenter} in /v1/catalog/datacenters")
    except BaseException:
        agent.stop()
        raise
    return agent


def wait_federated(agents: Sequence[DevConsul], timeout: float = 30.0) -> None:
    """Wait until every agent lists every agent's datacenter (WAN gossip
    reaches the earlier zones after the later ones have joined).

    :param agents: The started agents.
    :param timeout: Seconds before :class:`ConsulStartError`.
    """
    names = {a.datacenter for a in agents}
    wait_until(lambda: all(names <= set(a.get_json("catalog/datacenters")) for a in agents),
               timeout, f"see all of {sorted(names)} in /v1/catalog/datacenters", agents)


def main(argv: Sequence[str] | None = None) -> int:
    """Run dev agents until SIGINT or SIGTERM, then stop them (``make run``).

    :param argv: Command-line arguments, without the program name.
    :return: The exit status.
    """
    parser = argparse.ArgumentParser(prog="python -m glimpse.dev.consul", description=__doc__)
    parser.add_argument("--datacenter", default="dc1", help="DC name of a single agent")
    parser.add_argument("--zones", type=int, default=1, choices=range(1, 5),
                        help=f"run N WAN-joined DCs: {', '.join(ZONE_NAMES)}")
    parser.add_argument("--env-file", help="also write CONSUL_HTTP_ADDR lines here")
    options = parser.parse_args(argv)
    names = ZONE_NAMES[:options.zones] if options.zones > 1 else (options.datacenter,)
    stopping = threading.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *_: stopping.set())
    agents: list[DevConsul] = []
    try:
        binary = find_consul()
        for name in names:
            agents.append(start_dev_consul(binary, name, agents[0] if agents else None))
        wait_federated(agents)
        env = [f"CONSUL_HTTP_ADDR={agents[0].http_addr}\n"] + [
            f"CONSUL_HTTP_ADDR_{a.datacenter.upper().replace('-', '_')}={a.http_addr}\n"
            for a in agents]
        if options.env_file:  # Before the lines: their reader may source it at once.
            Path(options.env_file).write_text("".join(env))
        for a in agents:
            print(f"{a.datacenter} http={a.url} dns={LOOPBACK}:{a.ports.dns}", flush=True)
        # Wake now and then to notice an agent that died on its own.
        while not stopping.wait(0.5):
            for dead in [a for a in agents if a.process and a.process.poll() is not None]:
                print(f"consul {dead.datacenter} exited:\n{dead.log_tail()}", file=sys.stderr)
                return 1
        return 0
    except (ConsulNotFound, ConsulStartError) as error:
        print(error, file=sys.stderr)
        return 1
    finally:
        for agent in agents:
            agent.stop()


if __name__ == "__main__":
    sys.exit(main())
