"""
``/v1/providers/{provider}``: a provider's full state for this host.

``PUT`` replaces it whole (400 listing every problem, changing nothing, when
it is invalid) and answers 200 once Consul's catalog shows it; ``GET``
returns it; ``DELETE`` removes it.
``PUT /v1/providers/{provider}/instances/{instance}/checks/{check}/{pass,warn,fail}``
sets a TTL check.

With a provider token configured, every request here needs
``Authorization: Bearer <token>``; without one, only loopback clients are
served, so the provider API is never open to the network by accident.
"""

from __future__ import annotations

import hmac
import ipaddress
import json
from typing import TYPE_CHECKING, Any, NoReturn

from twisted.internet.address import IPv4Address, IPv6Address
from twisted.internet.defer import maybeDeferred

from glimpse.address import label_problem
from glimpse.consul import ConsulError
from glimpse.http._json import (
    ErrorResource,
    HTTPError,
    JSONResource,
    read_body,
    render_deferred,
)
from glimpse.http.follow import parse_bool
from glimpse.providers.applier import NotAcknowledged, NotApplied
from glimpse.providers.state import InvalidState, NoSuchCheck

if TYPE_CHECKING:
    from twisted.python.failure import Failure
    from twisted.web.resource import Resource
    from twisted.web.server import Request

    from glimpse.providers.applier import Applier

#: The largest state a PUT takes, in bytes, unless told otherwise (the
#: site's --http-max-body answers a larger one 413 before reading it).
MAX_BODY = 16 * 1024 * 1024
MAX_NOTE = 4096
_STATUSES = ("pass", "warn", "fail")


def _is_loopback(address: object) -> bool:
    if isinstance(address, (IPv4Address, IPv6Address)):
        ip = ipaddress.ip_address(address.host.split("%")[0])
        mapped = ip.ipv4_mapped if isinstance(ip, ipaddress.IPv6Address) else None
        return ip.is_loopback or bool(mapped and mapped.is_loopback)
    # UNIX sockets are guarded by file permissions; anything else is refused.
    return getattr(address, "name", None) is not None


class _Unauthorized(ErrorResource):
    def render(self, request: Request) -> bytes:
        request.setHeader(b"www-authenticate", b'Bearer realm="glimpse-providers"')
        return super().render(request)


def _authorization_problem(request: Request, token: str | None) -> Resource | None:
    """
    ``None`` when the request may use the provider API, else the resource
    that refuses it.
    """
    if token is None:
        if _is_loopback(request.getClientAddress()):
            return None
        return ErrorResource(
            403, "the provider API serves only loopback clients",
            "run the provider on this host, or start Glimpse with --provider-token-file")
    given = (request.getHeader(b"authorization") or b"").decode("latin-1")
    scheme, _, value = given.partition(" ")
    # Constant-time: the comparison must not tell how much of a guess was right.
    if scheme.lower() == "bearer" and hmac.compare_digest(
            value.strip().encode("utf-8"), token.encode("utf-8")):
        return None
    return _Unauthorized(
        401, "missing or wrong provider token",
        "send the token of --provider-token-file as 'Authorization: Bearer <token>'")


class ProvidersResource(JSONResource):
    """
    ``/v1/providers/``: one child per provider.

    :param applier: a :class:`glimpse.providers.applier.Applier`.
    :param token: the provider token, or ``None`` for loopback clients only.
    :param max_body: the largest state a PUT takes, in bytes.
    """

    def __init__(self, applier: Applier, token: str | None = None,
                 max_body: int = MAX_BODY) -> None:
        super().__init__()
        self._applier = applier
        self._token = token
        self._max_body = max_body

    def getChild(self, path: bytes, request: Request) -> Resource:
        """
        The provider ``path``'s state, or one of its TTL checks; a 401 or
        403 for a client the provider API does not serve.
        """
        refusal = _authorization_problem(request, self._token)
        if refusal is not None:
            return refusal
        name = path.decode("utf-8", "replace")
        problem = label_problem(name, "provider name")
        if problem:
            return ErrorResource(400, "invalid provider name", problem)
        rest = [p.decode("utf-8", "replace") for p in request.postpath or ()]
        if not rest or rest == [""]:
            return ProviderResource(self._applier, name, self._max_body)
        if len(rest) == 5 and rest[0] == "instances" and rest[2] == "checks":
            if rest[4] not in _STATUSES:
                return ErrorResource(404, f"no such check status {rest[4]!r}",
                                     "use .../checks/<check>/pass, /warn or /fail")
            return CheckResource(self._applier, name, rest[1], rest[3], rest[4])
        return ErrorResource(404, "not found", "use /v1/providers/<provider> or "
                             "/v1/providers/<provider>/instances/<instance>/checks/<check>/pass")

    def render_GET(self, request: Request) -> NoReturn:
        """
        ``/v1/providers/`` alone: a 400 saying what to append.
        """
        raise HTTPError(400, "no provider", "use /v1/providers/<provider>")


