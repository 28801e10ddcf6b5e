"""
Tests for :mod:`glimpse.dev.consul`: the throw-away Consul agents that the
integration tests, ``make run`` and the benchmarks stand on.
"""

import json
import os
import select
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from twisted.names import dns

from glimpse.dev.consul import ConsulStartError, free_ports, start_dev_consul

pytestmark = pytest.mark.consul

REPO = Path(__file__).resolve().parents[2]


def wait_until(condition, timeout=15.0, what="the condition"):
    """
    Poll ``condition`` every 0.05 s until it returns something true and
    return that; fail after ``timeout`` seconds, naming ``what``.
    """
    deadline = time.monotonic() + timeout
    while True:
        result = condition()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.05)


def get_json(url, token=None):
    """
    GET ``url`` and decode its JSON body, sending ``token`` as the ACL token.
    """
    request = urllib.request.Request(url, headers={"X-Consul-Token": token} if token else {})
    with urllib.request.urlopen(request, timeout=5) as response:
        return json.load(response)


def answers_http(url):
    """
    Whether anything answers HTTP on ``url`` at all (any status counts).
    """
    try:
        urllib.request.urlopen(url + "/v1/status/leader", timeout=2).close()
    except urllib.error.HTTPError:
        return True
    except OSError:
        return False
    return True


def dns_a(server, name):
    """
    Ask ``server`` (``(host, port)``) over UDP for the A records of ``name``;
    return the addresses, or ``None`` if no answer came within a second.
    """
    query = dns.Message(id=4711, recDes=0)
    query.queries = [dns.Query(name, dns.A, dns.IN)]
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.settimeout(1.0)
        sock.sendto(query.toStr(), server)
        try:
            data = sock.recv(4096)
        except TimeoutError:
            return None
    response = dns.Message()
    response.fromStr(data)
    return [r.payload.dottedQuad() for r in response.answers if r.type == dns.A]


def port_is_free(port):
    """
    Whether a server could bind ``port`` on loopback again, on TCP (with
    ``SO_REUSEADDR``, as servers do, so TIME_WAIT does not count) and UDP.
    """
    with socket.socket() as tcp, socket.socket(type=socket.SOCK_DGRAM) as udp:
        tcp.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            tcp.bind(("127.0.0.1", port))
            tcp.listen()
            udp.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def test_agent_has_leader_and_answers_http(consul):
    """
    A started agent has elected itself leader and answers its HTTP API on
    the port it reports, as the datacenter and node it was given.
    """
    assert consul.url == f"http://127.0.0.1:{consul.ports.http}"
    assert get_json(consul.url + "/v1/status/leader")
    config = get_json(consul.url + "/v1/agent/self")["Config"]
    assert (config["Datacenter"], config["NodeName"]) == ("ams", consul.node)


def test_dns_answers_consul_service(consul):
    """
    The agent's DNS port answers ``consul.service.consul`` with the
    agent's loopback address.
    """
    assert consul.dns == ("127.0.0.1", consul.ports.dns)
    addresses = wait_until(lambda: dns_a(consul.dns, b"consul.service.consul"),
                           what="an A record for consul.service.consul")
    assert addresses == ["127.0.0.1"]


def test_stop_frees_ports_and_ends_process(consul_binary, tmp_path):
    """
    After stop() the process (group) is gone, every port can be bound
    again, its directory is removed, and a second stop() is harmless.
    """
    agent = start_dev_consul(consul_binary, "lon", workdir=str(tmp_path))
    assert answers_http(agent.url)
    agent.stop()
    assert agent.process.poll() is not None
    with pytest.raises(ProcessLookupError):
        os.killpg(agent.process.pid, 0)
    assert not answers_http(agent.url)
    assert all(port_is_free(port) for port in agent.ports)
    assert not agent.base_dir.exists()
    agent.stop()


def test_free_ports_are_distinct_and_free():
    """
    free_ports() hands out distinct ports that are free for TCP and UDP.
    """
    ports = free_ports(10)
    assert len(set(ports)) == 10
    assert all(port_is_free(port) for port in ports)


