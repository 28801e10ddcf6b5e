"""
Applying a provider's full state to the local Consul agent.

Applying touches only what changed: new and changed registrations are
registered, this provider's registrations that are gone are deregistered,
and unchanged ones are left alone so that their checks do not flap.  One
provider's applies run one after another in arrival order; different
providers do not wait for each other.
"""

import attrs
from twisted.internet.defer import DeferredLock, gatherResults, inlineCallbacks, returnValue
from twisted.logger import Logger

from glimpse.model import META_HASH, META_PROVIDER
from glimpse.state import diff, registrations, validate_state


@attrs.frozen
class ApplyResult:
    """
    What an apply did (or, for a dry run, would do): lists of service IDs.
    """

    provider: str
    added: list
    changed: list
    removed: list
    unchanged: list

    def to_json(self):
        """
        The result as the HTTP API reports it.
        """
        return attrs.asdict(self)


@attrs.define
class NotApplied(Exception):
    """
    Consul did not take the state; ``detail`` says where it stopped.
    """

    message: str

    def __str__(self):
        return self.message


def _provider_filter(provider):
    return f'Meta["{META_PROVIDER}"] == "{provider}"'


class Applier:
    """
    Put providers' states into the local Consul agent.

    :param consul: a L{glimpse.consul.ConsulClient}.
    :param store: a L{glimpse.store.ProviderStore}.
    """

    log = Logger()

    def __init__(self, consul, store):
        self._consul = consul
        self._store = store
        self._locks = {}

    def _lock(self, provider):
        return self._locks.setdefault(provider, DeferredLock())

    def state(self, provider):
        """
        The provider's last acknowledged state, or ``None``.
        """
        return self._store.load(provider)

    def apply(self, provider, body, dry_run=False):
        """
        Validate C{body} and make it the provider's state.

        :return: a Deferred firing with an L{ApplyResult} once the local
            agent holds the new state.
        :raises glimpse.state.InvalidState: at once, changing nothing.
        """
        state = validate_state(body)
        return self._lock(provider).run(self._apply, provider, state, dry_run)

    def remove(self, provider):
        """
        Deregister everything of the provider's and forget its state.
        """
        return self._lock(provider).run(self._apply, provider, {"instances": []}, False,
                                        forget=True)

    @inlineCallbacks
    def _apply(self, provider, state, dry_run, forget=False):
        desired = registrations(provider, state)
        current = yield self._consul.agent_services(_provider_filter(provider))
        add, change, remove, unchanged = diff(desired, current)
        result = ApplyResult(provider, add, change, remove, unchanged)
        if dry_run:
            returnValue(result)
        yield gatherResults(
            [self._consul.register(desired[sid]) for sid in add + change]
            + [self._consul.deregister(sid) for sid in remove],
            consumeErrors=True,
        ).addErrback(lambda f: f.value.subFailure)
        yield self._verify(provider, desired)
        if forget:
            self._store.delete(provider)
        else:
            self._store.save(provider, state)
        if add or change or remove:
            self.log.info(
                "Provider {provider} applied: {added} added, {changed} changed, "
                "{removed} removed", provider=provider, added=len(add),
                changed=len(change), removed=len(remove))
        returnValue(result)

    @inlineCallbacks
    def _verify(self, provider, desired):
        current = yield self._consul.agent_services(_provider_filter(provider))
        held = {sid: (s.get("Meta") or {}).get(META_HASH) for sid, s in current.items()}
        wanted = {sid: d["Meta"][META_HASH] for sid, d in desired.items()}
        if held != wanted:
            raise NotApplied(
                f"the local Consul agent does not hold provider {provider}'s new state "
                f"after applying it ({len(set(held.items()) ^ set(wanted.items()))} "
                "registrations differ)")
