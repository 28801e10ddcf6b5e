"""
``/v1/providers/{provider}``: a provider's full state for this host.

``PUT`` replaces it whole (400 listing every problem, changing nothing, when
it is invalid); ``GET`` returns it; ``DELETE`` removes it.
"""

import json

from twisted.internet.defer import maybeDeferred

from glimpse.address import label_problem
from glimpse.consul import ConsulError
from glimpse.http._json import ErrorResource, HTTPError, JSONResource, render_deferred
from glimpse.providers import NotApplied
from glimpse.state import InvalidState

MAX_BODY = 16 * 1024 * 1024


class ProvidersResource(JSONResource):
    """
    ``/v1/providers/``: one child per provider.
    """

    def __init__(self, applier):
        super().__init__()
        self._applier = applier

    def getChild(self, path, request):
        name = path.decode("utf-8", "replace")
        if request.postpath:
            return ErrorResource(404, "not found", "use /v1/providers/<provider>")
        problem = label_problem(name, "provider name")
        if problem:
            return ErrorResource(400, "invalid provider name", problem)
        return ProviderResource(self._applier, name)

    def render_GET(self, request):
        raise HTTPError(400, "no provider", "use /v1/providers/<provider>")


def _consul_failed(failure):
    if failure.check(ConsulError, NotApplied):
        raise HTTPError(503, "the state was not applied", str(failure.value))
    return failure


class ProviderResource(JSONResource):
    """
    One provider's state.
    """

    isLeaf = True

    def __init__(self, applier, provider):
        super().__init__()
        self._applier = applier
        self._provider = provider

    def render_GET(self, request):
        state = self._applier.state(self._provider)
        if state is None:
            raise HTTPError(404, f"provider {self._provider!r} has no state",
                            f"PUT one to /v1/providers/{self._provider}")
        return render_deferred(request, maybeDeferred(lambda: (200, state)))

    def render_PUT(self, request):
        body = request.content.read(MAX_BODY + 1)
        if len(body) > MAX_BODY:
            raise HTTPError(413, "state too large", f"at most {MAX_BODY} bytes")
        try:
            document = json.loads(body)
        except ValueError as e:
            raise HTTPError(400, "the body is not JSON", str(e))
        dry_run = request.args.get(b"dry_run", [b"false"])[0] in (b"true", b"1")
        try:
            d = self._applier.apply(self._provider, document, dry_run=dry_run)
        except InvalidState as e:
            raise HTTPError(400, "invalid provider state; nothing was changed", e.to_json())
        d.addCallback(lambda result: (200, dict(result.to_json(), dry_run=dry_run)))
        return render_deferred(request, d.addErrback(_consul_failed))

    def render_DELETE(self, request):
        d = self._applier.remove(self._provider)
        d.addCallback(lambda result: (200, dict(result.to_json(), dry_run=False)))
        return render_deferred(request, d.addErrback(_consul_failed))
