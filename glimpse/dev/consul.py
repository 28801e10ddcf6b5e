"""Throw-away ``consul agent -dev`` agents for tests, ``make run`` and benchmarks.

Loopback, free ports, own temporary directory and process group (consul.md, "Throw-away agent").
"""

import argparse
import contextlib
import http.client
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, NamedTuple, Self

import attrs

LOOPBACK = "127.0.0.1"
ZONE_NAMES = ("ams", "fra", "lon", "nyc")


@attrs.define(auto_exc=True)
class ConsulNotFound(Exception):
    """No usable consul binary could be found or built."""

    reason: str  #: What went wrong.

    def __str__(self) -> str:
        return f"{self.reason}; run `make consul`, or set GLIMPSE_CONSUL to a consul binary"


@attrs.define(auto_exc=True)
class ConsulStartError(Exception):
    """A dev agent exited early or was not ready before its deadline."""

    reason: str  #: What went wrong.
    log_tail: str  #: The end of the agent's output, with Consul's own error.

    def __str__(self) -> str:
        return f"{self.reason}; end of its log:\n{self.log_tail}"


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


def free_ports(n: int) -> list[int]:
    """Return ``n`` distinct loopback ports free for TCP and UDP (serf, DNS use both).

    :param n: How many ports.
    """
    held: list[socket.socket] = []
    ports: list[int] = []
    try:
        while len(ports) < n:
            tcp, udp = socket.socket(), socket.socket(type=socket.SOCK_DGRAM)
            held += [tcp, udp]
            tcp.bind((LOOPBACK, 0))
            port = tcp.getsockname()[1]
            with contextlib.suppress(OSError):
                udp.bind((LOOPBACK, port))
                ports.append(port)
    finally:
        # Closed only now, so that no port is handed out twice.
        for sock in held:
            sock.close()
    return ports


class Ports(NamedTuple):
    """The loopback ports of one agent, named after its ``-<name>-port`` flags; ``-1`` for a
    port it does not open (a client agent has no Serf WAN or server RPC port)."""

    http: int  #: HTTP API.
    dns: int  #: DNS, UDP and TCP.
    serf_lan: int  #: LAN gossip, UDP and TCP.
    serf_wan: int  #: WAN gossip (servers), UDP and TCP.
    server: int  #: Server RPC (servers); ``/v1/status/leader`` names it.

    def flags(self) -> list[str]:
        """The ``-<name>-port=N`` flags of the ports it opens."""
        return [f"-{name.replace('_', '-')}-port={port}"
                for name, port in self._asdict().items() if port >= 0]


def wait_until(ready: Callable[[], Any], timeout: float, what: str,
               agents: Sequence["ConsulAgent"], interval: float = 0.05) -> Any:
    """Call ``ready`` every ``interval`` seconds until it returns something true; return that.

    ``OSError``, ``ValueError`` and ``HTTPException`` from ``ready`` count as "not yet"
    (an agent not listening yet, a 500 while it elects a leader).

    :param ready: The condition.
    :param timeout: Seconds before giving up.
    :param what: What is awaited, for the error: "elect a leader".
    :param agents: The agents that must keep running meanwhile; their logs go into the error.
    :raises ConsulStartError: If one of ``agents`` is not running or on timeout.
    """
    deadline = time.monotonic() + timeout
    while True:
        with contextlib.suppress(OSError, ValueError, http.client.HTTPException):
            result = ready()
            if result:
                return result
        dead = [a for a in agents if not a.running]
        if dead or time.monotonic() > deadline:
            why = (", ".join(f"{a.node} exited ({a.exit_status})" for a in dead) if dead
                   else f"timed out after {timeout} s")
            where = agents[0].datacenter if agents else "?"
            raise ConsulStartError(
                f"consul {where} {why} before it could {what}",
                "\n".join(f"--- {a.node}:\n{a.log_tail(12 if len(agents) > 1 else 30)}"
                          for a in (dead or agents)))
        time.sleep(interval)


