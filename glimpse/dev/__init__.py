"""
Development tools: throw-away Consul (one dev agent, or zones of real
servers and default client agents), a Glimpse run as a ``twistd``
subprocess, registrations made straight on an agent, and ``make run``'s
demo.  Tests and benchmarks use them; Glimpse itself never does.
"""

from glimpse.dev.agent import ConsulStartError, free_ports
from glimpse.dev.cluster import Federation, start_zone, start_zones
from glimpse.dev.consul import ConsulNotFound, DevConsul, find_consul, start_dev_consul
from glimpse.dev.registrations import deregister, register, service_id, set_check
from glimpse.dev.twistd import DevGlimpse, GlimpseStartError, http_json, start_glimpse
from glimpse.dev.zone import ClusterAgent, Zone

__all__ = [
    "ClusterAgent",
    "ConsulNotFound",
    "ConsulStartError",
    "DevConsul",
    "DevGlimpse",
    "Federation",
    "GlimpseStartError",
    "Zone",
    "deregister",
    "find_consul",
    "free_ports",
    "http_json",
    "register",
    "service_id",
    "set_check",
    "start_dev_consul",
    "start_glimpse",
    "start_zone",
    "start_zones",
]
