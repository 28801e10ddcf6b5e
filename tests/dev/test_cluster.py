"""
Tests for :mod:`glimpse.dev.cluster`: production-shaped Consul zones (real
servers, a client agent with Consul's defaults) and the faults that the
scale, leader-loss and quorum-loss tests stand on.
"""

import os
import socket
from pathlib import Path

import pytest

from glimpse.dev.cluster import start_zone
from glimpse.dev.consul import ConsulStartError, free_ports
from glimpse.dev.registrations import register
from glimpse.dev.twistd import http_json

from support import wait_until

pytestmark = pytest.mark.consul


def values_of(tree, key):
    """
    Every value of ``key`` anywhere in the decoded JSON ``tree``.
    """
    if isinstance(tree, dict):
        found = [tree[key]] if key in tree else []
        return found + [v for value in tree.values() for v in values_of(value, key)]
    if isinstance(tree, list):
        return [v for value in tree for v in values_of(value, key)]
    return []


def answers(agent, path="agent/self"):
    """
    Whether ``agent``'s HTTP API answers ``path`` with a 200.
    """
    try:
        agent.get_json(path)
    except OSError:
        return False
    return True


def get_or_none(agent, path):
    """
    ``agent.get_json(path)``, or ``None`` if it fails: until Serf notices a
    killed server (some seconds), a client may still send it a request and
    answer 500 once, then use another server.
    """
    try:
        return agent.get_json(path)
    except OSError:
        return None


def members(agent):
    """
    ``{node name: serf status}`` of the LAN members ``agent`` knows
    (1 alive, 3 left, 4 failed).
    """
    return {m["Name"]: m["Status"] for m in agent.get_json("agent/members")}


def kv_put(agent, key, value, timeout=30.0):
    """
    ``PUT /v1/kv/<key>`` on ``agent``: ``(status, body)``.
    """
    return http_json("PUT", f"{agent.url}/v1/kv/{key}", value, timeout=timeout)


def processes_mentioning(text):
    """
    PIDs of the running processes whose command line contains ``text``.
    """
    found = []
    for entry in Path("/proc").iterdir():
        try:
            if entry.name.isdigit() and text in (entry / "cmdline").read_bytes().decode(
                    errors="replace"):
                found.append(int(entry.name))
        except OSError:
            continue
    return found


def test_zone_has_servers_leader_and_default_client(ready_cluster):
    """
    A zone is three real servers (not dev mode) that all name the same
    leader, and a client agent with Consul's default limits: 200 HTTP
    connections per client IP, the limit Glimpse's watches must live with.
    """
    zone = ready_cluster
    leader = zone.leader()
    assert leader in zone.servers
    assert {s.get_json("status/leader") for s in zone.servers} == {leader.rpc_addr}
    for server in zone.servers:
        own = server.get_json("agent/self")
        assert own["Config"]["Server"] is True
        assert values_of(own["DebugConfig"], "DevMode") == [False]
    client = zone.client.get_json("agent/self")
    assert client["Config"]["Server"] is False
    assert values_of(client["DebugConfig"], "HTTPMaxConnsPerClient") == [200]
    assert members(zone.client) == {"ams-s1": 1, "ams-s2": 1, "ams-s3": 1, "ams-c1": 1}
    assert zone.client.get_json("catalog/datacenters") == ["ams"]


def test_service_registered_on_client_reaches_every_server(ready_cluster):
    """
    A service registered on the client agent is in the catalog, and every
    server has it in its own copy (a stale read answers from that server).
    """
    zone = ready_cluster
    register(zone.client.url, "catalogued", "cat-1")
    name = "shop--prod--catalogued"
    for server in zone.servers:
        nodes = wait_until(lambda s=server: s.get_json(f"catalog/service/{name}?stale"),
                           what=f"{name} in {server.node}'s catalog")
        assert [n["Node"] for n in nodes] == ["ams-c1"]
    assert name in zone.client.get_json("catalog/services")


