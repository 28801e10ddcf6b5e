# ACL policy for Glimpse's tokens, when the Consul agent enforces ACLs:
#   consul acl policy create -name glimpse -rules @etc/consul/glimpse-acl-policy.hcl
#   consul acl token create -policy-name glimpse -description "glimpse on $(hostname)"
# Give the token's secret to Glimpse with --consul-token-file (the HTTP path)
# and to `glimpse provide --config-dir` (the file path: the reload).
#
# Providers' service names are <product>--<env>--<job>; narrow the prefix ""
# to your products (e.g. service_prefix "shop--") to keep a host from
# registering another team's jobs.

# Register and deregister the providers' services, pass TTL checks.
service_prefix "" {
  policy = "write"
}

# Read the topology of every node (catalog, health).
node_prefix "" {
  policy = "read"
}

# agent/self, agent/services, and PUT agent/reload for the file path.
agent_prefix "" {
  policy = "write"
}
