"""
The ``twistd glimpse`` plugin.  Resolved lazily: nothing of Glimpse is
imported until the plugin is used.
"""

from twisted.application.service import ServiceMaker

glimpse = ServiceMaker(
    "Glimpse",
    "glimpse.tap",
    "Service discovery: DNS and HTTP answers about the topology kept in Consul.",
    "glimpse",
)
