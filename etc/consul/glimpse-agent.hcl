# Consul agent fragment for a host running Glimpse: install as
# /etc/consul.d/glimpse-agent.hcl (docs/deployment.md, docs/providers.md).
#
# The providers' config directory (`glimpse provide --config-dir`) cannot be
# named here: Consul takes -config-dir only on its command line.  The
# systemd drop-in glimpse-providers.conf beside this file adds
# /etc/consul.d/glimpse-providers as a second -config-dir.
#
# ACL token hint: with ACLs on, give Glimpse and `glimpse provide` a token of
# the policy in glimpse-acl-policy.hcl (service write for the providers'
# services, node read, agent write for the reload), in a file passed with
# --consul-token-file; never the agent's own or a management token.

# Every blocking query Glimpse holds (one per zone, one per job in use) is
# an HTTP connection from 127.0.0.1; Consul's default of 200 per client
# address would start answering 429 on a busy host.
limits {
  http_max_conns_per_client = 1000
}

# Services come from providers as HTTP and TCP checks, never as scripts: a
# provider's state must not be able to run commands on the host.
enable_script_checks = false
enable_local_script_checks = false

# Consul's own DNS, if used, applies the same health rule as Glimpse.
dns_config {
  only_passing = true
}
