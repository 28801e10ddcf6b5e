"""
Shared pytest fixtures for the Glimpse tests.
"""

import pytest

from glimpse.dev.consul import find_consul, start_dev_consul

# ---------------------------------------------------------------------------
# Consul dev agents (glimpse.dev.consul).  Real agents on free loopback ports;
# a missing Consul is an error with instructions, never a skip, so that a
# green run always means the Consul tests really ran.
# ---------------------------------------------------------------------------


@pytest.fixture(scope="session")
def consul_binary():
    """
    Path of the consul binary: ``$GLIMPSE_CONSUL``, or the one
    ``tools/build-consul.sh`` builds once and caches.  Errors (with the
    :class:`glimpse.dev.consul.ConsulNotFound` message) if there is none.
    """
    return find_consul()


@pytest.fixture(scope="module")
def consul(consul_binary, tmp_path_factory):
    """
    A running dev agent of datacenter ``ams``, shared by one test module and
    stopped after it.
    """
    with start_dev_consul(
            consul_binary, "ams", workdir=str(tmp_path_factory.mktemp("consul"))) as agent:
        yield agent


@pytest.fixture(scope="module")
def consul_pair(consul_binary, tmp_path_factory):
    """
    Two WAN-joined dev agents, ``(ams, fra)``, that already see each other in
    ``/v1/catalog/datacenters``; shared by one test module and stopped after it.
    """
    workdir = str(tmp_path_factory.mktemp("consul-pair"))
    with (start_dev_consul(consul_binary, "ams", workdir=workdir) as ams,
          start_dev_consul(consul_binary, "fra", join_wan=ams, workdir=workdir) as fra):
        yield ams, fra


# ---------------------------------------------------------------------------
# End of the Consul dev agent fixtures.
# ---------------------------------------------------------------------------