def test_leader_killed_new_leader_and_catalog_answers(ready_cluster):
    """
    SIGKILLing the leader: the two others elect a new leader within the
    deadline, the client's catalog still answers, and the killed server
    comes back as a follower of the new leader.
    """
    zone = ready_cluster
    old, new = zone.kill_leader(timeout=20)
    assert new is not old and not old.running and new.running
    assert wait_until(lambda: get_or_none(zone.client, "status/leader") == new.rpc_addr,
                      timeout=10, what="the client to name the new leader")
    assert "consul" in wait_until(lambda: get_or_none(zone.client, "catalog/services"),
                                  timeout=10, what="the client's catalog")
    zone.up()
    leader = zone.wait_for_leader(timeout=10)
    assert old.running and old.get_json("status/leader") == leader.rpc_addr


def test_quorum_lost_then_back(ready_cluster):
    """
    With 2 of 3 servers killed there is no leader and a write through the
    client fails (after Consul's 7 s rpc_hold_timeout), while stale reads
    still answer; once they are back, a leader is elected and writes work.
    """
    zone = ready_cluster
    assert kv_put(zone.client, "quorum", "before") == (200, True)
    killed = zone.lose_quorum(timeout=20)
    assert len(killed) == 2 and not any(s.running for s in killed)
    assert zone.leader() is None
    assert wait_until(lambda: get_or_none(zone.client, "status/leader") == "",
                      timeout=10, what="the client to say there is no leader")
    stale = wait_until(lambda: get_or_none(zone.client, "catalog/services?stale"),
                       timeout=10, what="a stale read on the client")
    assert "consul" in stale
    status, body = kv_put(zone.client, "quorum", "during")
    assert status == 500 and "No cluster leader" in body
    zone.up(timeout=30)
    assert zone.wait_for_leader(timeout=10) in zone.servers
    assert all(s.running for s in killed)
    assert kv_put(zone.client, "quorum", "after") == (200, True)
    assert zone.client.get_json("kv/quorum")[0]["Key"] == "quorum"


def test_client_killed_and_restarted_keeps_its_services(ready_cluster):
    """
    A client agent killed like a crash stops answering; restarted on its
    port and data dir it answers again, and the services registered on it
    before are still there.
    """
    zone = ready_cluster
    register(zone.client.url, "survivor", "sv-1")
    zone.client.kill()
    assert not answers(zone.client)
    zone.up()
    assert "t:shop--prod--survivor:sv-1:http" in zone.client.get_json("agent/services")
    assert wait_until(lambda: "shop--prod--survivor" in zone.client.get_json("catalog/services"),
                      what="the service back in the catalog")


def test_client_stopped_leaves_gracefully(ready_cluster):
    """
    A client agent stopped with SIGTERM leaves the cluster (the servers
    list it as left, not failed), and comes back as a member.
    """
    zone = ready_cluster
    zone.client.terminate()
    assert wait_until(lambda: members(zone.servers[0])["ams-c1"] == 3,
                      what="ams-c1 listed as left")
    zone.up()
    assert members(zone.servers[0])["ams-c1"] == 1


def test_whole_zone_down_and_up_keeps_its_data(ready_cluster):
    """
    Every agent of the zone killed at once: nothing answers; brought back
    on the same data dirs, it elects a leader and still has its data.
    """
    zone = ready_cluster
    assert kv_put(zone.client, "kept", "yes") == (200, True)
    zone.down(kill=True)
    assert not any(answers(a) for a in zone.agents)
    zone.up(timeout=30)
    assert zone.wait_for_leader(timeout=10) in zone.servers
    assert zone.client.get_json("kv/kept")[0]["Key"] == "kept"


