"""
What applying a provider's state answers: an :class:`ApplyResult`, or why
Consul did not take it.
"""

from typing import Any

import attrs


@attrs.frozen
class ApplyResult:
    """
    What an apply did (or, for a dry run, would do): lists of service IDs.

    :ivar provider: the provider's name.
    :ivar added: registrations that were new.
    :ivar changed: registrations written again because their fingerprint changed.
    :ivar removed: registrations deregistered.
    :ivar unchanged: registrations left alone.
    """

    provider: str
    added: list[str]
    changed: list[str]
    removed: list[str]
    unchanged: list[str]

    def to_json(self) -> dict[str, Any]:
        """
        The result as the HTTP API reports it.

        :return: a JSON-able dict of the fields.
        """
        return attrs.asdict(self)


@attrs.define
class NotApplied(Exception):
    """
    Consul did not take the state.

    :ivar message: where it stopped.
    """

    message: str

    def __str__(self) -> str:
        return self.message


class NotAcknowledged(NotApplied):
    """
    The local agent took the state but the catalog did not show it in time.
    """
