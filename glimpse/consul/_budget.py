"""
The bound on connections to the Consul agent.

Consul counts HTTP connections per client address and answers 429 past
``limits.http_max_conns_per_client`` (200 by default); every request
Glimpse has under way holds a connection.  :class:`ConnectionBudget` hands
out at most ``total`` of them at once, and keeps ``reserved`` of them out of
reach of the job watches, so that provider writes, the catalog and zone
watches and the reconcile are never starved however many jobs are in use.
Pure: no I/O, no clock.
"""

from __future__ import annotations

from collections import deque
from enum import Enum

from twisted.internet.defer import Deferred, succeed


class Use(Enum):
    """
    What a connection is for.
    """

    #: Everything but job watches: writes, the catalog and zone watches,
    #: the reconcile, the pipelined readers.  May take any free slot.
    CONTROL = "control"
    #: A job's blocking health watch.  Never takes the reserved slots.
    JOBS = "jobs"


class ConnectionBudget:
    """
    At most ``total`` connections under way, ``reserved`` of them kept for
    :attr:`Use.CONTROL`.

    :param total: the most connections at once (``--consul-max-conns``).
    :param reserved: the slots job watches never take.
    :ivar in_use: connections under way, by use.
    """

    def __init__(self, total: int, reserved: int) -> None:
        if not 0 <= reserved < total:
            raise ValueError(f"reserved ({reserved}) must be at least 0 and below total ({total})")
        self.total = total
        self.reserved = reserved
        self.in_use = {Use.CONTROL: 0, Use.JOBS: 0}
        self._waiting: dict[Use, deque[Deferred[None]]] = {Use.CONTROL: deque(),
                                                            Use.JOBS: deque()}

    @property
    def busy(self) -> int:
        """
        Connections under way, every use together.
        """
        return self.in_use[Use.CONTROL] + self.in_use[Use.JOBS]

    @property
    def waiting(self) -> int:
        """
        Requests waiting for a slot.
        """
        return sum(len(queue) for queue in self._waiting.values())

    @property
    def job_slots(self) -> int:
        """
        The most job watches that can hold a connection at once.
        """
        return self.total - self.reserved

    def _free(self, use: Use) -> bool:
        if self.busy >= self.total:
            return False
        return use is Use.CONTROL or self.in_use[Use.JOBS] < self.job_slots

    def acquire(self, use: Use) -> Deferred[None]:
        """
        A slot for one connection.

        :param use: what it is for.
        :return: a Deferred firing when the slot is taken (at once when one
            is free); cancelling it gives up the wait.
        """
        if not self._waiting[use] and self._free(use):
            self.in_use[use] += 1
            return succeed(None)
        queue = self._waiting[use]
        waiter: Deferred[None] = Deferred(queue.remove)
        queue.append(waiter)
        return waiter

    def release(self, use: Use) -> None:
        """
        Give a slot back; the oldest waiter that may take it gets it,
        control before jobs.

        :param use: what it was taken for.
        """
        self.in_use[use] -= 1
        for next_use in (Use.CONTROL, Use.JOBS):
            queue = self._waiting[next_use]
            while queue and self._free(next_use):
                self.in_use[next_use] += 1
                queue.popleft().callback(None)
