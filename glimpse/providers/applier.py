"""
Applying a provider's full state to the local Consul agent.

Applying touches only what changed: new and changed registrations are
registered, this provider's registrations that are gone are deregistered,
and unchanged ones are left alone so that their checks do not flap.  One
provider's applies run one after another in arrival order; different
providers do not wait for each other.

A state is *acknowledged* once the catalog (not just the local agent) shows
it; only then is it saved as the provider's state.  Before Consul is
touched a pending marker is written, so a crash mid-apply is noticed on
start and rolled back: Consul ends with the last acknowledged state, never a
mix of the old and the new.  The same reconciliation runs every few seconds,
which also puts things right after a Consul agent restart
(:class:`ReconcileService`).
"""

from collections.abc import Callable, Generator, Mapping
from typing import Any

from twisted.application.internet import TimerService
from twisted.internet.defer import (
    Deferred,
    DeferredLock,
    DeferredSemaphore,
    FirstError,
    gatherResults,
    inlineCallbacks,
)
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger
from twisted.python.failure import Failure

from glimpse.consul import ConsulClient
from glimpse.mapping import (
    ANY_PROVIDER,
    META_HASH,
    META_PROVIDER,
    is_file_sourced,
    provider_filter,
    registration_hash,
)
from glimpse.providers.acknowledge import catalog_shows, held_hashes
from glimpse.providers.results import ApplyResult, NotAcknowledged, NotApplied
from glimpse.providers.state import (
    Document,
    NoSuchCheck,
    diff,
    registrations,
    ttl_check_ids,
    validate_state,
)
from glimpse.providers.store import ProviderStore

#: What an inlineCallbacks generator yields and is sent.
_Steps = Generator[Deferred[Any], Any, Any]


def _empty() -> Document:
    # A new one each time: the store writes it, and nothing is shared.
    return {"instances": []}


def _all(deferreds: list[Deferred[Any]]) -> Deferred[list[Any]]:
    """
    Wait for all of ``deferreds``; on a failure, fail with the first one's
    error itself rather than gatherResults' FirstError around it.
    """
    def first(failure: Failure) -> Failure:
        error = failure.value
        assert isinstance(error, FirstError)
        return error.subFailure

    return gatherResults(deferreds, consumeErrors=True).addErrback(first)


def _wanted(desired: Mapping[str, Document]) -> dict[str, str | None]:
    return {sid: d["Meta"][META_HASH] for sid, d in desired.items()}


