"""Throw-away Consul dev agents for tests, ``make run`` and benchmarks.

Each is a ``consul agent -dev`` on loopback with its own free ports, its
files in a private temporary directory, in its own process group (consul.md,
"Throw-away agent").  ``python -m glimpse.devconsul --zones 2`` runs two.
"""

from __future__ import annotations

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
from pathlib import Path
from typing import Any, Callable, Sequence

import attrs

LOOPBACK = "127.0.0.1"
ZONE_NAMES = ("ams", "fra", "lon", "nyc")


@attrs.define(auto_exc=True)
class ConsulNotFound(Exception):
    """No usable consul binary could be found or built.

    :param reason: What went wrong.
    """

    reason: str

    def __str__(self) -> str:
        return f"{self.reason}; run `make consul`, or set GLIMPSE_CONSUL=/path/to/consul"


@attrs.define(auto_exc=True)
class ConsulStartError(Exception):
    """A dev agent exited early or was not ready before its deadline.

    :param reason: What went wrong.
    :param log_tail: The end of the agent's output, with Consul's own error.
    """

    reason: str
    log_tail: str

    def __str__(self) -> str:
        return f"{self.reason}; end of its log:\n{self.log_tail}"


def find_consul() -> str:
    """Return the consul binary: ``$GLIMPSE_CONSUL``, else what the checkout's
    ``tools/build-consul.sh`` prints (it builds once, progress on stderr),
    else ``consul`` on ``PATH`` when not run from a checkout.

    :raises ConsulNotFound: If none of these yields a binary.
    """
    override = os.environ.get("GLIMPSE_CONSUL")
    if override:
        if not os.access(override, os.X_OK):
            raise ConsulNotFound(f"GLIMPSE_CONSUL={override} is not an executable file")
        return override
    script = Path(__file__).resolve().parent.parent / "tools" / "build-consul.sh"
    if script.exists():
        # stderr is inherited so that a first-time build shows its progress.
        result = subprocess.run([str(script)], stdout=subprocess.PIPE, text=True)
        lines = result.stdout.split()
        if result.returncode != 0 or not lines:
            raise ConsulNotFound(f"{script} failed with status {result.returncode}")
        return lines[-1]
    found = shutil.which("consul")
    if found is None:
        raise ConsulNotFound("no consul binary: not in a Glimpse checkout, none on PATH")
    return found


