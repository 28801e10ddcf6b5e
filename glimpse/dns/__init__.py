"""
Glimpse's DNS: authoritative answers for the DNS zone from the topology
view.  Follow it downward: :mod:`glimpse.dns.server` (the server factory
that answers requests), :mod:`glimpse.dns.resolver` (what answers a name:
a twisted.names ``ResolverBase``), :mod:`glimpse.dns.protocols` (UDP),
:mod:`glimpse.dns.stream` (TCP) and :mod:`glimpse.dns.connections` (its
listener: cap, idle timeout),
:mod:`glimpse.dns.request` (one request's state), :mod:`glimpse.dns.answers`
(what a name means, its records), :mod:`glimpse.dns.rotation` (the order of
an answer's records), :mod:`glimpse.dns.wire` (rcodes, EDNS, encoding,
counters), and the fast path: :mod:`glimpse.dns.plain` (the queries it
answers), :mod:`glimpse.dns.keeper` and :mod:`glimpse.dns.kept` (its
answers, shared by UDP and TCP), :mod:`glimpse.dns.fastpath` (UDP), its UDP
port (:mod:`glimpse.dns.udpport`) and batched socket I/O
(:mod:`glimpse.dns.mmsg`).

These are the names other packages use; the modules' other names are for
this package and its tests.
"""

from glimpse.dns.answers import ZoneIdentity
from glimpse.dns.connections import StreamFactory, fitted_max_conns
from glimpse.dns.fastpath import FastDatagramProtocol
from glimpse.dns.protocols import GlimpseDatagramProtocol
from glimpse.dns.resolver import GlimpseResolver
from glimpse.dns.rotation import ROTATIONS
from glimpse.dns.server import GlimpseServerFactory
from glimpse.dns.stream import GlimpseStreamProtocol
from glimpse.dns.udpport import FastUDPServer
from glimpse.dns.wire import DNSStats, opt_record, read_opt

__all__ = [
    "ROTATIONS",
    "DNSStats",
    "FastDatagramProtocol",
    "FastUDPServer",
    "GlimpseDatagramProtocol",
    "GlimpseResolver",
    "GlimpseServerFactory",
    "GlimpseStreamProtocol",
    "StreamFactory",
    "ZoneIdentity",
    "fitted_max_conns",
    "opt_record",
    "read_opt",
]