class Applier:
    """
    Put providers' states into the local Consul agent.

    :param consul: a :class:`glimpse.consul.ConsulClient`.
    :param store: a :class:`glimpse.providers.store.ProviderStore`.
    :param clock: an ``IReactorTime`` for the acknowledgement deadline.
    :param ack_timeout: seconds to wait for the catalog to show a new state.
    :param max_writes: most agent writes one provider has in flight at
        once: each is an HTTP connection, and Consul answers 429 past its
        per-client connection limit (200 by default).  Per provider, so
        one provider's large apply never holds up another's.
    :ivar applies: applies by outcome, for metrics: acknowledged, unchanged,
        dry_run, invalid, failed, timeout.
    """

    log = Logger()

    def __init__(self, consul: ConsulClient, store: ProviderStore, clock: IReactorTime,
                 ack_timeout: float = 10.0, max_writes: int = 16) -> None:
        self._max_writes = max_writes
        self._writes: dict[str, DeferredSemaphore] = {}
        # The registration hashes of each acknowledged state: reconciling
        # compares against them every few seconds, and computing them for a
        # large provider costs the reactor tens of milliseconds.
        self._acknowledged: dict[str, dict[str, str | None]] = {}
        self._consul = consul
        self._store = store
        self._clock = clock
        self._ack_timeout = ack_timeout
        self._locks: dict[str, DeferredLock] = {}
        self._node: str | None = None
        self.applies: dict[str, int] = {}

    def _count(self, outcome: str) -> None:
        self.applies[outcome] = self.applies.get(outcome, 0) + 1

    def _lock(self, provider: str) -> DeferredLock:
        return self._locks.setdefault(provider, DeferredLock())

    def state(self, provider: str) -> Document | None:
        """
        The provider's last acknowledged state.

        :param provider: the provider's name.
        :return: the state, or ``None`` when it has none.
        """
        return self._store.load(provider)

    def apply(self, provider: str, body: object,
              dry_run: bool = False) -> Deferred[ApplyResult]:
        """
        Validate ``body`` and make it the provider's state.

        :param provider: the provider's name.
        :param body: the decoded JSON state.
        :param dry_run: only say what would change.

        :return: a Deferred firing with an :class:`ApplyResult` once the catalog
            shows the new state, or failing with :class:`NotApplied` (the previous
            state was put back) or a :class:`glimpse.consul.ConsulError`.
        :raises glimpse.providers.state.InvalidState: at once, changing nothing.
        """
        try:
            state = validate_state(body)
        except Exception:
            self._count("invalid")
            raise
        d = self._lock(provider).run(self._apply, provider, state, dry_run)

        def failed(failure: Failure) -> Failure:
            self._count("timeout" if failure.check(NotAcknowledged) else "failed")
            return failure

        return d.addErrback(failed)

    def remove(self, provider: str) -> Deferred[ApplyResult]:
        """
        Deregister everything of the provider's and forget its state.

        :param provider: the provider's name.
        :return: a Deferred as :meth:`apply`'s.
        """
        return self._lock(provider).run(self._apply, provider, _empty(), False, forget=True)

    def _current(self, provider: str) -> Deferred[dict[str, Any]]:
        d = self._consul.agent_services(provider_filter(provider))
        return d.addCallback(lambda services: {
            sid: s for sid, s in services.items() if not is_file_sourced(s)})

    @inlineCallbacks
    def _apply(self, provider: str, state: Document, dry_run: bool,
               forget: bool = False) -> Generator[Deferred[Any], Any, ApplyResult]:
        desired = registrations(provider, state)
        current = yield self._current(provider)
        add, change, remove, unchanged = diff(desired, current)
        result = ApplyResult(provider, add, change, remove, unchanged)
        if dry_run:
            self._count("dry_run")
            return result
        if add or change or remove:
            self._store.mark_pending(provider, state)
        try:
            yield self._push(provider, desired, add + change, remove)
            # No separate check of the local agent: every write answered
            # 200, and the catalog only shows what the agent holds.
            # One registration this apply wrote, or else one it kept, may be
            # written again to make the agent sync (an election can fail it).
            yield self._acknowledged_by_catalog(provider, desired,
                                                (add + change + unchanged)[:1])
        except Exception:
            yield self._roll_back(provider)
            raise
        if forget:
            self._store.delete(provider)
            self._acknowledged.pop(provider, None)
        else:
            self._store.save(provider, state)
            self._acknowledged[provider] = _wanted(desired)
        self._store.clear_pending(provider)
        self._count("acknowledged" if add or change or remove else "unchanged")
        if add or change or remove:
            self.log.info(
                "Provider {provider} applied: {added} added, {changed} changed, "
                "{removed} removed", provider=provider, added=len(add),
                changed=len(change), removed=len(remove))
        return result

    def _bounded(self, provider: str) -> Callable[..., Deferred[Any]]:
        return self._writes.setdefault(provider, DeferredSemaphore(self._max_writes)).run

    def _push(self, provider: str, desired: Mapping[str, Document], register: list[str],
              deregister: list[str]) -> Deferred[Any]:
        run = self._bounded(provider)
        return _all([run(self._consul.register, desired[sid]) for sid in register]
                    + [run(self._consul.deregister, sid) for sid in deregister])

    @inlineCallbacks
    def _verify(self, provider: str, desired: Mapping[str, Document]) -> _Steps:
        current = yield self._current(provider)
        held = held_hashes(current.values())
        wanted = _wanted(desired)
        if held != wanted:
            raise NotApplied(
                f"the local Consul agent does not hold provider {provider}'s new state "
                f"after applying it ({len(set(held.items()) ^ set(wanted.items()))} "
                "registrations differ)")

    @inlineCallbacks
    def _acknowledged_by_catalog(self, provider: str, desired: Mapping[str, Document],
                                 poke: list[str]) -> _Steps:
        """
        Wait until the catalog's entry for this node shows exactly
        ``desired`` (:func:`~glimpse.providers.acknowledge.catalog_shows`).
        The node's name does not change while the agent runs: asked once.
        """
        node = yield catalog_shows(self._consul, self._clock, self._node, provider,
                                   _wanted(desired), self._ack_timeout,
                                   [desired[sid] for sid in poke])
        self._node = node

    @inlineCallbacks
    def _roll_back(self, provider: str) -> _Steps:
        # Best effort, inside the apply's lock: on failure the pending marker
        # stays, and the periodic reconciliation finishes the job later.
        try:
            yield self._reconcile(provider)
        except Exception as e:
            self.log.warn("Provider {provider}: could not put the acknowledged state "
                          "back yet ({error}); will retry", provider=provider, error=str(e))

    @inlineCallbacks
    def _reconcile(self, provider: str) -> Generator[Deferred[Any], Any, bool]:
        state = self._store.load(provider) or _empty()
        desired = registrations(provider, state)
        current = yield self._current(provider)
        add, change, remove, _ = diff(desired, current)
        if add or change or remove:
            yield self._push(provider, desired, add + change, remove)
            yield self._verify(provider, desired)
            self.log.info(
                "Provider {provider} reconciled to its acknowledged state: {added} added, "
                "{changed} changed, {removed} removed", provider=provider,
                added=len(add), changed=len(change), removed=len(remove))
        self._store.clear_pending(provider)
        return bool(add or change or remove)

    def reconcile(self, provider: str) -> Deferred[bool]:
        """
        Make the local agent hold exactly the provider's acknowledged state
        (nothing if it has none), rolling back an apply that was cut short.

        :param provider: the provider's name.
        :return: a Deferred firing with whether anything had to change.
        """
        return self._lock(provider).run(self._reconcile, provider)

    def _acknowledged_hashes(self, provider: str) -> dict[str, str | None]:
        if provider not in self._acknowledged:
            state = self._store.load(provider) or _empty()
            self._acknowledged[provider] = _wanted(registrations(provider, state))
        return self._acknowledged[provider]

    @inlineCallbacks
    def reconcile_all(self) -> Generator[Deferred[Any], Any, list[str]]:
        """
        Reconcile every provider whose registrations differ from its
        acknowledged state, or that has an unfinished apply.  Costs one
        request when everything is in order.

        :return: a Deferred firing with the sorted names reconciled.
        """
        pending = set(self._store.pending())
        names = set(self._store.providers()) | pending
        if not names:
            # Nothing acknowledged, nothing half-done: no request at all.
            return []
        services = yield self._consul.agent_services(ANY_PROVIDER)
        held: dict[str, dict[str, str | None]] = {}
        for service in services.values():
            if not is_file_sourced(service):
                held.setdefault(service["Meta"][META_PROVIDER], {})[service["ID"]] = (
                    registration_hash(service))
        todo = [p for p in sorted(names)
                if p in pending
                or held.get(p, {}) != self._acknowledged_hashes(p)]
        yield _all([self.reconcile(p) for p in todo])
        return todo

    @inlineCallbacks
    def pass_check(self, provider: str, instance: str, check: str, status: str,
                   note: str = "") -> Generator[Deferred[Any], Any, list[str]]:
        """
        Set a TTL check of an instance, once: its other ports mirror it.

        :param provider: the provider's name.
        :param instance: ``<instance>.<job>.<env>.<product>`` or a unique
            bare instance name.
        :param check: the check's name, or ``check<N>``.
        :param status: ``pass``, ``warn`` or ``fail``.
        :param note: the check's output.
        :return: a Deferred firing with the check IDs set (one).
        :raises glimpse.providers.state.NoSuchCheck: when no such TTL check
            exists (the Deferred fails with it).
        """
        state = self._store.load(provider)
        if state is None:
            raise NoSuchCheck(404, f"provider {provider!r} has no state")
        ids = ttl_check_ids(provider, state, instance, check)
        yield _all([self._bounded(provider)(self._consul.set_check, cid, status, note)
                    for cid in ids])
        return ids


class ReconcileService(TimerService):
    """
    Reconcile providers' registrations with their acknowledged states at
    start and every ``interval`` seconds, so that a crash of Glimpse mid-apply
    or a restart of the Consul agent ends with exactly the acknowledged
    states.  A failing round (Consul away) is logged and retried.

    :param applier: the :class:`Applier`.
    :param clock: an ``IReactorTime``.
    :param interval: seconds between rounds.
    """

    log = Logger()

    def __init__(self, applier: Applier, clock: IReactorTime, interval: float = 5.0) -> None:
        super().__init__(interval, self._round)
        self.clock = clock
        self._applier = applier
        self._failing = False

    def _round(self) -> Deferred[None]:
        d = self._applier.reconcile_all()

        def done(names: list[str]) -> None:
            if self._failing:
                self.log.info("Providers' reconciliation works again")
            self._failing = False

        def failed(failure: Failure) -> None:
            if not self._failing:
                self.log.warn("Reconciling providers with Consul failed: {error}; retrying "
                              "every round", error=failure.getErrorMessage())
            self._failing = True

        # Swallowed on purpose: TimerService stops for good on a failure.
        return d.addCallbacks(done, failed)
