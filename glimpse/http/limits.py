"""
The HTTP API's limits (issue #14): how long a client may take to send its
request, how large a body may be, and how many connections and held
requests (long-polls, streams) a client, and everyone together, may have.

:class:`HTTPLimits` holds the values (the ``--http-*`` options);
:class:`ClientSlots` counts what each client holds against a cap.  The
site that applies them to connections is :mod:`glimpse.http.site`; the
stream and long-poll cap is applied in :mod:`glimpse.http.follow`.

A client is an address: an IPv4 address, or an IPv6 /64 (one host is
usually given a whole /64, so counting its addresses one by one would cap
nothing).  Loopback clients all share ``127.0.0.1``, which is why the
per-client defaults leave room for many local clients at once.
"""

from __future__ import annotations

import ipaddress
import math
import resource
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import attrs
from twisted.internet.address import IPv4Address, IPv6Address, UNIXAddress
from twisted.logger import Logger

if TYPE_CHECKING:
    from twisted.internet.interfaces import IAddress, IReactorTime

log = Logger()

#: Seconds between two log lines about refusals of one kind: the first
#: refusal is logged at once, those that follow are counted into the next.
REFUSAL_LOG_INTERVAL = 60.0


#: The options of ``twistd glimpse`` that set the limits, and the
#: :class:`HTTPLimits` field each sets.
OPTIONS = {
    "http-header-timeout": "header_timeout",
    "http-body-timeout": "body_timeout",
    "http-idle-timeout": "idle_timeout",
    "http-max-body": "max_body",
    "http-max-conns": "max_conns",
    "http-max-conns-per-client": "max_conns_per_client",
    "http-max-streams-per-client": "max_streams_per_client",
}


