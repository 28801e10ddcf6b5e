"""
The JSON Schemas of the HTTP API's answers (instances, checks, lookups,
topology, zones, status, Prometheus target groups), as the OpenAPI
document (:mod:`glimpse.http.openapi`) lists them under
``components/schemas``.  Pure data.
"""

from __future__ import annotations

from typing import Any


def ref(name: str) -> dict[str, Any]:
    """
    A reference to the schema ``name`` of the components.
    """
    return {"$ref": f"#/components/schemas/{name}"}


def nullable(kind: str) -> dict[str, Any]:
    """
    A schema of type ``kind`` or ``null``.
    """
    return {"type": [kind, "null"]}


COUNTS: dict[str, Any] = {
    "type": "object", "required": ["instances", "passing", "warning", "critical"],
    "properties": {k: {"type": "integer", "minimum": 0} for k in
                   ("instances", "passing", "warning", "critical", "draining")}}

SCHEMAS: dict[str, Any] = {
    "Error": {"type": "object", "required": ["error", "detail"],
              "properties": {"error": {"type": "string", "description": "what was wrong"},
                             "detail": {"description": "how to fix it; any JSON"}}},
    "Check": {"type": "object", "required": ["id", "name", "type", "status", "output"],
              "properties": {"id": {"type": "string"}, "name": {"type": "string"},
                             "type": {"type": "string"}, "status": {"type": "string"},
                             "output": {"type": "string"}, "node_level": {"type": "boolean"},
                             "last_change": dict(nullable("string"), description=(
                                 "when Glimpse saw the status change (ISO 8601); null when "
                                 "it has not changed since Glimpse began watching"))}},
    "Instance": {"type": "object",
                 "required": ["id", "instance", "service", "host", "node", "ip", "port", "zone",
                              "provider", "meta", "healthy", "checks"],
                 "properties": {
                     "id": {"type": "string"}, "instance": {"type": "string"},
                     "service": {"type": "string"}, "host": {"type": "string"},
                     "node": {"type": "string"}, "ip": {"type": "string"},
                     "port": {"type": "integer"}, "zone": {"type": "string"},
                     "provider": {"type": "string"},
                     "meta": {"type": "object", "additionalProperties": {"type": "string"}},
                     "drain": {"type": "boolean"}, "healthy": {"type": "boolean"},
                     "weight": {"type": "integer", "minimum": 1, "maximum": 65535,
                                "description": "the SRV weight of its current state: its "
                                               "passing weight while every check passes, "
                                               "else its warning weight"},
                     "weights": {"type": "object", "required": ["passing", "warning"],
                                 "description": "its registration's weights (Consul's "
                                                "Weights; 1 and 1 unless the provider said)",
                                 "properties": {k: {"type": "integer", "minimum": 1,
                                                    "maximum": 65535}
                                                for k in ("passing", "warning")}},
                     "status": {"type": "string", "enum": ["passing", "warning", "critical"]},
                     "checks": {"type": "array", "items": ref("Check")}}},
    "Failover": dict(nullable("object"), required=["from", "reason"], description=(
        "for an 'any' address, why a zone other than the local one answers; null when the "
        "local zone answers"), properties={
            "from": {"type": "string", "description": "the local zone"},
            "reason": {"type": "string"}}),
    "Lookup": {"type": "object", "required": ["address", "fqdn", "zone", "instances", "truncated",
                                              "failover", "panic"],
               "properties": {"address": {"type": "string"}, "fqdn": {"type": "string"},
                              "zone": {"type": "string", "description":
                                       "the zone that answers (for 'any': the local zone "
                                       "or the one it failed over to)"},
                              "failover": ref("Failover"),
                              "panic": {"type": "boolean", "description":
                                        "the job is in panic (--panic-threshold): DNS "
                                        "answers every instance, the healthy ones first"},
                              "healthy_only": {"type": "boolean"},
                              "truncated": {"type": "boolean", "description":
                                            "more instances matched than the lookup cap"},
                              "instances": {"type": "array", "items": ref("Instance")}}},
    "Topology": {"type": "object", "required": ["path", "level", "counts", "children"],
                 "properties": {
                     "path": {"type": "string"},
                     "level": {"type": "string",
                               "enum": ["zone", "product", "env", "job", "instance"]},
                     "counts": COUNTS,
                     "children": {"type": "array", "items": {"type": "object",
                                                             "required": ["name"]}},
                     "unavailable": {"type": "array", "items": {"type": "string"},
                                     "description": "jobs (zone/product/env/job) whose view "
                                     "cannot be served now, left out of the counts"}}},
    "Explain": {"type": "object", "required": ["address", "zone", "instances"],
                "properties": {
                    "address": {"type": "string"}, "fqdn": {"type": "string"},
                    "zone": {"type": "string"}, "view_problem": nullable("string"),
                    "failover": ref("Failover"), "panic": {"type": "boolean"},
                    "instances": {"type": "array", "items": {
                        "type": "object", "required": ["id", "in_dns", "rule"],
                        "properties": {
                            "id": {"type": "string"}, "zone": {"type": "string"},
                            "in_dns": {"type": "boolean"},
                            "priority": dict(nullable("integer"), description=(
                                "its SRV priority: 1, or 2 when served only because its "
                                "job is in panic; null when DNS leaves it out")),
                            "weight": dict(nullable("integer"), description=(
                                "its SRV weight; null when DNS leaves it out")),
                            "meta_match": dict(nullable("boolean"), description=(
                                "whether it matches the meta filter; null without one")),
                            "rule": {"type": "string", "description": "the rule that decided"},
                            "rules": {"type": "object", "description": (
                                "what each rule says of it"),
                                "properties": {k: {"type": "string"} for k in (
                                    "health", "warning", "panic", "weight", "meta",
                                    "failover")}},
                            "checks": {"type": "array", "items": ref("Check")}}}}}},
    "Status": {"type": "object", "required": ["version", "serving", "zones"],
               "properties": {"version": {"type": "string"}, "versions": {"type": "object"},
                              "serving": {"type": "boolean"},
                              "consul_reachable": {"type": "boolean"},
                              "consul_error": dict(nullable("string"), description=(
                                  "what asking the local Consul agent last failed with "
                                  "('TLS: ...' for a CA or client certificate it does "
                                  "not take); null while it answers")),
                              "local_zone": nullable("string"),
                              "zones": {"type": "object"}, "watches": {"type": "integer"}}},
    "Zone": {"type": "object", "required": ["zone", "reachable", "serving"],
             "properties": {"zone": {"type": "string"}, "local": {"type": "boolean"},
                            "reachable": {"type": "boolean"}, "serving": {"type": "boolean"},
                            "problem": nullable("string"),
                            "stale_seconds": {"type": "number"}}},
    "Zones": {"type": "object", "required": ["zones"],
              "properties": {"local_zone": nullable("string"),
                             "zones": {"type": "array", "items": ref("Zone")}}},
    "TargetGroup": {"type": "object", "required": ["targets", "labels"],
                    "description": "One named port of one instance, as Prometheus' HTTP SD "
                                   "takes it",
                    "properties": {
                        "targets": {"type": "array", "items": {"type": "string"},
                                    "description": "ip:port ([ip]:port for IPv6)"},
                        "labels": {"type": "object", "additionalProperties": {"type": "string"},
                                   "description": "__meta_glimpse_zone, _product, _env, _job, "
                                                  "_service, _instance, _node, _provider, "
                                                  "_address, _healthy, _status, _drain, and "
                                                  "_meta_<key> per meta key ('-' made '_')"}}},
    "ApplyResult": {"type": "object", "required": ["provider", "added", "changed", "removed",
                                                   "unchanged", "dry_run"],
                    "properties": {k: {"type": "array", "items": {"type": "string"}}
                                   for k in ("added", "changed", "removed", "unchanged")}
                    | {"provider": {"type": "string"}, "dry_run": {"type": "boolean"}}},
}