@attrs.define
class ConsulAgent:
    """A consul agent process on loopback ports, with its own directory and process group.

    :meth:`kill` and :meth:`terminate` keep its files, so it can start again on the same ports
    and data dir; :meth:`stop` (or leaving its ``with`` block) removes them.
    """

    datacenter: str  #: Its datacenter (Glimpse zone).
    node: str  #: Its node name.
    ports: Ports  #: Its loopback ports.
    base_dir: Path  #: Its private directory, holding all its files.
    data_dir: Path  #: Its ``-data-dir``.
    log_path: Path  #: The file receiving its stdout and stderr.
    command: list[str] = attrs.Factory(list)  #: Its argv, reused by every (re)start.
    process: subprocess.Popen[bytes] | None = None  #: The agent, once started.
    acl_token: str | None = None  #: Its management token, if ACLs are enabled.

    @property
    def http_addr(self) -> str:
        """``host:port`` of the HTTP API, as ``CONSUL_HTTP_ADDR`` takes it."""
        return f"{LOOPBACK}:{self.ports.http}"

    @property
    def url(self) -> str:
        """Base URL of the HTTP API, without a trailing slash."""
        return f"http://{self.http_addr}"

    @property
    def dns(self) -> tuple[str, int]:
        """``(host, port)`` of the DNS interface (UDP and TCP)."""
        return (LOOPBACK, self.ports.dns)

    @property
    def config_dir(self) -> Path:
        """Its ``-config-dir``; ``PUT /v1/agent/reload`` after changing it."""
        return self.base_dir / "config"

    @property
    def running(self) -> bool:
        """Whether its process was started and has not exited."""
        return self.process is not None and self.process.poll() is None

    @property
    def exit_status(self) -> int | None:
        """Its process's exit status; ``None`` while it runs or before it starts."""
        return None if self.process is None else self.process.poll()

    def get_json(self, path: str, timeout: float = 2.0) -> Any:
        """GET ``/v1/<path>`` (with the ACL token, if any) and return the decoded JSON."""
        request = urllib.request.Request(f"{self.url}/v1/{path}")
        if self.acl_token:
            request.add_header("X-Consul-Token", self.acl_token)
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return json.load(response)

    def log_tail(self, lines: int = 30) -> str:
        """Return the last ``lines`` lines of the agent's log."""
        with contextlib.suppress(OSError):
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        return "(no log)"

    def spawn(self) -> None:
        """Start :attr:`command` (SIGTERMing a running one first), without waiting for it."""
        self.terminate()
        with open(self.log_path, "ab") as log:
            # Own group: stop() reaches it all; `make run`'s Ctrl-C reaches only main().
            self.process = subprocess.Popen(
                self.command, stdin=subprocess.DEVNULL, stdout=log,
                stderr=subprocess.STDOUT, start_new_session=True)

    def wait_for(self, ready: Callable[[], Any], timeout: float, what: str) -> Any:
        """:func:`wait_until` ``ready`` returns something true while this agent runs."""
        return wait_until(ready, timeout, what, [self])

    def stop(self) -> None:
        """SIGTERM its process group (SIGKILL after 10 s), remove its directory; idempotent."""
        self.terminate()
        shutil.rmtree(self.base_dir, ignore_errors=True)

    def terminate(self) -> None:
        """SIGTERM its process group (SIGKILL after 10 s) and wait; its files stay."""
        self._signal(signal.SIGTERM)

    def kill(self) -> None:
        """SIGKILL the agent, as a crash would; its files stay."""
        self._signal(signal.SIGKILL)

    def _signal(self, signum: int) -> None:
        if self.running:
            assert self.process is not None
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, signum)
            try:
                self.process.wait(10.0)
            except subprocess.TimeoutExpired:
                self._signal(signal.SIGKILL)

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()


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
    for agent in agents:
        agent.wait_for(lambda agent=agent: names <= set(agent.get_json("catalog/datacenters")),
                       timeout, f"see all of {sorted(names)} in /v1/catalog/datacenters")


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
