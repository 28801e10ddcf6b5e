"""
The write side: providers' states validated (:mod:`.state`), applied to the
local Consul agent and acknowledged by its catalog (:mod:`.applier`), kept
on disk (:mod:`.store`), or written to the agent's config directory
(:mod:`.files`).  Other packages import these names from here.
"""

from glimpse.providers.applier import Applier, ReconcileService
from glimpse.providers.files import FileProviderError, FileResult, provide_to_config_dir
from glimpse.providers.results import ApplyResult, NotAcknowledged, NotApplied
from glimpse.providers.state import InvalidState, NoSuchCheck, registrations, validate_state
from glimpse.providers.store import ProviderStore

__all__ = [
    "Applier",
    "ApplyResult",
    "FileProviderError",
    "FileResult",
    "InvalidState",
    "NoSuchCheck",
    "NotAcknowledged",
    "NotApplied",
    "ProviderStore",
    "ReconcileService",
    "provide_to_config_dir",
    "registrations",
    "validate_state",
]
