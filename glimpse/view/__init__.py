"""
The read side: the topology cache (:mod:`.topology`, one
:class:`ZoneView` per zone) fed by Consul blocking queries (:mod:`.watch`),
the read model built from Consul's answers (:mod:`.model`), when checks
last changed (:mod:`.history`), and the rules that steer answers
(:mod:`.steering`: failover, panic, what DNS serves).  Other packages
import these names from here.
"""

from glimpse.view.history import CheckHistory
from glimpse.view.model import Check, Instance, instances_from_health
from glimpse.view.steering import Steering
from glimpse.view.topology import Topology, Unavailable
from glimpse.view.zone import Freshness, JobView, ZoneView

__all__ = [
    "Check",
    "CheckHistory",
    "Freshness",
    "Instance",
    "JobView",
    "Steering",
    "Topology",
    "Unavailable",
    "ZoneView",
    "instances_from_health",
]
