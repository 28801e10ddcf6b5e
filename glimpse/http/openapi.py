"""
``GET /v1/openapi.json``: the OpenAPI 3.1 document of the whole HTTP API,
every path, parameter, answer and error body.  Built here as data, so the
test that runs schemathesis against a live Glimpse checks the code against
this very document.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import glimpse
from glimpse.http._json import JSONResource, write_json
from glimpse.http.schemas import SCHEMAS, ref

if TYPE_CHECKING:
    from twisted.web.server import Request

#: The provider state's JSON Schema, written with the provider API.
PROVIDER_SCHEMA = Path(__file__).resolve().parent.parent / "schema" / "provider-state.json"


def _json(schema: dict[str, Any], description: str,
          headers: dict[str, Any] | None = None) -> dict[str, Any]:
    answer: dict[str, Any] = {"description": description,
                              "content": {"application/json": {"schema": schema}}}
    if headers:
        answer["headers"] = headers
    return answer


def _errors(*codes: int) -> dict[str, Any]:
    meaning = {
        400: "Bad request: the error says which parameter or label to fix.",
        401: "A provider token is configured and was not sent, or was wrong.",
        403: "The provider API serves only loopback clients (no token configured).",
        404: "Nothing there: unknown zone, address or path.",
        413: "The body is larger than --http-max-body; a Content-Length over it is "
             "answered before any of the body is read.",
        503: "Glimpse cannot serve it now: Consul is out of reach and the view is "
             "missing or older than --max-stale (or Glimpse has --http-max-conns "
             "connections open: then with Retry-After).",
        504: "Consul did not acknowledge the change in time (with Retry-After; the "
             "previous state stays).",
    }
    return {str(c): _json(ref("Error"), meaning[c], _INDEX if c in (404, 503) else None)
            for c in codes}


def _retryable(*codes: int) -> dict[str, Any]:
    # The provider API's Consul failures say when to try again.
    answers = _errors(*codes)
    for code in ("503", "504"):
        if code in answers:
            answers[code] = dict(answers[code], description=answers[code]["description"]
                                 + " A provider write Consul did not take says so, with "
                                 "Retry-After.", headers={**answers[code].get("headers", {}),
                                                          **_RETRY_AFTER})
    return answers


_RETRY_AFTER: dict[str, Any] = {"Retry-After": {
    "description": "Seconds to wait before trying again.",
    "schema": {"type": "integer", "minimum": 1}}}

#: The answers of the HTTP limits (glimpse/http/site.py), which any request
#: may get whatever its path: the connection is closed after each.
_LIMIT_ERRORS: dict[str, Any] = {
    "408": _json(ref("Error"), "The request's headers took longer than "
                 "--http-header-timeout (or its body longer than --http-body-timeout) "
                 "to arrive; the connection is closed."),
    "429": _json(ref("Error"), "Too many connections from this client (over "
                 "--http-max-conns-per-client; an IPv6 client is its /64), or, for a "
                 "long-poll or stream, too many of those open (over "
                 "--http-max-streams-per-client).", _RETRY_AFTER),
    "503": _json(ref("Error"), "Glimpse has --http-max-conns connections open.",
                 _RETRY_AFTER),
}


def _also_over_the_cap(answer: dict[str, Any]) -> dict[str, Any]:
    # A 503 of its own (the view cannot serve) may also be the connection
    # cap's: its body then an Error, with Retry-After.
    schema = answer["content"]["application/json"]["schema"]
    if schema != ref("Error"):
        schema = {"oneOf": [schema, ref("Error")]}
        description = (answer["description"] + "; or, with Retry-After, Glimpse has "
                       "--http-max-conns connections open (an Error)")
    else:
        description = answer["description"]
    return dict(answer, description=description,
                content={"application/json": {"schema": schema}},
                headers={**answer.get("headers", {}), **_RETRY_AFTER})


def _with_limit_errors(paths: dict[str, Any]) -> None:
    # Every operation may meet the limits; a body too large only those
    # that take one.
    for item in paths.values():
        for method, operation in item.items():
            if method == "parameters":
                continue
            responses = operation["responses"]
            for code, answer in _LIMIT_ERRORS.items():
                if code not in responses:
                    responses[code] = answer
                elif code == "503":
                    responses[code] = _also_over_the_cap(responses[code])
            if "requestBody" in operation and "413" not in responses:
                responses["413"] = _errors(413)["413"]


_INDEX: dict[str, Any] = {"X-Glimpse-Index": {
    "description": "Index of this answer: equal answers have equal indexes. Pass it as "
                   "?index= to wait for a different answer.",
    "schema": {"type": "integer", "minimum": 1}}}

_ADDRESS = {"name": "address", "in": "path", "required": True,
            "description": "<service>.<job>.<env>.<product>.<zone>[.<dns zone>]; any label "
                           "but the zone may be '*'.  The zone 'any' is the local zone, or "
                           "the nearest zone that serves the job when the local one serves "
                           "fewer than --failover-min (no '*' then)",
            "schema": {"type": "string"}, "example": "http.web.prod.shop.ams"}
_META = {"name": "meta.version", "in": "query",
         "description": "A meta filter: meta.<key>=<value> for any of the provider's meta "
                        "keys (meta.version is one), repeatable with other keys; only the "
                        "instances whose meta has every one are answered (a stream sends "
                        "'remove' for one that stops matching).  A key that is not a "
                        "provider's, a value over 512 characters, or one key with two "
                        "values is a 400",
         "schema": {"type": "string", "maxLength": 512}, "example": "1.4.2"}
_HEALTHY = {"name": "healthy", "in": "query", "description": "true: only the instances DNS "
            "serves (every check passing, not draining)",
            "schema": {"type": "string", "enum": ["true", "false", "1", "0"]}}
_INDEX_PARAM = {"name": "index", "in": "query",
                "description": "Long-poll: answer once the answer's index differs from this "
                               "(or after 'wait')",
                "schema": {"type": "integer", "minimum": 0, "maximum": 9999999999999999999}}
_WAIT = {"name": "wait", "in": "query",
         "description": "Longest long-poll, e.g. 30s, 500ms, 2m (default 30s, at most 10m)",
         "schema": {"type": "string", "pattern": r"^\d+(\.\d+)?(ms|s|m)?$"}}
_LAST_EVENT_ID = {"name": "Last-Event-ID", "in": "header",
                  "description": "Resume a stream after this event; a fresh snapshot when the "
                                 "events since are no longer kept",
                  "schema": {"type": "string"}}


#: A DNS label, as every field of an address is.
LABEL = r"^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$"


def _label(name: str, description: str) -> dict[str, Any]:
    return {"name": name, "in": "path", "required": True, "description": description,
            "schema": {"type": "string", "pattern": LABEL}}


_LEVELS = [_label("zone", "a zone (Consul datacenter)"), _label("product", "a product"),
           _label("env", "an environment"), _label("job", "a job")]

_STREAM = {"description": "A text/event-stream: 'snapshot' (the whole answer), then 'add', "
                          "'remove', 'update' per item, 'summary' (the answer without its "
                          "items) when the rest changed (an 'any' address failing over to "
                          "another zone and back, a job entering or leaving panic), "
                          "'unavailable' while the view cannot serve or what is followed does "
                          "not exist (yet: status 404; a 'snapshot' follows when it appears), "
                          "'close' with a reason before "
                          "Glimpse ends the stream; heartbeat comments every few seconds",
           "content": {"text/event-stream": {"schema": {"type": "string"}}}}

def provider_state_schema() -> dict[str, Any]:
    """
    The provider state's JSON Schema: ``glimpse/schema/provider-state.json``
    when the provider API ships one, else a minimal stand-in.
    """
    try:
        schema = json.loads(PROVIDER_SCHEMA.read_text())
    except (OSError, ValueError):
        return {"type": "object", "required": ["instances"],
                "properties": {"instances": {"type": "array", "items": {"type": "object"}}}}
    schema.pop("$schema", None)
    schema.pop("$id", None)
    return schema


def _hoist(schema: dict[str, Any], prefix: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """
    Move a schema's ``$defs`` into the components, so that every ``$ref``
    of the document points into ``#/components/schemas`` as OpenAPI
    tooling expects.

    :return: ``(schema, {component name: definition})``.
    """
    defs = schema.pop("$defs", {})
    text = json.dumps(schema)
    hoisted = {}
    for name in defs:
        text = text.replace(f'"#/$defs/{name}"', f'"#/components/schemas/{prefix}{name}"')
    for name, definition in defs.items():
        body = json.dumps(definition)
        for other in defs:
            body = body.replace(f'"#/$defs/{other}"', f'"#/components/schemas/{prefix}{other}"')
        hoisted[prefix + name] = json.loads(body)
    return json.loads(text), hoisted


def _get(summary: str, params: list[dict[str, Any]], ok: dict[str, Any],
         errors: Iterable[int]) -> dict[str, Any]:
    return {"get": {"summary": summary, "parameters": params,
                    "responses": {"200": ok} | _errors(*errors)}}


def document() -> dict[str, Any]:
    """
    The OpenAPI 3.1 document.
    """
    lookup_ok = _json(ref("Lookup"), "Every instance with every check", _INDEX)
    topology_ok = _json(ref("Topology"), "The children with counts of instances", _INDEX)
    paths: dict[str, Any] = {
        "/v1/lookup/{address}": _get(
            "Every instance of an address with its health; '*' labels take the union "
            "(capped, then truncated: true); the zone 'any' says which zone answers",
            [_ADDRESS, _HEALTHY, _META, _INDEX_PARAM, _WAIT], lookup_ok, (400, 404, 503)),
        "/v1/explain/{address}": _get(
            "Each registered instance, whether DNS answers with it, the rule that decided, "
            "and what each rule says (health, warning, panic, weight, meta, failover)",
            [_ADDRESS, _META], _json(ref("Explain"), "The explanation"), (400, 404, 503)),
        "/v1/watch/{address}": _get(
            "The lookup as Server-Sent Events", [_ADDRESS, _HEALTHY, _META, _LAST_EVENT_ID],
            _STREAM, (400, 404)),
        "/v1/sd/prometheus": _get(
            "Prometheus HTTP service discovery (http_sd_configs): one target group per named "
            "port of each instance of the address, served from the view; an address that "
            "names nothing has none",
            [dict(_ADDRESS, **{"in": "query", "description":
                               "<service>.<job>.<env>.<product>.<zone>[.<dns zone>], once; "
                               "any label but the zone may be '*'"}),
             {"name": "healthy", "in": "query", "description": "false: every registered "
              "instance; true (the default): only those DNS serves",
              "schema": {"type": "string", "enum": ["true", "false", "1", "0"]}}],
            _json({"type": "array", "items": ref("TargetGroup")}, "The target groups"),
            (400, 404, 503)),
        "/v1/status": {"get": {"summary": "Glimpse's own health, for load balancers",
                               "responses": {
                                   "200": _json(ref("Status"), "Glimpse serves"),
                                   "503": _json(ref("Status"), "Glimpse cannot serve")}}},
        "/v1/zones": _get("Every zone, its view's age and whether it is reachable", [],
                          _json(ref("Zones"), "The zones"), (503,)),
        "/v1/zones/{zone}": _get("One zone", [_LEVELS[0]], _json(ref("Zone"), "The zone"),
                                 (404,)),
        "/v1/openapi.json": {"get": {"summary": "This document", "responses": {
            "200": _json({"type": "object"}, "The OpenAPI document")}}},
        "/metrics": {"get": {"summary": "Prometheus metrics", "responses": {"200": {
            "description": "Prometheus text format",
            "content": {"text/plain": {"schema": {"type": "string"}}}}}}},
    }
    for depth in range(len(_LEVELS) + 1):
        suffix = "".join("/{" + p["name"] + "}" for p in _LEVELS[:depth])
        params = _LEVELS[:depth]
        paths["/v1/topology" + suffix] = _get(
            "The topology below this path, with instances passing / warning / critical",
            [*params, _INDEX_PARAM, _WAIT], topology_ok, (400, 404, 503))
        paths["/v1/watch/topology" + suffix] = _get(
            "The topology below this path as Server-Sent Events", [*params, _LAST_EVENT_ID],
            _STREAM, (400, 404))
    provider = {"name": "provider", "in": "path", "required": True,
                "description": "the provider's name (a DNS label)", "schema": {"type": "string"}}
    auth = (400, 401, 403)
    paths["/v1/providers/{provider}"] = {
        "parameters": [provider],
        "get": {"summary": "The provider's acknowledged state",
                "responses": {"200": _json(ref("ProviderState"), "The state")}
                | _errors(*auth, 404)},
        "put": {"summary": "Replace the provider's whole state on this host",
                "parameters": [{"name": "dry_run", "in": "query", "description":
                                "true: say what would change, change nothing",
                                "schema": {"type": "string", "enum": ["true", "false"]}}],
                "requestBody": {"required": True, "content": {
                    "application/json": {"schema": ref("ProviderState")}}},
                "responses": {"200": _json(ref("ApplyResult"), "Applied and acknowledged")}
                | _errors(*auth, 413) | _retryable(503, 504)},
        "delete": {"summary": "Remove the provider's state",
                   "responses": {"200": _json(ref("ApplyResult"), "Removed")}
                   | _errors(*auth) | _retryable(503, 504)},
    }
    paths["/v1/providers/{provider}/instances/{instance}/checks/{check}/{status}"] = {
        "put": {"summary": "Set a TTL check of an instance (once; every named port follows)",
                "parameters": [provider, _label("instance", "the instance"),
                               _label("check", "the check's name"),
                               {"name": "status", "in": "path", "required": True,
                                "schema": {"type": "string", "enum": ["pass", "warn", "fail"]}}],
                "requestBody": {"required": False, "content": {"application/json": {
                    "schema": {"type": "object", "properties": {"note": {"type": "string"}}}}}},
                "responses": {"200": _json({"type": "object"}, "The check was set")}
                | _errors(*auth, 404) | _retryable(503)}}
    _with_limit_errors(paths)
    state, state_defs = _hoist(provider_state_schema(), "ProviderState_")
    return {
        "openapi": "3.1.0",
        "info": {"title": "Glimpse", "version": glimpse.__version__,
                 "description": "Service discovery over the topology kept in Consul. Every "
                                "error is {\"error\", \"detail\"}."},
        "paths": paths,
        "components": {"schemas": SCHEMAS | {"ProviderState": state} | state_defs},
    }


class OpenAPIResource(JSONResource):
    """
    ``GET /v1/openapi.json``.
    """

    isLeaf = True

    def render_GET(self, request: Request) -> bytes:
        """
        The document, built now.
        """
        return write_json(request, 200, document())
