"""
Watching processes from outside, for the scale tests and ``make
bench-scale``: TCP connections one process holds to a port (from
``/proc``), its CPU time and RSS, and Prometheus text read into numbers.
Linux only; stdlib only.

    with ConnectionSampler(glimpse.process.pid, zone.client.ports.http) as conns:
        ...                       # load
    assert conns.most <= 64
"""

import os
import re
import threading
from pathlib import Path
from typing import Self

__all__ = ["ConnectionSampler", "cpu_seconds", "metric", "metrics", "rss_bytes",
           "tcp_connections"]

_ESTABLISHED = "01"


def _socket_inodes(pid: int) -> set[str]:
    inodes = set()
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        try:
            target = os.readlink(fd)
        except OSError:
            continue  # closed meanwhile
        if target.startswith("socket:["):
            inodes.add(target[8:-1])
    return inodes


def tcp_connections(pid: int, port: int) -> int:
    """
    How many established TCP connections process ``pid`` holds to ``port``
    (on any address), from ``/proc/<pid>/net/tcp{,6}`` and its open files.

    :param pid: the process.
    :param port: the remote port (e.g. the Consul agent's HTTP port).
    """
    inodes = _socket_inodes(pid)
    count = 0
    for table in ("tcp", "tcp6"):
        try:
            lines = Path(f"/proc/{pid}/net/{table}").read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            remote_port = int(fields[2].rsplit(":", 1)[1], 16)
            if remote_port == port and fields[3] == _ESTABLISHED and fields[9] in inodes:
                count += 1
    return count


class ConnectionSampler:
    """
    Counts a process's connections to a port every ``interval`` seconds in
    a thread, while used as a context manager.

    :param pid: the process.
    :param port: the remote port.
    :param interval: seconds between samples.
    :ivar most: the most connections seen at once.
    :ivar samples: how many samples were taken.
    """

    def __init__(self, pid: int, port: int, interval: float = 0.05) -> None:
        self.pid = pid
        self.port = port
        self.interval = interval
        self.most = 0
        self.samples = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self.most = max(self.most, tcp_connections(self.pid, self.port))
                self.samples += 1
            except OSError:
                return  # the process is gone
            self._stop.wait(self.interval)

    def __enter__(self) -> Self:
        self._thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._stop.set()
        self._thread.join()


def _stat(pid: int) -> list[str]:
    return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()


def cpu_seconds(pid: int) -> float:
    """
    CPU time (user and system) a process has used so far.
    """
    fields = _stat(pid)
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def rss_bytes(pid: int) -> int:
    """
    A process's resident memory now.
    """
    return int(_stat(pid)[21]) * os.sysconf("SC_PAGE_SIZE")


_SAMPLE = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{[^}]*\})?\s+(\S+)")
_LABEL = re.compile(r'(\w+)="((?:[^"\\]|\\.)*)"')


def metrics(text: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    """
    The samples of a Prometheus text exposition.

    :return: ``{(name, frozenset of (label, value)): value}``.
    """
    samples = {}
    for line in text.splitlines():
        match = _SAMPLE.match(line)
        if match is None or line.startswith("#"):
            continue
        name, labels, value = match.groups()
        samples[(name, frozenset(_LABEL.findall(labels or "")))] = float(value)
    return samples


def metric(text: str, name: str, **labels: str) -> float:
    """
    The sum of the samples of ``name`` whose labels include ``labels``.

    :param text: a Prometheus text exposition.
    :param name: the sample's name (``glimpse_consul_requests_total``).
    :return: the sum, 0 when there is none.
    """
    wanted = set(labels.items())
    return sum(value for (sample, have), value in metrics(text).items()
               if sample == name and wanted <= have)

