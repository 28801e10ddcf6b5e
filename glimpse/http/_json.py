"""
JSON bodies and errors for every resource.

Every error is ``{"error": "...", "detail": ...}``: what was wrong, and how
to fix it.
"""

import json

from twisted.logger import Logger
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET

log = Logger()


def write_json(request, code, body, headers=None):
    """
    Finish ``request`` with a JSON body.
    """
    data = json.dumps(body, indent=2, sort_keys=True).encode("utf-8") + b"\n"
    request.setResponseCode(code)
    request.setHeader(b"content-type", b"application/json")
    for name, value in (headers or {}).items():
        request.setHeader(name, value)
    return data


def error_body(error, detail=None):
    """
    The body of an error answer.
    """
    return {"error": error, "detail": detail}


class HTTPError(Exception):
    """
    An error answer a resource raises: status, message, and detail.
    """

    def __init__(self, code, error, detail=None):
        super().__init__(error)
        self.code = code
        self.error = error
        self.detail = detail


def finish(request, code, body, headers=None):
    """
    Write a JSON body to a request that was left open (``NOT_DONE_YET``),
    unless the client has gone away.
    """
    if request._disconnected or request.finished:
        return
    request.write(write_json(request, code, body, headers))
    request.finish()


def _fail(failure, request):
    if failure.check(HTTPError):
        e = failure.value
        finish(request, e.code, error_body(e.error, e.detail))
    else:
        log.failure("Answering {uri} failed", failure, uri=request.uri)
        finish(request, 500, error_body(
            "internal error", "Glimpse failed to answer; its log has the details"))


def render_deferred(request, d):
    """
    Finish ``request`` with whatever ``d`` fires: ``(code, body[, headers])``
    or an :class:`HTTPError`.
    """
    d.addCallback(lambda result: finish(request, *result))
    d.addErrback(_fail, request)
    return NOT_DONE_YET


class JSONResource(Resource):
    """
    A resource whose unknown children and methods answer JSON errors.
    """

    def getChild(self, path, request):
        return ErrorResource(404, "not found", f"there is no {request.path.decode()!r}; "
                             "see /v1/openapi.json for the API")

    def render(self, request):
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
            return write_json(request, e.code, error_body(e.error, e.detail))
        except Exception:
            # A bug: still a JSON error for the client, the details in the log.
            log.failure("Answering {uri} failed", uri=request.uri)
            return write_json(request, 500, error_body(
                "internal error", "Glimpse failed to answer; its log has the details"))


class ErrorResource(Resource):
    """
    A resource that answers every request with one JSON error.
    """

    isLeaf = True

    def __init__(self, code, error, detail=None):
        super().__init__()
        self._code, self._error, self._detail = code, error, detail

    def render(self, request):
        return write_json(request, self._code, error_body(self._error, self._detail))
