"""
``twistd glimpse``: the options and the service that composes the Consul
client, the topology view, the DNS server and the HTTP API on one reactor.
"""

from __future__ import annotations

import ipaddress
import os
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, ClassVar
from urllib.parse import urlsplit

from twisted.internet.endpoints import serverFromString
from twisted.python import usage

from glimpse.address import ANY_ZONE, InvalidName, label_problem, normalize_zone
from glimpse.config import ConfigError, read_secret, with_config
from glimpse.consul import ConsulTLS, TLSConfigError
from glimpse.http.limits import OPTIONS as LIMIT_OPTIONS
from glimpse.http.limits import HTTPLimits

if TYPE_CHECKING:
    from twisted.application.service import MultiService


def _positive(name: str, cast: Callable[[str], float] = float) -> Callable[[object], float]:
    def check(value: object) -> float:
        try:
            number = cast(str(value))
        except ValueError:
            raise usage.UsageError(
                f"--{name} takes a number, e.g. --{name}=5; not {value!r}") from None
        if number <= 0:
            raise usage.UsageError(f"--{name} must be more than 0, e.g. --{name}=5")
        return number
    return check


def _coercions(parameters: list[list[object]]) -> dict[str, Callable[[str], object]]:
    # The options that take a number: their fifth field is int or float.
    return {str(p[0]): p[4] for p in parameters if len(p) > 4 and callable(p[4])}


def _readable(name: str, path: str) -> str:
    if not os.path.isfile(path) or not os.access(path, os.R_OK):
        raise usage.UsageError(f"--{name}={path}: no such readable file; give the path of one")
    return path


#: The HTTP API's limits by default (one place says them: HTTPLimits).
_LIMITS = HTTPLimits()


