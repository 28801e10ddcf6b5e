"""
What the Consul agent answers, decoded: :class:`Response`, :class:`AgentSelf`,
and the :class:`ConsulError` family every failure becomes.
"""

from typing import Any

import attrs


@attrs.define
class ConsulError(Exception):
    """
    Consul answered with an error, or could not be asked.

    :ivar status: the HTTP status, or ``None`` when no answer came.
    :ivar endpoint: the API path asked, without the query.
    :ivar message: what went wrong, for logs and error bodies.
    """

    endpoint: str
    message: str
    status: int | None = None

    def __str__(self) -> str:
        status = f" (HTTP {self.status})" if self.status else ""
        return f"Consul {self.endpoint}{status}: {self.message}"


class ConsulUnavailable(ConsulError):
    """
    No answer: the agent refused the connection, timed out, or went away.
    """


class ConsulTLSError(ConsulUnavailable):
    """
    No answer because TLS to the agent failed: its certificate is not
    trusted, or it refused Glimpse's client certificate (or the lack of
    one).  The message starts with ``TLS:`` and names the option to fix.
    """


class ConsulNotFound(ConsulError):
    """
    Consul answered 404.
    """


class ConsulDenied(ConsulError):
    """
    Consul answered 403: the ACL token is missing or lacks a permission.
    """


@attrs.frozen
class Response:
    """
    A decoded Consul answer.

    :ivar body: the decoded JSON body (or ``None`` for an empty body).
    :ivar index: ``X-Consul-Index`` as an int, or ``None``.
    :ivar unchanged: a blocking query ended with the index it was sent
        (its wait ran out): the body is the same as before and was not
        read (``body`` is ``None``).
    :ivar content: the raw body (``None`` when ``unchanged``).
    """

    body: Any
    index: int | None = None
    unchanged: bool = False
    content: bytes | None = attrs.field(default=None, repr=False, eq=False)


@attrs.frozen
class AgentSelf:
    """
    What the local agent says of itself (``/v1/agent/self``), as far as
    Glimpse needs it.

    :ivar datacenter: the agent's datacenter: the local zone.
    :ivar node: the agent's node name, under which the catalog lists the
        registrations made on it.
    """

    datacenter: str
    node: str


def _error_for(status: int, endpoint: str, message: str) -> ConsulError:
    cls = {403: ConsulDenied, 404: ConsulNotFound}.get(status, ConsulError)
    return cls(endpoint=endpoint, message=message, status=status)
