"""
The ``glimpse`` command: asks the local agent's HTTP API from a shell, with
exit codes scripts can rely on.

:func:`main` runs it in this process and returns the exit code;
:func:`run` is the console script.  :func:`request`, :class:`Unreachable`
and :func:`sse_events` are the blocking HTTP the dev tools and tests share.
(The name ``glimpse.cli.main`` is the function; its module is still
imported as ``from glimpse.cli.main import ...``.)
"""

from glimpse.cli.client import Unreachable, request, sse_events
from glimpse.cli.main import main, run

__all__ = ["Unreachable", "main", "request", "run", "sse_events"]