@attrs.frozen
class HTTPLimits:
    """
    The limits of the HTTP API; every one is an option of ``twistd glimpse``
    (``--http-header-timeout`` ...), with these defaults.

    :ivar header_timeout: seconds a client has, from connecting (or from the
        first byte of its next request on a kept-alive connection), to send
        its request line and every header.  Not reset by the bytes that
        trickle in.
    :ivar body_timeout: seconds a request's body has to arrive once its
        headers are in.
    :ivar idle_timeout: seconds a kept-alive connection may sit between
        requests (or a request go without a byte) before it is closed.
    :ivar max_body: bytes a request body may have: a larger
        ``Content-Length`` is a 413 before any of the body is read, and a
        chunked body is cut with a 413 when it passes this.
    :ivar max_conns: connections open at once, from everyone; over it a new
        connection gets a 503 and is closed.
    :ivar max_conns_per_client: connections open at once from one client;
        over it a 429.
    :ivar max_streams_per_client: long-polls and event streams one client
        may have open at once; over it a 429.
    """

    header_timeout: float = attrs.field(default=5.0, validator=attrs.validators.gt(0))
    body_timeout: float = attrs.field(default=30.0, validator=attrs.validators.gt(0))
    idle_timeout: float = attrs.field(default=30.0, validator=attrs.validators.gt(0))
    max_body: int = attrs.field(default=16 * 1024 * 1024, validator=attrs.validators.gt(0))
    max_conns: int = attrs.field(default=4096, validator=attrs.validators.gt(0))
    max_conns_per_client: int = attrs.field(default=2048, validator=attrs.validators.gt(0))
    max_streams_per_client: int = attrs.field(default=1024, validator=attrs.validators.gt(0))

    @classmethod
    def from_options(cls, options: Mapping[str, Any]) -> HTTPLimits:
        """
        The limits a parsed :class:`glimpse.tap.Options` gives (the
        defaults for any of :data:`OPTIONS` it leaves out or sets to
        ``None``).
        """
        return cls(**{field: options[name] for name, field in OPTIONS.items()
                      if options.get(name) is not None})

    @property
    def retry_after(self) -> int:
        """
        The ``Retry-After`` of a refused connection, in whole seconds: by
        then every connection that was slow to send its headers is gone.
        """
        return max(1, math.ceil(self.header_timeout))

    def fitted(self, open_files: int | None) -> HTTPLimits:
        """
        These limits with ``max_conns`` lowered to half the process's
        open-file limit, when it is above that: the other half is left for
        DNS over TCP, the connections to Consul (one per watched job) and
        files.  Past the open-file limit every new client, HTTP and DNS,
        would be refused by the kernel without an answer.

        :param open_files: the soft ``RLIMIT_NOFILE``, or ``None`` when it
            is unknown or unlimited.
        """
        if open_files is None or self.max_conns <= open_files // 2:
            return self
        return attrs.evolve(self, max_conns=max(1, open_files // 2),
                            max_conns_per_client=min(self.max_conns_per_client,
                                                     max(1, open_files // 2)))


def client_key(address: IAddress | None) -> str:
    """
    The client a peer address counts as: its IPv4 address, the /64 of an
    IPv6 address (an IPv4-mapped one is its IPv4 address), ``unix`` for
    every UNIX socket client.

    :param address: the peer, from ``transport.getPeer()`` or
        ``request.getClientAddress()``.
    """
    if isinstance(address, IPv4Address):
        return address.host
    if isinstance(address, IPv6Address):
        ip = ipaddress.IPv6Address(address.host.split("%")[0])
        if ip.ipv4_mapped is not None:
            return str(ip.ipv4_mapped)
        return str(ipaddress.IPv6Network((ip, 64), strict=False))
    if isinstance(address, UNIXAddress):
        return "unix"
    return "other"


class ClientSlots:
    """
    How many of something (connections, held requests) each client has,
    against a cap per client.

    :param cap: the most one client may hold.
    """

    def __init__(self, cap: int) -> None:
        self.cap = cap
        self._held: dict[str, int] = {}
        self._total = 0

    def take(self, client: str) -> bool:
        """
        Take a slot for ``client``.

        :return: ``False``, taking nothing, when it already holds ``cap``.
        """
        held = self._held.get(client, 0)
        if held >= self.cap:
            return False
        self._held[client] = held + 1
        self._total += 1
        return True

    def give_back(self, client: str) -> None:
        """
        Give back one slot ``client`` took; a client holding none is
        forgotten, so the table never grows past the clients connected now.
        """
        held = self._held.get(client, 0)
        if held > 1:
            self._held[client] = held - 1
        elif held == 1:
            del self._held[client]
        else:
            return
        self._total -= 1

    def held(self, client: str) -> int:
        """
        How many slots ``client`` holds.
        """
        return self._held.get(client, 0)

    def clients(self) -> int:
        """
        How many clients hold a slot.
        """
        return len(self._held)

    def total(self) -> int:
        """
        How many slots are held, by every client.
        """
        return self._total


class RefusalLog:
    """
    Logs refusals of one kind without a line per refusal: the first at
    once, then at most one line per :data:`REFUSAL_LOG_INTERVAL` counting
    those since.

    :param clock: ``IReactorTime``.
    :param what: what is refused and why, for the log line, e.g.
        ``connections over --http-max-conns-per-client=2048``.
    """

    def __init__(self, clock: IReactorTime, what: str) -> None:
        self._clock = clock
        self._what = what
        self._last: float | None = None
        self._since = 0

    def refused(self, client: str) -> None:
        """
        One refusal of ``client``.
        """
        self._since += 1
        now = self._clock.seconds()
        if self._last is not None and now - self._last < REFUSAL_LOG_INTERVAL:
            return
        log.warn("HTTP: refused {count} {what} (the last from {client}); it is told to "
                 "retry later", count=self._since, what=self._what, client=client)
        self._last, self._since = now, 0


#: The listen backlog of an HTTP endpoint that does not give one: the
#: connections the kernel completes before Glimpse accepts them.  With
#: Twisted's default of 50 a burst of clients (a thousand subscribers
#: reconnecting) overflows it and the kernel drops their connections
#: silently: they wait a second or more to retry, instead of being served
#: or refused with a 429/503.
HTTP_BACKLOG = 1024


def with_backlog(endpoint: str, backlog: int = HTTP_BACKLOG) -> str:
    """
    ``endpoint`` (a server endpoint string) with ``backlog`` when it is a
    ``tcp:``, ``tcp6:``, ``ssl:`` or ``unix:`` endpoint that sets none.
    """
    kind = endpoint.split(":", 1)[0]
    if kind not in ("tcp", "tcp6", "ssl", "unix") or "backlog=" in endpoint:
        return endpoint
    return f"{endpoint}:backlog={backlog}"


def open_files_limit() -> int | None:
    """
    The process's soft limit of open files, or ``None`` when unlimited.
    """
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    return None if soft == resource.RLIM_INFINITY else soft


def fitted_limits(limits: HTTPLimits, open_files: int | None) -> HTTPLimits:
    """
    ``limits`` fitted to the open-file limit (:meth:`HTTPLimits.fitted`),
    saying so in the log when that lowers them.
    """
    fitted = limits.fitted(open_files)
    if fitted != limits:
        log.warn("HTTP: --http-max-conns={asked} does not fit the open-file limit ({files}): "
                 "at most {conns} HTTP connections; raise the limit (systemd: LimitNOFILE=) "
                 "to allow more", asked=limits.max_conns, files=open_files,
                 conns=fitted.max_conns)
    return fitted