def free_ports(n: int) -> list[int]:
    """Return ``n`` distinct loopback ports free for both TCP and UDP, as
    Consul's DNS and serf listen on both.

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


@attrs.frozen
class Ports:
    """The loopback ports of one agent, named after its ``-<name>-port`` flags."""

    http: int
    dns: int
    serf_lan: int
    serf_wan: int
    server: int


@attrs.define
class DevConsul:
    """A throw-away ``consul agent -dev``; as a context manager, stopped on exit.

    :param datacenter: Its datacenter (Glimpse zone).
    :param node: Its node name.
    :param ports: Its loopback ports.
    :param base_dir: Its private temporary directory, holding all its files.
    :param data_dir: Its ``-data-dir``.
    :param log_path: The file receiving its stdout and stderr.
    :param command: Its argv, reused by :meth:`restart`.
    :param process: The agent process, once started.
    :param acl_token: Its management token, if ACLs are enabled.
    """

    datacenter: str
    node: str
    ports: Ports
    base_dir: Path
    data_dir: Path
    log_path: Path
    command: list[str] = attrs.Factory(list)
    process: subprocess.Popen[bytes] | None = None
    acl_token: str | None = None

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

    def get_json(self, path: str, timeout: float = 2.0) -> Any:
        """GET ``/v1/<path>`` (with the ACL token, if any), return the JSON.

        :param path: The API path below ``/v1/``, with any query string.
        :param timeout: Socket timeout in seconds."""
        request = urllib.request.Request(f"{self.url}/v1/{path}")
        if self.acl_token:
            request.add_header("X-Consul-Token", self.acl_token)
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return json.load(response)

    def log_tail(self, lines: int = 30) -> str:
        """Return the last lines of the agent's log.

        :param lines: How many lines."""
        with contextlib.suppress(OSError):
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        return "(no log)"

    def stop(self) -> None:
        """SIGTERM its process group, SIGKILL after 10 s, remove its directory.
        Safe to call more than once."""
        self._signal(signal.SIGTERM)
        shutil.rmtree(self.base_dir, ignore_errors=True)

    def kill(self) -> None:
        """SIGKILL the agent, as a crash would; its files stay for :meth:`restart`."""
        self._signal(signal.SIGKILL)

    def restart(self, timeout: float = 30.0) -> None:
        """Start the agent again (stopping it first if it runs) on the same
        ports and data dir, and wait for a leader.  Not after :meth:`stop`.

        :param timeout: Seconds to wait for the leader.
        :raises ConsulStartError: If it exits or times out."""
        self._signal(signal.SIGTERM)
        self._launch(timeout)

    def _launch(self, timeout: float) -> None:
        with open(self.log_path, "ab") as log:
            # Its own group: stop() reaches all of it, and Ctrl-C on
            # `make run` reaches only main(), which then stops it cleanly.
            self.process = subprocess.Popen(
                self.command, stdin=subprocess.DEVNULL, stdout=log,
                stderr=subprocess.STDOUT, start_new_session=True)
        self._wait_for(lambda: self.get_json("status/leader"), timeout, "elect a leader")

    def _wait_for(self, ready: Callable[[], Any], timeout: float, what: str) -> None:
        # Poll with a deadline; an early exit fails at once, with the log.
        deadline = time.monotonic() + timeout
        while self.process is not None:
            with contextlib.suppress(OSError, ValueError, http.client.HTTPException):
                if ready():  # Errors mean not listening yet, or 500 while electing.
                    return
            status = self.process.poll()
            if status is not None or time.monotonic() > deadline:
                self.kill()
                why = f"timed out after {timeout} s" if status is None else f"exited ({status})"
                raise ConsulStartError(
                    f"consul {self.datacenter} {why} before it could {what}", self.log_tail())
            time.sleep(0.05)

    def _signal(self, signum: int) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, signum)
        try:
            self.process.wait(10.0)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait()

    def __enter__(self) -> DevConsul:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()


def start_dev_consul(
    binary: str, datacenter: str = "dc1", join_wan: DevConsul | None = None,
    extra_hcl: Sequence[str] = (), workdir: str | None = None,
    acl_token: str | None = None, timeout: float = 30.0,
) -> DevConsul:
    """Start a throw-away dev agent and wait until it has a leader.

    :param binary: Path of the consul binary (see :func:`find_consul`).
    :param datacenter: Its datacenter; the node is ``g-<datacenter>``.
    :param join_wan: An agent of another datacenter to WAN-join; then also
        wait until both list both datacenters.
    :param extra_hcl: More ``-hcl`` snippets.
    :param workdir: Where to create its temporary directory.
    :param acl_token: Enable ACLs, default deny, with this management and
        agent token.  Each agent is then its own ACL primary.
    :param timeout: Seconds to wait for each readiness condition.
    :raises ConsulStartError: If it exits early or is not ready in time
        (it is then stopped and its directory removed).
    """
    base = Path(tempfile.mkdtemp(prefix=f"glimpse-consul-{datacenter}-", dir=workdir))
    agent = DevConsul(
        datacenter=datacenter, node=f"g-{datacenter}", ports=Ports(*free_ports(5)),
        base_dir=base, data_dir=base / "data", log_path=base / "consul.log",
        acl_token=acl_token)
    agent.config_dir.mkdir()
    hcl = ["ui_config { enabled = false }", "connect { enabled = false }",
           # Every blocking query holds a connection; 200 is too few for tests.
           "limits { http_max_conns_per_client = 1000 }"]
    if acl_token:
        hcl.append('acl { enabled = true default_policy = "deny" tokens { '
                   f'initial_management = "{acl_token}" agent = "{acl_token}" }} }}')
    flags = ("http", "dns", "serf-lan", "serf-wan", "server")
    agent.command = [
        binary, "agent", "-dev", f"-node={agent.node}", f"-datacenter={datacenter}",
        f"-bind={LOOPBACK}", f"-client={LOOPBACK}",
        *(f"-{flag}-port={port}" for flag, port in zip(flags, attrs.astuple(agent.ports))),
        # Dev mode's fixed gRPC ports 8502/8503 would collide between agents.
        "-grpc-port=-1", "-grpc-tls-port=-1", f"-data-dir={agent.data_dir}",
        f"-config-dir={agent.config_dir}", "-log-level=warn",
        *(f"-hcl={snippet}" for snippet in [*hcl, *extra_hcl]),
    ]
    if join_wan is not None:
        agent.command.append(f"-retry-join-wan={LOOPBACK}:{join_wan.ports.serf_wan}")
    try:
        agent._launch(timeout)
        if join_wan is not None:
            both = sorted({datacenter, join_wan.datacenter})
            agent._wait_for(
                lambda: all(sorted(a.get_json("catalog/datacenters")) == both
                            for a in (agent, join_wan)),
                timeout, f"see {join_wan.datacenter} in /v1/catalog/datacenters")
    except BaseException:
        agent.stop()
        raise
    return agent


def main(argv: Sequence[str] | None = None) -> int:
    """Run dev agents until SIGINT or SIGTERM, then stop them (``make run``).

    :param argv: Command-line arguments, without the program name.
    :return: The exit status.
    """
    parser = argparse.ArgumentParser(
        prog="python -m glimpse.devconsul", description="Run throw-away Consul dev agents.")
    parser.add_argument("--datacenter", default="dc1", help="name of the single agent's DC")
    parser.add_argument("--zones", type=int, default=1, choices=range(1, 5),
                        help=f"start N WAN-joined DCs named {', '.join(ZONE_NAMES)}")
    parser.add_argument("--env-file", help="also write shell-sourceable addresses here")
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
        env = [f"CONSUL_HTTP_ADDR={agents[0].http_addr}"]
        for a in agents:
            print(f"{a.datacenter} http={a.url} dns={LOOPBACK}:{a.ports.dns}", flush=True)
            key = a.datacenter.upper().replace("-", "_")
            env += [f"CONSUL_HTTP_ADDR_{key}={a.http_addr}",
                    f"CONSUL_DNS_ADDR_{key}={LOOPBACK}:{a.ports.dns}"]
        if options.env_file:
            Path(options.env_file).write_text("".join(f"{line}\n" for line in env))
        # Wake now and then to notice an agent that died on its own.
        while not stopping.wait(0.5):
            for a in agents:
                if a.process is None or a.process.poll() is not None:
                    print(f"consul {a.datacenter} exited:\n{a.log_tail()}", file=sys.stderr)
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
