"""One consul agent process: loopback ports, its own directory, log and process group;
started, killed and waited on with deadlines.  Shared by the dev agent (:mod:`glimpse.dev.consul`)
and the production-shaped zones (:mod:`glimpse.dev.cluster`).
"""

import contextlib
import http.client
import json
import os
import shutil
import signal
import socket
import subprocess
import time
import urllib.request
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, NamedTuple, Self, TypeVar

import attrs

__all__ = ["LOOPBACK", "ConsulAgent", "ConsulStartError", "NotYet", "Ports", "free_ports",
           "wait_until"]

LOOPBACK = "127.0.0.1"
_T = TypeVar("_T")


@attrs.define(auto_exc=True)
class ConsulStartError(Exception):
    """An agent exited early or was not ready before its deadline."""

    reason: str  #: What went wrong.
    log_tail: str  #: The end of the agent's output, with Consul's own error.

    def __str__(self) -> str:
        return f"{self.reason}; end of its log:\n{self.log_tail}"



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


class NotYet(Exception):
    """Raised by a :func:`wait_until` condition to say why it is not met yet."""


def wait_until(ready: Callable[[], _T], timeout: float, what: str,
               agents: Sequence["ConsulAgent"], interval: float = 0.05,
               must_run: bool = True) -> _T:
    """Call ``ready`` every ``interval`` seconds until it returns something true; return that.

    :exc:`NotYet`, ``OSError``, ``ValueError`` and ``HTTPException`` from ``ready`` count as
    "not yet" (an agent not listening yet, a 500 while it elects a leader); the last one is
    quoted in the error.

    :param ready: The condition.
    :param timeout: Seconds before giving up.
    :param what: What is awaited, for the error: "elect a leader".
    :param agents: The agents concerned; their logs go into the error.
    :param must_run: Whether one of ``agents`` not running is an error at once.
    :raises ConsulStartError: If an agent is not running (``must_run``), or on timeout.
    """
    deadline = time.monotonic() + timeout
    last = "nothing checked yet"
    while True:
        try:
            result = ready()
            if result:
                return result
            last = f"{result!r}"
        except (NotYet, OSError, ValueError, http.client.HTTPException) as error:
            last = str(error) or type(error).__name__
        dead = [a for a in agents if not a.running] if must_run else []
        if dead or time.monotonic() > deadline:
            why = (", ".join(f"{a.node} exited ({a.exit_status})" for a in dead) if dead
                   else f"timed out after {timeout} s (last: {last})")
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
    command: list[str] = attrs.field(factory=list, repr=False)  #: Its argv, for every (re)start.
    process: subprocess.Popen[bytes] | None = None  #: The agent, once started.
    acl_token: str | None = None  #: Its management token, if ACLs are enabled.
    log_offset: int = attrs.field(default=0, repr=False)  #: Its log's size at its last start.

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

    def log_since_start(self) -> str:
        """What the agent logged since it was last started."""
        with contextlib.suppress(OSError), open(self.log_path, "rb") as log:
            log.seek(self.log_offset)
            return log.read().decode(errors="replace")
        return ""

    def spawn(self) -> None:
        """Start :attr:`command` (SIGTERMing a running one first), without waiting for it."""
        self.terminate()
        with open(self.log_path, "ab") as log:
            self.log_offset = log.tell()
            # Own group: stop() reaches it all; `make run`'s Ctrl-C reaches only main().
            self.process = subprocess.Popen(
                self.command, stdin=subprocess.DEVNULL, stdout=log,
                stderr=subprocess.STDOUT, start_new_session=True)

    def wait_for(self, ready: Callable[[], _T], timeout: float, what: str) -> _T:
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
