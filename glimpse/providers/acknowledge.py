"""
A provider's state is acknowledged once the catalog, not only the local
agent, shows it: :func:`catalog_shows` waits for that, through a leader
election if one is under way.

The agent syncs its registrations to the servers asynchronously.  During
an election that sync can fail (the agent asked the server just killed, or
no server leads yet), and the agent tries again only at its next local
change, or at its next full sync a minute or more later.  So while the
catalog does not show the state, one of its registrations is written again
every :data:`RESYNC` seconds, unchanged (the agent keeps its checks'
status): that is a local change, and the agent syncs everything it has not
synced yet.  A catalog read that fails on the way (a 500 from a killed
server, no leader yet) is asked again after :data:`READ_RETRY` seconds.
Both end at the deadline.
"""

from collections.abc import Generator, Iterable, Mapping, Sequence
from typing import Any

from twisted.internet.defer import Deferred, inlineCallbacks
from twisted.internet.interfaces import IReactorTime
from twisted.internet.task import deferLater
from twisted.logger import Logger

from glimpse.consul import ConsulBusy, ConsulClient, ConsulError, ConsulNotFound, ConsulUnavailable
from glimpse.mapping import is_file_sourced, provider_filter, registration_hash
from glimpse.providers.results import NotAcknowledged

__all__ = ["READ_RETRY", "RESYNC", "catalog_shows", "held_hashes", "transient"]

#: Seconds without the acknowledgement before the agent's sync is poked.
RESYNC = 2.0
#: Seconds before a catalog read that failed on the way is asked again.
READ_RETRY = 0.5

log = Logger()


def held_hashes(services: Iterable[Mapping[str, Any]]) -> dict[str, str | None]:
    """
    The registration hashes of the HTTP path's registrations among
    ``services``: the file path's carry the same provider meta, and are the
    agent's config files' business.
    """
    return {s["ID"]: registration_hash(s) for s in services if not is_file_sourced(s)}


def transient(error: ConsulError) -> bool:
    """
    Whether asking again may well work: no answer, a busy agent, or an
    error on the servers' side (a server just killed, no leader yet).
    """
    return isinstance(error, (ConsulUnavailable, ConsulBusy)) or (error.status or 500) >= 500


def _poke(consul: ConsulClient, definition: Mapping[str, Any]) -> Deferred[Any]:
    d = consul.register(definition)
    return d.addErrback(lambda f: log.info("Could not poke the agent's sync: {error}",
                                           error=f.getErrorMessage()))


@inlineCallbacks
def catalog_shows(consul: ConsulClient, clock: IReactorTime, node: str | None, provider: str,
                  wanted: Mapping[str, str | None], timeout: float,
                  poke: Sequence[Mapping[str, Any]] = ()
                  ) -> Generator[Deferred[Any], Any, str | None]:
    """
    Wait until the catalog's entry for the agent's node shows exactly
    ``wanted`` of ``provider``'s registrations.

    :param consul: the Consul client.
    :param clock: ``IReactorTime``.
    :param node: the agent's node name, or ``None`` to ask the agent.
    :param provider: the provider.
    :param wanted: ``{registration ID: hash}`` the catalog must show.
    :param timeout: seconds until :class:`NotAcknowledged`.
    :param poke: registration definitions, one of which is written again,
        unchanged, every :data:`RESYNC` seconds without the acknowledgement.
    :return: a Deferred firing with the node's name (``None`` if the
        catalog does not know it) once the catalog shows ``wanted``.
    :raises NotAcknowledged: past the deadline (the Deferred fails with it).
    :raises ConsulError: for an error asking again would not mend (403).
    """
    start = clock.seconds()
    deadline = start + timeout
    poked = start
    index: int | None = None
    services: list[Any] = []
    while True:
        try:
            if node is None:
                node = (yield consul.agent_self()).node
            # Short waits, so that the sync can be poked in between.
            wait = max(1, int(min(RESYNC, deadline - clock.seconds())) + 1)
            response = yield consul.node_services(node, provider_filter(provider), index=index,
                                                  wait=index and wait)
            if not response.unchanged:
                # Unchanged: the wait ran out and the catalog still holds what
                # the last answer said (its body is not read).
                services = response.body
            index = response.index or 1
        except ConsulNotFound:
            # The node is not in the catalog yet (the agent has not synced),
            # or the agent came back under another name.
            services, index, node = [], None, None
            yield deferLater(clock, 0.1, lambda: None)
        except ConsulError as e:
            if not transient(e) or clock.seconds() >= deadline:
                raise
            index = None
            yield deferLater(clock, READ_RETRY, lambda: None)
        if held_hashes(services) == wanted:
            return node
        now = clock.seconds()
        if now >= deadline:
            raise NotAcknowledged(
                f"the local Consul agent took provider {provider}'s state but the catalog did "
                f"not show it within {timeout:g}s (are Consul's servers reachable, with a "
                "leader?)")
        if poke and now - poked >= RESYNC:
            poked = now
            yield _poke(consul, poke[0])