#: ``Retry-After`` of an answer saying Consul did not take a change: a
#: leader election or an agent restart usually ends within seconds.
RETRY_AFTER = {b"retry-after": b"5"}


def _consul_failed(failure: Failure) -> Failure:
    if failure.check(NotAcknowledged):
        raise HTTPError(504, "the state was not acknowledged by Consul's catalog in time; "
                        "the previous state was put back", str(failure.value), RETRY_AFTER)
    if failure.check(ConsulError, NotApplied):
        raise HTTPError(503, "the state was not applied; the previous state stays",
                        str(failure.value), RETRY_AFTER)
    return failure


class ProviderResource(JSONResource):
    """
    One provider's state.

    :param applier: a :class:`glimpse.providers.applier.Applier`.
    :param provider: the provider's name.
    :param max_body: the largest state a PUT takes, in bytes.
    """

    isLeaf = True

    def __init__(self, applier: Applier, provider: str, max_body: int = MAX_BODY) -> None:
        super().__init__()
        self._applier = applier
        self._provider = provider
        self._max_body = max_body

    def render_GET(self, request: Request) -> int:
        """
        The provider's acknowledged state.

        :raises HTTPError: 404 when it has none.
        """
        state = self._applier.state(self._provider)
        if state is None:
            raise HTTPError(404, f"provider {self._provider!r} has no state",
                            f"PUT one to /v1/providers/{self._provider}")
        return render_deferred(request, maybeDeferred(lambda: (200, state)))

    def render_PUT(self, request: Request) -> int:
        """
        Replace the provider's whole state (``?dry_run=true``: only say what
        would change); the answer comes once Consul's catalog shows it.

        :raises HTTPError: 413 for a body too large, 400 for one that is not
            JSON or not a valid state (nothing is changed then).
        """
        body = read_body(request, self._max_body + 1)
        if len(body) > self._max_body:
            raise HTTPError(413, "state too large",
                            f"at most {self._max_body} bytes (--http-max-body)")
        try:
            document = json.loads(body)
        except ValueError as e:
            raise HTTPError(400, "the body is not JSON", str(e)) from e
        dry_run = parse_bool(request, "dry_run")
        try:
            d = self._applier.apply(self._provider, document, dry_run=dry_run)
        except InvalidState as e:
            raise HTTPError(400, "invalid provider state; nothing was changed",
                            e.to_json()) from e
        answer = d.addCallback(lambda result: (200, dict(result.to_json(), dry_run=dry_run)))
        return render_deferred(request, answer.addErrback(_consul_failed))

    def render_DELETE(self, request: Request) -> int:
        """
        Remove the provider's state.
        """
        answer = self._applier.remove(self._provider).addCallback(
            lambda result: (200, dict(result.to_json(), dry_run=False)))
        return render_deferred(request, answer.addErrback(_consul_failed))


class CheckResource(JSONResource):
    """
    ``PUT .../instances/{instance}/checks/{check}/{pass,warn,fail}``: set a
    TTL check of the instance (once: every named port mirrors it).  An optional JSON body
    ``{"note": "..."}`` becomes the check's output.

    :param applier: a :class:`glimpse.providers.applier.Applier`.
    :param status: ``pass``, ``warn`` or ``fail``.
    """

    isLeaf = True

    def __init__(self, applier: Applier, provider: str, instance: str, check: str,
                 status: str) -> None:
        super().__init__()
        self._applier = applier
        self._args = (provider, instance, check, status)

    def render_PUT(self, request: Request) -> int:
        """
        Set the check.

        :raises HTTPError: 400 for a body that is not a note.
        """
        body = read_body(request, MAX_NOTE + 64)
        note: Any = ""
        if body.strip():
            try:
                note = json.loads(body)["note"]
            except (ValueError, KeyError, TypeError):
                raise HTTPError(400, "the body is not {\"note\": \"...\"}",
                                "send no body, or a JSON object with a string 'note'") from None
            if not isinstance(note, str) or len(note) > MAX_NOTE:
                raise HTTPError(400, "bad note", f"'note' is a string of at most {MAX_NOTE} "
                                "characters")
        d = self._applier.pass_check(*self._args, note=note)

        def failed(failure: Failure) -> Failure:
            if isinstance(failure.value, NoSuchCheck):
                raise HTTPError(failure.value.status, "no such ttl check", str(failure.value))
            if failure.check(ConsulError):
                raise HTTPError(503, "Consul did not take the check update", str(failure.value),
                                RETRY_AFTER)
            return failure

        answer = d.addCallback(lambda ids: (200, {"status": self._args[3], "checks": ids}))
        return render_deferred(request, answer.addErrback(failed))