class Options(usage.Options):
    """
    The command line of ``twistd glimpse``.
    """

    synopsis = "[options]"
    longdesc = (
        "Glimpse answers DNS (SRV, A) and HTTP questions about the service "
        "topology kept in Consul, and takes providers' host state over HTTP. "
        "Names are <service>.<job>.<env>.<product>.<zone>.<dns-zone>. "
        "Everything listens on loopback unless told otherwise."
    )

    optFlags: ClassVar[list[list[object]]] = [
        ["serve-warning", None,
         "Serve instances whose worst check warns, with their warning weight "
         "(default: only instances whose every check passes are in DNS)."],
    ]

    optParameters: ClassVar[list[list[object]]] = [
        ["config", None, None,
         "TOML file whose keys are these long options (e.g. dns-port = 8053); "
         "the command line overrides it."],
        ["consul", None, "http://127.0.0.1:8500",
         "URL of the local Consul agent's HTTP API; https:// verifies its certificate."],
        ["consul-token-file", None, None,
         "File holding the Consul ACL token sent with every request."],
        ["consul-ca", None, None,
         "PEM file of the CA that signed the Consul agent's certificate "
         "(default: the system's trust store)."],
        ["consul-max-conns", None, 64,
         "Most HTTP connections to the Consul agent at once, whatever the number of jobs "
         "(Consul refuses more than 200 per client address by default).", int],
        ["consul-poll-period", None, 1.0,
         "Seconds between two cached reads of a job that has no blocking watch "
         "(the jobs used most have one each).", float],
        ["consul-poll-rate", None, 4000.0,
         "Most cached reads a second, all jobs together; past it the period stretches.",
         float],
        ["consul-cert", None, None,
         "PEM file of the client certificate Glimpse shows an https:// Consul agent "
         "(one with verify_incoming needs it); with --consul-key."],
        ["consul-key", None, None, "PEM file of the private key of --consul-cert."],
        ["dns-zone", None, "glimpse.test",
         "The DNS zone Glimpse is authoritative for."],
        ["dns-interface", None, "127.0.0.1",
         "Address the DNS server listens on, UDP and TCP."],
        ["dns-port", None, 8053, "Port of the DNS server, UDP and TCP.", int],
        ["dns-advertise", None, None,
         "Address given for the zone's name server (ns.<dns-zone>); "
         "default: --dns-interface."],
        ["dns-ttl", None, 5, "TTL in seconds of positive DNS answers.", int],
        ["negative-ttl", None, 5,
         "TTL in seconds of negative DNS answers (NXDOMAIN, NODATA): the SOA minimum.", int],
        ["dns-tcp-max-conns", None, 1024,
         "DNS-over-TCP connections open at once (at most a quarter of the open-file "
         "limit); at the cap the longest-idle one is closed to make room for a new "
         "client, which is refused only when every connection is busy.", int],
        ["dns-tcp-idle-timeout", None, 30.0,
         "Seconds a DNS-over-TCP connection may go without a whole query before it is "
         "closed (trickling bytes do not extend it); a client that does not read its "
         "answers for as long is cut off.", float],
        ["dns-rotations", None, 16,
         "Most orders of one DNS answer's records (SRV and A): each query gets one, "
         "picked by its ID, so that clients do not all try the same instance first; "
         "1 turns rotation off.", int],
        ["max-stale", None, 300.0,
         "Seconds the last view keeps answering while Consul is unreachable; "
         "after that, SERVFAIL and HTTP 503.", float],
        ["idle-timeout", None, 600.0,
         "Seconds a job's health watch is kept without lookups.", float],
        ["zones-interval", None, 30.0,
         "Seconds between refreshes of the zone list (Consul's datacenters): a new "
         "zone is answered after at most one, a zone that left Consul dropped after two.",
         float],
        ["catalog-interval", None, 1.0,
         "Least seconds between two catalog queries of a zone, however often its "
         "registrations change: a new job or named port shows after at most that; every "
         "host's Glimpse fetches the zone's whole service list each time (docs/scale.md).",
         float],
        ["state-dir", None, "/var/lib/glimpse",
         "Directory where providers' acknowledged states are kept."],
        ["failover-min", None, 1,
         "An 'any' name (<service>.<job>.<env>.<product>.any) answers the local zone "
         "while it serves at least this many instances, else the nearest zone that does.",
         int],
        ["failover-order", None, None,
         "Zones an 'any' name fails over to, in this order, comma-separated (e.g. "
         "fra,lon; no others); default: every zone, nearest first by Consul's "
         "round-trip times."],
        ["panic-threshold", None, None,
         "Panic mode: when less than this fraction of a job's instances is healthy "
         "(e.g. 0.5), DNS answers every one of them, the healthy ones at SRV priority 1 "
         "and the rest at 2; default off.", float],
        ["panic-hold", None, 30.0,
         "Seconds a job's healthy share must stay at or above --panic-threshold before "
         "it leaves panic.", float],
        ["lookup-cap", None, 1000,
         "Most instances an HTTP lookup with '*' labels returns (then truncated: true).", int],
        ["provider-token-file", None, None,
         "File holding the token the provider API requires (Authorization: Bearer); "
         "without it the provider API serves loopback clients only."],
        ["http-header-timeout", None, _LIMITS.header_timeout,
         "Seconds an HTTP client has to send a request's line and headers, from "
         "connecting (or from the first byte of its next request); trickling bytes do "
         "not extend it.  Then 408 and the connection is closed.", float],
        ["http-body-timeout", None, _LIMITS.body_timeout,
         "Seconds a request body has to arrive once its headers are in.", float],
        ["http-idle-timeout", None, _LIMITS.idle_timeout,
         "Seconds a kept-alive HTTP connection may sit idle before it is closed.", float],
        ["http-max-body", None, _LIMITS.max_body,
         "Bytes a request body (a provider state) may have; a larger Content-Length gets "
         "413 before any of the body is read.", int],
        ["http-max-conns", None, _LIMITS.max_conns,
         "HTTP connections open at once, from every client (at most half the open-file "
         "limit); past it a new one gets 503 with Retry-After.", int],
        ["http-max-conns-per-client", None, _LIMITS.max_conns_per_client,
         "HTTP connections open at once from one client address (IPv6: one /64; every "
         "local client shares 127.0.0.1); past it 429 with Retry-After.", int],
        ["http-max-streams-per-client", None, _LIMITS.max_streams_per_client,
         "Long-polls and event streams one client address may have open at once; past "
         "it 429 with Retry-After.", int],
    ]

    def __init__(self) -> None:
        super().__init__()
        self["http"] = []

    def parseOptions(self, options: Sequence[str] | None = None) -> None:
        """
        Parse the command line, after the arguments of its ``--config`` file.
        """
        if options is None:
            import sys
            options = sys.argv[1:]
        names = [name.rstrip("=") for name in self.longOpt]
        try:
            options = with_config(options, [n for n in names if n + "=" in self.longOpt],
                                  [n for n in names if n in self.longOpt], repeatable=["http"],
                                  types=_coercions(self.optParameters))
        except ConfigError as e:
            raise usage.UsageError(str(e)) from e
        super().parseOptions(options)

    def opt_http(self, endpoint: str) -> None:
        """
        Endpoint the HTTP API listens on; repeatable (default: tcp:8411:interface=127.0.0.1).
        """
        from twisted.internet import reactor
        try:
            serverFromString(reactor, endpoint)
        except (ValueError, KeyError, TypeError) as e:
            raise usage.UsageError(
                f"--http={endpoint}: not an endpoint ({e}); write e.g. "
                "--http=tcp:8411:interface=127.0.0.1") from e
        self["http"].append(endpoint)

    def postOptions(self) -> None:
        """
        Check the options together and normalise them.
        """
        url = urlsplit(self["consul"])
        if url.scheme not in ("http", "https") or not url.hostname:
            raise usage.UsageError(
                f"--consul={self['consul']}: write a URL such as http://127.0.0.1:8500")
        try:
            self["dns-zone"] = normalize_zone(self["dns-zone"])
        except InvalidName as e:
            raise usage.UsageError(f"--dns-zone: {e}") from e
        for name in ("consul-token-file", "consul-ca", "consul-cert", "consul-key"):
            if self[name] is not None:
                _readable(name, self[name])
        if self["provider-token-file"] is not None:
            _readable("provider-token-file", self["provider-token-file"])
            # An empty token must not quietly turn the check off.
            if read_secret(self["provider-token-file"]) is None:
                raise usage.UsageError(
                    f"--provider-token-file={self['provider-token-file']} is empty; "
                    "put the token in it, e.g. the output of: openssl rand -hex 32")
        for name in ("consul-ca", "consul-cert", "consul-key"):
            if self[name] and url.scheme != "https":
                raise usage.UsageError(
                    f"--{name} needs an https:// --consul URL (TLS is never dropped "
                    "silently): give the agent's HTTPS address, e.g. https://127.0.0.1:8501")
        try:
            ConsulTLS(self["consul-ca"], self["consul-cert"], self["consul-key"]).policy()
        except TLSConfigError as e:
            raise usage.UsageError(str(e)) from e
        for name in ("dns-interface", "dns-advertise"):
            if self[name] is not None:
                try:
                    ipaddress.ip_address(self[name])
                except ValueError:
                    raise usage.UsageError(
                        f"--{name}={self[name]}: give an IP address, e.g. 127.0.0.1") from None
        unspecified = ipaddress.ip_address(self["dns-interface"]).is_unspecified
        if self["dns-advertise"] is None and unspecified:
            raise usage.UsageError(
                "--dns-interface listens on every address; say which one to advertise "
                "for ns.<dns-zone> with --dns-advertise=ADDR")
        if not 0 <= self["dns-port"] < 65536:
            raise usage.UsageError("--dns-port takes a port number, 0-65535")
        for name in ("dns-ttl", "negative-ttl"):
            if self[name] < 0:
                raise usage.UsageError(f"--{name} must be 0 or more seconds")
        for name in ("dns-tcp-max-conns", "dns-rotations"):
            _positive(name, int)(self[name])
        _positive("dns-tcp-idle-timeout")(self["dns-tcp-idle-timeout"])
        for name in ("max-stale", "idle-timeout", "zones-interval", "catalog-interval"):
            _positive(name)(self[name])
        _positive("lookup-cap", int)(self["lookup-cap"])
        self._steering_options()
        for name in ("consul-poll-period", "consul-poll-rate"):
            _positive(name)(self[name])
        if self["consul-max-conns"] < 8:
            raise usage.UsageError(
                "--consul-max-conns must be at least 8 (writes, catalog watches and each "
                "zone's cached reads need their own); e.g. --consul-max-conns=64")
        for name in LIMIT_OPTIONS:
            _positive(name)(self[name])
        if not self["http"]:
            self["http"] = ["tcp:8411:interface=127.0.0.1"]
        try:
            os.makedirs(self["state-dir"], mode=0o700, exist_ok=True)
        except OSError as e:
            raise usage.UsageError(
                f"--state-dir={self['state-dir']}: cannot create it ({e.strerror}); "
                "give a writable directory") from e
        if not os.access(self["state-dir"], os.W_OK):
            raise usage.UsageError(f"--state-dir={self['state-dir']} is not writable; "
                                   "give a writable directory")


    def _steering_options(self) -> None:
        _positive("failover-min", int)(self["failover-min"])
        if self["failover-order"] is not None:
            self["failover-order"] = failover_order(self["failover-order"])
        threshold = self["panic-threshold"]
        if threshold is not None and not 0 < threshold <= 1:
            raise usage.UsageError("--panic-threshold is a fraction of a job's instances, "
                                   "more than 0 and at most 1, e.g. --panic-threshold=0.5")
        if self["panic-hold"] < 0:
            raise usage.UsageError("--panic-hold must be 0 or more seconds, e.g. 30")


def failover_order(text: str) -> list[str]:
    """
    The zones of ``--failover-order``: comma-separated zone names.

    :raises usage.UsageError: for an empty list, a name that is not a
        zone, ``any``, or a zone named twice.
    """
    zones = [z.strip().lower() for z in str(text).split(",") if z.strip()]
    if not zones:
        raise usage.UsageError("--failover-order takes zones, comma-separated, e.g. "
                               "--failover-order=fra,lon")
    for zone in zones:
        problem = label_problem(zone, "zone")
        if problem:
            raise usage.UsageError(f"--failover-order: {problem}")
        if zone == ANY_ZONE:
            raise usage.UsageError(f"--failover-order: {ANY_ZONE!r} is not a zone; name "
                                   "the zones to fail over to, e.g. fra,lon")
    if len(set(zones)) != len(zones):
        raise usage.UsageError(f"--failover-order names a zone twice: {','.join(zones)}")
    return zones


def makeService(options: Options) -> MultiService:
    """
    The ``twistd glimpse`` service, on the global reactor.
    """
    from twisted.internet import reactor

    from glimpse.agent import build
    from glimpse.http.limits import open_files_limit
    return build(reactor, options, open_files_limit()).service
