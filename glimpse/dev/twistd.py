"""
Run ``twistd -n glimpse`` as a child process, for ``make run``, the
integration tests and the benchmarks.  Stdlib only.
"""

import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import IO, Any

import attrs

from glimpse.cli.client import Unreachable, request
from glimpse.dev.consul import free_ports

REPO = Path(__file__).resolve().parents[2]


class GlimpseStartError(Exception):
    """
    Glimpse did not come up; the message has the tail of its log.
    """


def http_json(method: str, url: str, body: Any = None, timeout: float = 10.0,
              headers: dict[str, str] | None = None) -> tuple[int, Any]:
    """
    The CLI's request (:obj:`glimpse.cli.client.request`), raising ``OSError``
    when the agent cannot be reached, as the wait loops here expect.

    :return: ``(status, decoded JSON or text)``, whatever the status.
    """
    try:
        return request(method, url, body, headers=headers, timeout=timeout)
    except Unreachable as e:
        raise OSError(str(e)) from e


@attrs.define
class DevGlimpse:
    """
    A running ``twistd -n glimpse``.
    """

    consul_url: str  #: The Consul agent it talks to.
    dns_zone: str  #: The domain it answers for.
    dns_port: int  #: Its loopback DNS port (UDP and TCP).
    http_port: int  #: Its loopback HTTP port.
    state_dir: str  #: Its ``--state-dir``.
    log_path: str  #: Its log, unless :meth:`start` is given ``stdout``.
    extra_args: list[str]  #: More ``twistd glimpse`` options.
    process: subprocess.Popen[bytes] | None = None  #: The process, once started.

    @property
    def url(self) -> str:
        """
        Base URL of its HTTP API.
        """
        return f"http://127.0.0.1:{self.http_port}"

    @property
    def dns(self) -> tuple[str, int]:
        """
        ``(host, port)`` of its DNS server.
        """
        return ("127.0.0.1", self.dns_port)

    def argv(self) -> list[str]:
        """
        The command line that runs it.
        """
        return [
            sys.executable, "-c", "from twisted.scripts.twistd import run; run()",
            "--nodaemon", "--pidfile=", "--logfile=-", "glimpse",
            f"--consul={self.consul_url}",
            f"--dns-zone={self.dns_zone}",
            f"--dns-port={self.dns_port}",
            f"--http=tcp:{self.http_port}:interface=127.0.0.1",
            f"--state-dir={self.state_dir}",
            *self.extra_args,
        ]

    def start(self, timeout: float = 20.0, wait_ready: bool = True,
              stdout: IO[Any] | None = None) -> "DevGlimpse":
        """
        Start it, and wait until its HTTP API answers.

        :param timeout: Seconds to wait.
        :param wait_ready: Whether to wait at all.
        :param stdout: Where its output goes instead of :attr:`log_path`.
        :return: itself.
        :raises GlimpseStartError: If it exits or does not answer in time.
        """
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
        with open(self.log_path, "ab") as log:  # The child keeps its own copy.
            self.process = subprocess.Popen(
                self.argv(), stdout=log if stdout is None else stdout,
                stderr=subprocess.STDOUT, env=env, start_new_session=True)
        if not wait_ready:
            return self
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise GlimpseStartError(f"glimpse exited with {self.process.returncode}:\n"
                                        + self.log_tail())
            try:
                http_json("GET", f"{self.url}/v1/status", timeout=1.0)
                return self
            except OSError:
                time.sleep(0.05)
        self.kill()
        raise GlimpseStartError(f"glimpse did not answer within {timeout}s:\n" + self.log_tail())

    def log_tail(self, lines: int = 40) -> str:
        """
        The last lines of its log.
        """
        try:
            return "\n".join(Path(self.log_path).read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    def stop(self, timeout: float = 10.0) -> None:
        """
        SIGTERM, then SIGKILL after ``timeout``; idempotent.
        """
        if self.process is None or self.process.poll() is not None:
            return
        os.killpg(self.process.pid, signal.SIGTERM)
        try:
            self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill()

    def kill(self) -> None:
        """
        SIGKILL, as a crash would.
        """
        if self.process is not None and self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait()

    def hold_ports(self) -> list[socket.socket]:
        """
        Bind a stopped Glimpse's ports (DNS over UDP and TCP, HTTP) so that
        no other program takes them before it restarts on them; nothing
        reads them, so to a client (unbound) it is as silent as stopped.

        :return: the sockets; close them before starting it again.
        """
        held = []
        for port, kind in ((self.dns_port, socket.SOCK_DGRAM),
                           (self.dns_port, socket.SOCK_STREAM),
                           (self.http_port, socket.SOCK_STREAM)):
            s = socket.socket(socket.AF_INET, kind)
            # Glimpse's connections may still be in TIME_WAIT.
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            s.bind(("127.0.0.1", port))
            held.append(s)
        return held

    def get(self, path: str, **kwargs: Any) -> tuple[int, Any]:
        """
        ``GET`` a path of its API: ``(status, body)``.
        """
        return http_json("GET", self.url + path, **kwargs)

    def put(self, path: str, body: Any, **kwargs: Any) -> tuple[int, Any]:
        """
        ``PUT`` a JSON body to a path of its API: ``(status, body)``.
        """
        return http_json("PUT", self.url + path, body, **kwargs)

    def delete(self, path: str, **kwargs: Any) -> tuple[int, Any]:
        """
        ``DELETE`` a path of its API: ``(status, body)``.
        """
        return http_json("DELETE", self.url + path, **kwargs)


def start_glimpse(consul_url: str, dns_zone: str = "glimpse.test",
                  extra_args: Sequence[str] = (), workdir: str | None = None,
                  ports: tuple[int, int] | None = None, **kwargs: Any) -> DevGlimpse:
    """
    Start a Glimpse on free loopback ports (or ``ports``: ``(dns, http)``)
    with its own state directory.

    :param kwargs: Passed to :meth:`DevGlimpse.start`.
    """
    workdir = workdir or tempfile.mkdtemp(prefix="glimpse-")
    os.makedirs(workdir, exist_ok=True)
    dns_port, http_port = ports or free_ports(2)
    glimpse = DevGlimpse(
        consul_url=consul_url, dns_zone=dns_zone, dns_port=dns_port, http_port=http_port,
        state_dir=os.path.join(workdir, "state"), log_path=os.path.join(workdir, "glimpse.log"),
        extra_args=list(extra_args))
    return glimpse.start(**kwargs)