def test_two_zones_see_each_other(ready_cluster_pair):
    """
    Two WAN-joined zones: each client lists both datacenters and answers
    for the other one (``?dc=``).
    """
    ams, fra = ready_cluster_pair
    register(fra.client.url, "abroad", "ab-1")
    for zone in ready_cluster_pair:
        assert zone.client.get_json("catalog/datacenters") in (["ams", "fra"], ["fra", "ams"])
    assert wait_until(
        lambda: "shop--prod--abroad" in ams.client.get_json("catalog/services?dc=fra"),
        what="fra's service through the ams client")
    assert "shop--prod--abroad" not in ams.client.get_json("catalog/services")
    assert ready_cluster_pair["fra"] is fra


def test_zone_down_other_zone_answers_then_back(ready_cluster_pair):
    """
    With all of fra down, ams still answers for itself and fails for fra;
    brought back, fra answers through ams again.
    """
    ams, fra = ready_cluster_pair
    fra.down(kill=True)
    assert "consul" in ams.client.get_json("catalog/services")
    status, body = http_json("GET", f"{ams.client.url}/v1/catalog/services?dc=fra", timeout=15)
    assert status == 500, body
    ready_cluster_pair.up(timeout=30)
    assert "consul" in wait_until(lambda: get_or_none(ams.client, "catalog/services?dc=fra"),
                                  timeout=10, what="fra's catalog through ams")


def test_five_servers_lose_quorum_at_the_third_kill(consul_binary, tmp_path):
    """
    A zone of five servers keeps a leader with two of them killed and
    loses it with the third, and all five come back.
    """
    with start_zone(consul_binary, "fra", servers=5, workdir=str(tmp_path)) as zone:
        assert zone.quorum == 3
        first = zone.kill_servers(2, timeout=20)
        leader = zone.leader()
        assert leader is not None and leader not in first
        third = zone.kill_servers(1, timeout=20)
        assert zone.leader() is None
        assert wait_until(lambda: get_or_none(zone.client, "status/leader") == "",
                          timeout=10, what="the client to say there is no leader")
        zone.up(timeout=30)
        assert all(s.running for s in first + third)
        assert zone.wait_for_leader(timeout=10) in zone.servers


def test_teardown_leaves_nothing(consul_binary, tmp_path):
    """
    Leaving the ``with`` block, even on an error, kills every agent's
    process group, frees its ports and removes every file.
    """
    zone = start_zone(consul_binary, "lon", servers=1, workdir=str(tmp_path))
    assert zone.leader() is zone.servers[0]
    with pytest.raises(RuntimeError, match="a failing test"), zone:
        raise RuntimeError("a failing test")
    for agent in zone.agents:
        with pytest.raises(ProcessLookupError):
            os.killpg(agent.process.pid, 0)
        assert not answers(agent)
    assert list(tmp_path.iterdir()) == []
    assert processes_mentioning(str(tmp_path)) == []


def test_start_failure_shows_consul_error_and_cleans_up(consul_binary, tmp_path):
    """
    A client agent that cannot start fails the start with Consul's own
    error text, and the servers already started are gone too.
    """
    with pytest.raises(ConsulStartError) as caught:
        start_zone(consul_binary, "nyc", servers=1, client_hcl=["bogus {"],
                   workdir=str(tmp_path), timeout=20)
    assert "nyc-c1 exited" in str(caught.value)
    assert "failed to parse" in str(caught.value)
    assert list(tmp_path.iterdir()) == []
    assert processes_mentioning(str(tmp_path)) == []


def test_port_taken_before_start_gets_fresh_ports(consul_binary, tmp_path):
    """
    An agent whose port another process took between choosing and binding
    it is started again on fresh ports, and the zone comes up.
    """
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", 0))
        squatter.listen()
        taken = squatter.getsockname()[1]
        handed = []

        def allocate(n):
            ports = free_ports(n)
            if not handed:
                ports[0] = taken  # The first server's HTTP port.
            handed.append(ports)
            return ports

        with start_zone(consul_binary, "ams", servers=1, workdir=str(tmp_path),
                        allocate_ports=allocate) as zone:
            assert zone.servers[0].ports.http != taken
            assert "address already in use" in zone.servers[0].log_tail(10_000)
            assert zone.leader() is zone.servers[0]