def test_two_zones_see_each_other(consul_pair):
    """
    Two WAN-joined agents each list both datacenters.
    """
    for agent in consul_pair:
        assert sorted(get_json(agent.url + "/v1/catalog/datacenters")) == ["ams", "fra"]


def test_start_failure_shows_consul_error(consul_binary, tmp_path):
    """
    An agent that cannot start raises ConsulStartError carrying Consul's
    own error text, and leaves nothing behind.
    """
    with pytest.raises(ConsulStartError) as caught:
        start_dev_consul(consul_binary, extra_hcl=["bogus {"], workdir=str(tmp_path))
    assert "failed to parse" in str(caught.value)
    assert "exited" in str(caught.value)
    assert list(tmp_path.iterdir()) == []


def test_kill_then_restart_on_same_port(consul_binary, tmp_path):
    """
    kill() makes the agent vanish like a crash; restart() brings it back
    on the same HTTP port with a leader.
    """
    with start_dev_consul(consul_binary, "nyc", workdir=str(tmp_path)) as agent:
        agent.kill()
        assert not answers_http(agent.url)
        assert agent.data_dir.exists()
        agent.restart()
        assert get_json(agent.url + "/v1/status/leader")


def test_acl_token_required(consul_binary, tmp_path):
    """
    With acl_token, anonymous requests are denied and the token is accepted.
    """
    token = "8f3e1c9a-6b4d-4e2f-9a1b-0c7d5e3f2a1b"
    with start_dev_consul(consul_binary, "ams", workdir=str(tmp_path), acl_token=token) as agent:
        with pytest.raises(urllib.error.HTTPError) as denied:
            get_json(agent.url + "/v1/agent/self")
        assert denied.value.code == 403
        assert get_json(agent.url + "/v1/agent/self", token)["Config"]["Datacenter"] == "ams"


def read_lines(process, count, timeout):
    """
    Read ``count`` lines from ``process``'s stdout pipe, failing the test if
    they have not all come within ``timeout`` seconds or it exits first.
    """
    deadline = time.monotonic() + timeout
    output = b""
    while output.count(b"\n") < count:
        remaining = deadline - time.monotonic()
        ready, _, _ = select.select([process.stdout], [], [], max(remaining, 0))
        assert ready, f"timed out waiting for {count} lines; got {output!r}"
        chunk = os.read(process.stdout.fileno(), 4096)
        assert chunk, f"exited with {process.wait()} after {output!r}"
        output += chunk
    return output.decode().splitlines()[:count]


def test_main_runs_zones_until_sigterm(consul_binary, tmp_path):
    """
    ``python -m glimpse.dev.consul --zones 3`` prints one line per zone,
    has written the env file by then, serves WAN-joined ams, fra and lon,
    and on SIGTERM stops them and exits 0.
    """
    env_file = tmp_path / "consul.env"
    env = dict(os.environ, GLIMPSE_CONSUL=consul_binary,
               PYTHONPATH=os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]))
    process = subprocess.Popen(
        [sys.executable, "-m", "glimpse.dev.consul", "--zones", "3", "--env-file", str(env_file)],
        stdout=subprocess.PIPE, env=env)
    try:
        lines = [line.split() for line in read_lines(process, 3, timeout=60)]
        assert [line[0] for line in lines] == ["ams", "fra", "lon"]
        urls = [line[1].removeprefix("http=") for line in lines]
        for url in urls:
            assert sorted(get_json(url + "/v1/catalog/datacenters")) == ["ams", "fra", "lon"]
        written = env_file.read_text()
        assert f"CONSUL_HTTP_ADDR={urls[0].removeprefix('http://')}\n" in written
        assert f"CONSUL_HTTP_ADDR_FRA={urls[1].removeprefix('http://')}\n" in written
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=30) == 0
        assert not any(answers_http(url) for url in urls)
    finally:
        if process.poll() is None:
            # SIGTERM first: a SIGKILL would leave its agents running.
            process.terminate()
            try:
                process.wait(30)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
