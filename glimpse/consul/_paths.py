"""
Names of Consul's HTTP API that more than one module here uses.
"""

#: The header that carries the ACL token.
TOKEN_HEADER = "X-Consul-Token"

#: The status words of ``PUT /v1/agent/check/<status>/<check id>``.
CHECK_STATUSES = ("pass", "warn", "fail")
