"""
A small client for the local Consul agent's HTTP API, on treq: the one
place that knows Consul's paths, parameters, headers and answer shapes.
Callers ask for what they need (:meth:`ConsulClient.agent_self`,
:meth:`ConsulClient.node_services`, ...) and never build a path.
:class:`ConsulTLS` holds the TLS files for an ``https://`` agent (its CA,
Glimpse's client certificate) and makes the client's HTTPS policy; a TLS
failure is a :class:`ConsulTLSError` that names the option to fix.

It is given its treq ``HTTPClient`` and a clock, so tests drive it with
``StubTreq`` and ``Clock``.  Every failure becomes a :class:`ConsulError`: callers
never see treq's or Twisted's transport exceptions.  :func:`reload_agent`
is the one blocking request, for the file path, which runs outside any
reactor.
"""

from glimpse.consul._answers import (
    AgentSelf,
    ConsulBusy,
    ConsulDenied,
    ConsulError,
    ConsulNotFound,
    ConsulTLSError,
    ConsulUnavailable,
    Response,
)
from glimpse.consul._client import ConsulClient
from glimpse.consul._connect import ConsulConnections, connect_consul
from glimpse.consul._paths import CHECK_STATUSES, TOKEN_HEADER
from glimpse.consul._reload import reload_agent
from glimpse.consul._tls import ConsulTLS, TLSConfigError

__all__ = [
    "CHECK_STATUSES",
    "TOKEN_HEADER",
    "AgentSelf",
    "ConsulBusy",
    "ConsulClient",
    "ConsulConnections",
    "ConsulDenied",
    "ConsulError",
    "ConsulNotFound",
    "ConsulTLS",
    "ConsulTLSError",
    "ConsulUnavailable",
    "Response",
    "TLSConfigError",
    "connect_consul",
    "reload_agent",
]
