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
which also puts things right after a Consul agent restart.
"""

import attrs
from twisted.application.internet import TimerService
from twisted.internet.defer import DeferredLock, DeferredSemaphore, gatherResults, inlineCallbacks
from twisted.internet.task import deferLater
from twisted.logger import Logger

from glimpse.consul import ConsulNotFound
from glimpse.mapping import (
    ANY_PROVIDER,
    META_HASH,
    META_PROVIDER,
    is_file_sourced,
    provider_filter,
    registration_hash,
)
from glimpse.providers.state import (
    NoSuchCheck,
    diff,
    registrations,
    ttl_check_ids,
    validate_state,
)

EMPTY = {"instances": []}


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
    Consul did not take the state; ``message`` says where it stopped.
    """

    message: str

    def __str__(self):
        return self.message


class NotAcknowledged(NotApplied):
    """
    The local agent took the state but the catalog did not show it in time.
    """


def _hashes(services):
    # The file path's registrations carry the same provider meta; they are
    # the agent's config files' business, never the HTTP path's.
    return {s["ID"]: registration_hash(s) for s in services if not is_file_sourced(s)}


def _wanted(desired):
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
    """

    log = Logger()

    def __init__(self, consul, store, clock, ack_timeout=10.0, max_writes=16):
        self._max_writes = max_writes
        self._writes = {}
        # The registration hashes of each acknowledged state: reconciling
        # compares against them every few seconds, and computing them for a
        # large provider costs the reactor tens of milliseconds.
        self._acknowledged = {}
        self._consul = consul
        self._store = store
        self._clock = clock
        self._ack_timeout = ack_timeout
        self._locks = {}
        self._node = None
        #: Applies by outcome, for metrics: acknowledged, unchanged, dry_run,
        #: invalid, failed, timeout.
        self.applies = {}

    def _count(self, outcome):
        self.applies[outcome] = self.applies.get(outcome, 0) + 1

    def _lock(self, provider):
        return self._locks.setdefault(provider, DeferredLock())

    def state(self, provider):
        """
        The provider's last acknowledged state, or ``None``.
        """
        return self._store.load(provider)

    def apply(self, provider, body, dry_run=False):
        """
        Validate ``body`` and make it the provider's state.

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

        def failed(failure):
            self._count("timeout" if failure.check(NotAcknowledged) else "failed")
            return failure

        return d.addErrback(failed)

    def remove(self, provider):
        """
        Deregister everything of the provider's and forget its state.
        """
        return self._lock(provider).run(self._apply, provider, EMPTY, False, forget=True)

    def _current(self, provider):
        d = self._consul.agent_services(provider_filter(provider))
        return d.addCallback(lambda services: {
            sid: s for sid, s in services.items() if not is_file_sourced(s)})

    @inlineCallbacks
    def _apply(self, provider, state, dry_run, forget=False):
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
            yield self._confirm_catalog(provider, desired)
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

    def _bounded(self, provider):
        return self._writes.setdefault(provider, DeferredSemaphore(self._max_writes)).run

    def _push(self, provider, desired, register, deregister):
        run = self._bounded(provider)
        d = gatherResults(
            [run(self._consul.register, desired[sid]) for sid in register]
            + [run(self._consul.deregister, sid) for sid in deregister],
            consumeErrors=True)
        return d.addErrback(lambda f: f.value.subFailure)

    @inlineCallbacks
    def _verify(self, provider, desired):
        current = yield self._current(provider)
        held = _hashes(current.values())
        wanted = _wanted(desired)
        if held != wanted:
            raise NotApplied(
                f"the local Consul agent does not hold provider {provider}'s new state "
                f"after applying it ({len(set(held.items()) ^ set(wanted.items()))} "
                "registrations differ)")

    @inlineCallbacks
    def _confirm_catalog(self, provider, desired):
        """
        Wait, up to the deadline, until the catalog's entry for this node
        shows exactly ``desired``: the agent syncs to the servers
        asynchronously, and a provider's 200 promises the servers have it.
        """
        wanted = _wanted(desired)
        deadline = self._clock.seconds() + self._ack_timeout
        if self._node is None:
            # The node's name does not change while the agent runs; asked once.
            self._node = (yield self._consul.agent_self()).node
        node = self._node
        index, services = None, []
        while True:
            try:
                response = yield self._consul.node_services(
                    node, provider_filter(provider), index=index,
                    wait=index and max(1, int(deadline - self._clock.seconds()) + 1))
                if not response.unchanged:
                    # Unchanged: the wait ran out and the catalog still holds
                    # what the last answer said (its body is not read).
                    services = response.body
                index = response.index or 1
            except ConsulNotFound:
                # The node is not in the catalog yet (the agent has not
                # synced), or the agent came back under another name.
                services, index, self._node = [], None, None
                yield deferLater(self._clock, 0.1, lambda: None)
            if _hashes(services) == wanted:
                return
            if self._clock.seconds() >= deadline:
                raise NotAcknowledged(
                    f"the local Consul agent took provider {provider}'s state but the "
                    f"catalog did not show it within {self._ack_timeout:g}s (are Consul's "
                    "servers reachable?)")

    @inlineCallbacks
    def _roll_back(self, provider):
        # Best effort, inside the apply's lock: on failure the pending marker
        # stays, and the periodic reconciliation finishes the job later.
        try:
            yield self._reconcile(provider)
        except Exception as e:
            self.log.warn("Provider {provider}: could not put the acknowledged state "
                          "back yet ({error}); will retry", provider=provider, error=str(e))

    @inlineCallbacks
    def _reconcile(self, provider):
        state = self._store.load(provider) or EMPTY
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

    def reconcile(self, provider):
        """
        Make the local agent hold exactly the provider's acknowledged state
        (nothing if it has none), rolling back an apply that was cut short.

        :return: a Deferred firing with whether anything had to change.
        """
        return self._lock(provider).run(self._reconcile, provider)

    def _acknowledged_hashes(self, provider):
        if provider not in self._acknowledged:
            state = self._store.load(provider) or EMPTY
            self._acknowledged[provider] = _wanted(registrations(provider, state))
        return self._acknowledged[provider]

    @inlineCallbacks
    def reconcile_all(self):
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
        held = {}
        for service in services.values():
            if not is_file_sourced(service):
                held.setdefault(service["Meta"][META_PROVIDER], {})[service["ID"]] = (
                    registration_hash(service))
        todo = [p for p in sorted(names)
                if p in pending
                or held.get(p, {}) != self._acknowledged_hashes(p)]
        yield gatherResults([self.reconcile(p) for p in todo], consumeErrors=True).addErrback(
            lambda f: f.value.subFailure)
        return todo

    @inlineCallbacks
    def pass_check(self, provider, instance, check, status, note=""):
        """
        Set a TTL check of an instance, on every named port's registration.

        :param instance: ``<instance>.<job>.<env>.<product>`` or a unique
            bare instance name.
        :param check: the check's name, or ``check<N>``.
        :param status: ``pass``, ``warn`` or ``fail``.
        :raises glimpse.providers.state.NoSuchCheck: when no such TTL check exists.
        """
        state = self._store.load(provider)
        if state is None:
            raise NoSuchCheck(404, f"provider {provider!r} has no state")
        ids = ttl_check_ids(provider, state, instance, check)
        yield gatherResults(
            [self._bounded(provider)(self._consul.set_check, cid, status, note)
             for cid in ids],
            consumeErrors=True).addErrback(lambda f: f.value.subFailure)
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

    def __init__(self, applier, clock, interval=5.0):
        super().__init__(interval, self._round)
        self.clock = clock
        self._applier = applier
        self._failing = False

    def _round(self):
        d = self._applier.reconcile_all()

        def done(names):
            if self._failing:
                self.log.info("Providers' reconciliation works again")
            self._failing = False

        def failed(failure):
            if not self._failing:
                self.log.warn("Reconciling providers with Consul failed: {error}; retrying "
                              "every round", error=failure.getErrorMessage())
            self._failing = True

        # Swallowed on purpose: TimerService stops for good on a failure.
        return d.addCallbacks(done, failed)
