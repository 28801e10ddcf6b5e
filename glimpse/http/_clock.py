"""
The clock the HTTP API reads: the reactor, or a
:class:`twisted.internet.task.Clock` in tests.

It is ``IReactorTime``, but mypy reads no zope interface (the mypy-zope
plugin is not configured), so this protocol names the part Glimpse uses.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from twisted.internet.base import DelayedCall


class Clock(Protocol):
    """
    What the resources and the hub use of ``IReactorTime``.
    """

    def seconds(self) -> float:
        """
        The current time, in seconds.
        """

    def callLater(self, delay: float, callable: Callable[..., object], *args: object,
                  **kwargs: object) -> DelayedCall:
        """
        Call ``callable(*args, **kwargs)`` in ``delay`` seconds.
        """
