"""
What the Consul agent answers, decoded: :class:`Response`, :class:`AgentSelf`,
and the :class:`ConsulError` family every failure becomes.
"""

import json
from collections.abc import Callable
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


class ConsulBusy(ConsulError):
    """
    Consul answered 429: too many connections from this host
    (``limits.http_max_conns_per_client``) or a rate limit.  Retried after
    a jittered back-off, never at once.
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
    :ivar known_leader: ``X-Consul-KnownLeader``: whether the server that
        answered knew a leader (``None`` when not sent: the agent's
        streaming views do not say).
    :ivar last_contact: ``X-Consul-LastContact`` in seconds: how long since
        that server heard from the leader, i.e. how old a stale answer may
        be (``None`` when not sent).
    :ivar backend: ``X-Consul-Query-Backend`` (``streaming`` or
        ``blocking-query``), or ``None``.
    """

    body: Any
    index: int | None = None
    unchanged: bool = False
    content: bytes | None = attrs.field(default=None, repr=False, eq=False)
    known_leader: bool | None = None
    last_contact: float | None = None
    backend: str | None = None


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
    cls = {403: ConsulDenied, 404: ConsulNotFound, 429: ConsulBusy}.get(status, ConsulError)
    return cls(endpoint=endpoint, message=message, status=status)


def decode(status: int, phrase: str, header: Callable[[bytes], bytes | None], content: bytes,
           endpoint: str, unchanged_index: int | None = None,
           reuse: tuple[bytes | None, Any] | None = None) -> Response:
    """
    An HTTP answer of the agent as a :class:`Response`, or the
    :class:`ConsulError` it stands for.

    :param status: the status code.
    :param phrase: its reason phrase, for an error without a body.
    :param header: looks up one header by its lower-cased name.
    :param content: the body.
    :param endpoint: the name the request is reported under.
    :param unchanged_index: an answer with this ``X-Consul-Index`` is not
        decoded and comes back ``unchanged``: decoding a large answer costs
        the reactor milliseconds, and the same index means the same answer.
    :param reuse: ``(content, body)`` of an earlier answer: the same content
        is not decoded again.
    :raises ConsulError: for an error status, a redirect, or a body that is
        not JSON.
    """
    if status >= 400:
        text = content.decode("utf-8", "replace").strip() or phrase
        raise _error_for(status, endpoint, text)
    if status >= 300:
        where = (header(b"location") or b"nowhere").decode("ascii", "replace")
        raise ConsulError(
            endpoint, f"answered with a redirect to {where}, which Glimpse does not follow "
            "(the ACL token would go along): point --consul at the Consul agent itself", status)
    raw_index = header(b"x-consul-index")
    index = int(raw_index) if raw_index and raw_index.isdigit() else None
    leader = header(b"x-consul-knownleader")
    contact = header(b"x-consul-lastcontact")
    backend = header(b"x-consul-query-backend")
    known_leader = None if leader is None else leader == b"true"
    last_contact = int(contact) / 1000 if contact and contact.isdigit() else None
    query_backend = backend.decode("ascii", "replace") if backend else None
    if unchanged_index is not None and index == unchanged_index:
        return Response(body=None, index=unchanged_index, unchanged=True,
                        known_leader=known_leader, last_contact=last_contact,
                        backend=query_backend)
    if reuse is not None and content == reuse[0]:
        body = reuse[1]
    else:
        try:
            body = json.loads(content) if content.strip() else None
        except ValueError:
            raise ConsulError(endpoint, "the answer was not JSON", status) from None
    return Response(body=body, index=index, content=content, known_leader=known_leader,
                    last_contact=last_contact, backend=query_backend)
