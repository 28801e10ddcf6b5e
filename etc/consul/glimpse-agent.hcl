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

# Glimpse holds at most --consul-max-conns (64) connections to this agent,
# however many jobs are in use (docs/scale.md): Consul's default of 200 per
# client address leaves room for everything else on the host.
#
# Glimpse reads the jobs it does not watch with ?cached, which this agent
# answers from its streaming views (one subscription per service to a
# server, no RPC per read). It is the default on Consul 1.14; said here so
# that nobody turns it off by accident (servers need rpc.enable_streaming,
# also their default).
use_streaming_backend = true

# Services come from providers as HTTP and TCP checks, never as scripts: a
# provider's state must not be able to run commands on the host.
enable_script_checks = false
enable_local_script_checks = false

# Consul's own DNS, if used, applies the same health rule as Glimpse.
dns_config {
  only_passing = true
}
