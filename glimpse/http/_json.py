"""
JSON bodies and errors for every resource.

Every error is ``{"error": "...", "detail": ...}``: what was wrong, and how
to fix it.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from twisted.logger import Logger
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET

if TYPE_CHECKING:
    from twisted.internet.defer import Deferred
    from twisted.python.failure import Failure
    from twisted.web.server import Request

log = Logger()


def encode_json(body: Any) -> bytes:
    """
    ``body`` as every answer encodes it: indented, keys sorted, a newline
    at the end.
    """
    return json.dumps(body, indent=2, sort_keys=True).encode("utf-8") + b"\n"


def write_json(request: Request, code: int, body: Any,
               headers: Mapping[bytes, bytes] | None = None) -> bytes:
    """
    Set ``request``'s status and headers for a JSON body, and return the
    body, for a ``render`` method to return.

    :param code: the HTTP status.
    :param body: anything JSON can encode.
    :param headers: more response headers.
    :return: the encoded body.
    """
    data = encode_json(body)
    request.setResponseCode(code)
    request.setHeader(b"content-type", b"application/json")
    for name, value in (headers or {}).items():
        request.setHeader(name, value)
    return data


def error_body(error: str, detail: Any = None) -> dict[str, Any]:
    """
    The body of an error answer.

    :param error: what was wrong.
    :param detail: how to fix it: a sentence, or any JSON.
    """
    return {"error": error, "detail": detail}


class HTTPError(Exception):
    """
    An error answer a resource raises: status, message, and detail.

    :param code: the HTTP status.
    :param error: what was wrong.
    :param detail: how to fix it: a sentence, or any JSON.
    :param headers: more response headers (e.g. ``Retry-After``).
    """

    def __init__(self, code: int, error: str, detail: Any = None,
                 headers: Mapping[bytes, bytes] | None = None) -> None:
        super().__init__(error)
        self.code = code
        self.error = error
        self.detail = detail
        self.headers = dict(headers or {})


def finish(request: Request, code: int, body: Any,
           headers: Mapping[bytes, bytes] | None = None) -> None:
    """
    Write a JSON body to a request that was left open (``NOT_DONE_YET``),
    unless the client has gone away.
    """
    if request._disconnected or request.finished:
        return
    request.write(write_json(request, code, body, headers))
    request.finish()


def read_body(request: Request, limit: int) -> bytes:
    """
    At most ``limit`` bytes of the request's body (empty when it has none).
    """
    return b"" if request.content is None else request.content.read(limit)


def _fail(failure: Failure, request: Request) -> None:
    e = failure.value
    if isinstance(e, HTTPError):
        finish(request, e.code, error_body(e.error, e.detail), e.headers)
    else:
        log.failure("Answering {uri} failed", failure, uri=request.uri)
        finish(request, 500, error_body(
            "internal error", "Glimpse failed to answer; its log has the details"))


def render_deferred(request: Request, d: Deferred[tuple[int, Any]]) -> int:
    """
    Finish ``request`` with whatever ``d`` fires: ``(code, body)``, or an
    :class:`HTTPError`.

    :return: ``NOT_DONE_YET``, for a ``render`` method to return.
    """
    d.addCallback(lambda result: finish(request, *result))
    d.addErrback(_fail, request)
    return NOT_DONE_YET


class JSONResource(Resource):
    """
    A resource whose unknown children and methods answer JSON errors.
    """

    def getChild(self, path: bytes, request: Request) -> Resource:
        """
        A child that is not there: a 404 pointing at the API's description.
        """
        return ErrorResource(404, "not found", f"there is no {request.path.decode()!r}; "
                             "see /v1/openapi.json for the API")

    def render(self, request: Request) -> bytes | int:
        """
        Dispatch to ``render_<METHOD>`` (``HEAD`` answered as ``GET``); a
        method with no handler is a 405 listing those there are, an
        :class:`HTTPError` its JSON answer, anything else a logged 500.
        """
        method = request.method.decode("ascii", "replace")
        handler = getattr(self, f"render_{method}", None)
        if handler is None and method == "HEAD":
            handler = getattr(self, "render_GET", None)
        if handler is None:
            allowed = sorted(m[len("render_"):] for m in dir(self) if m.startswith("render_"))
            request.setHeader(b"allow", ", ".join(allowed).encode())
            return write_json(request, 405, error_body(
                f"method {method} is not allowed here", f"use one of: {', '.join(allowed)}"))
        try:
            return handler(request)
        except HTTPError as e:
            return write_json(request, e.code, error_body(e.error, e.detail), e.headers)
        except Exception:
            # A bug: still a JSON error for the client, the details in the log.
            log.failure("Answering {uri} failed", uri=request.uri)
            return write_json(request, 500, error_body(
                "internal error", "Glimpse failed to answer; its log has the details"))


class ErrorResource(Resource):
    """
    A resource that answers every request with one JSON error.

    :param code: the HTTP status.
    :param error: what was wrong.
    :param detail: how to fix it.
    """

    isLeaf = True

    def __init__(self, code: int, error: str, detail: Any = None) -> None:
        super().__init__()
        self._code, self._error, self._detail = code, error, detail

    def render(self, request: Request) -> bytes:
        """
        The error, whatever the method.
        """
        return write_json(request, self._code, error_body(self._error, self._detail))
