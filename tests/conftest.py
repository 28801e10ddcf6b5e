"""
Shared pytest fixtures for the Glimpse tests.
"""

import pytest

from glimpse.dev.cluster import start_zone, start_zones
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


# Production-shaped zones (glimpse.dev.cluster): 3 real servers and a client
# agent with Consul's default settings each.  A test that kills agents may
# leave them down: the ready_* fixtures bring them back before the next test.


@pytest.fixture(scope="module")
def consul_cluster(consul_binary, tmp_path_factory):
    """
    A :class:`glimpse.dev.cluster.Zone` ``ams``: 3 servers, 1 client agent
    (``.client``, where Glimpse points); shared by one test module, torn
    down after it.
    """
    with start_zone(consul_binary, "ams",
                    workdir=str(tmp_path_factory.mktemp("cluster"))) as zone:
        yield zone


@pytest.fixture
def ready_cluster(consul_cluster):
    """
    :func:`consul_cluster`, with every agent an earlier test killed or
    stopped started again, and ready.
    """
    consul_cluster.up()
    return consul_cluster


@pytest.fixture(scope="module")
def consul_cluster_pair(consul_binary, tmp_path_factory):
    """
    Two WAN-joined zones, ``ams`` and ``fra`` (a
    :class:`glimpse.dev.cluster.Federation`: ``ams, fra = consul_cluster_pair``),
    each 3 servers and 1 client agent that lists both datacenters; shared by
    one test module, torn down after it.
    """
    with start_zones(consul_binary, ("ams", "fra"),
                     workdir=str(tmp_path_factory.mktemp("cluster-pair"))) as federation:
        yield federation


@pytest.fixture
def ready_cluster_pair(consul_cluster_pair):
    """
    :func:`consul_cluster_pair`, with every agent an earlier test killed or
    stopped started again, and both zones ready (and seeing each other).
    """
    consul_cluster_pair.up()
    return consul_cluster_pair


# ---------------------------------------------------------------------------
# End of the Consul dev agent and cluster fixtures.
# ---------------------------------------------------------------------------
