"""
A real Prometheus (Debian's ``prometheus`` package) discovers its targets
through a real Glimpse over a real Consul, with the shipped
``etc/prometheus/glimpse-sd.yml`` pointed at the test's Glimpse: it lists
exactly the healthy instances, with the labels the example keeps, and
drops one whose check fails within its refresh interval.
"""

import json
import re
import shutil
import subprocess
import urllib.error
import urllib.request

import pytest

from glimpse.dev.consul import free_ports
from glimpse.dev.twistd import REPO, start_glimpse

from support import wait_until

ZONE = "glimpse.test"
SHIPPED = REPO / "etc" / "prometheus" / "glimpse-sd.yml"


def program(name):
    """
    The path of a program of Debian's prometheus package.
    """
    found = shutil.which(name)
    assert found, f"{name} is not installed: apt-get install prometheus (or make debs)"
    return found


def promtool_check(path):
    """
    Run ``promtool check config`` on a file; fail the test with its output
    if it refuses it.
    """
    result = subprocess.run([program("promtool"), "check", "config", str(path)],
                            capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stdout + result.stderr


def get_json(url):
    """
    A JSON answer, or ``None`` while nothing answers.
    """
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return json.load(response)
    except (urllib.error.URLError, OSError):
        return None


@pytest.fixture(scope="module")
def glimpse(consul, tmp_path_factory):
    """
    One Glimpse on the module's agent.
    """
    g = start_glimpse(consul.url, ZONE, workdir=str(tmp_path_factory.mktemp("glimpse")))
    yield g
    g.stop()


@pytest.fixture
def prometheus(glimpse, tmp_path):
    """
    A Prometheus on a free loopback port, running the shipped example with
    its Glimpse URL pointed at the test's Glimpse and a 2 s refresh
    interval; the generated config passes ``promtool check config``.
    """
    config = SHIPPED.read_text()
    config, n = re.subn(r"url: http://127\.0\.0\.1:8411/",
                        f"url: http://127.0.0.1:{glimpse.http_port}/", config)
    assert n == 1
    config, n = re.subn(r"refresh_interval: 15s", "refresh_interval: 2s", config)
    assert n == 1
    path = tmp_path / "prometheus.yml"
    path.write_text(config)
    promtool_check(path)
    (port,) = free_ports(1)
    with open(tmp_path / "prometheus.log", "wb") as log:
        process = subprocess.Popen(
            [program("prometheus"), f"--config.file={path}",
             f"--storage.tsdb.path={tmp_path / 'data'}",
             f"--web.listen-address=127.0.0.1:{port}", "--log.level=warn"],
            stdout=log, stderr=subprocess.STDOUT, cwd=tmp_path)
    url = f"http://127.0.0.1:{port}"
    try:
        def ready():
            assert process.poll() is None, (tmp_path / "prometheus.log").read_text()
            try:
                with urllib.request.urlopen(f"{url}/-/ready", timeout=2) as response:
                    return response.status == 200
            except (urllib.error.URLError, OSError):
                return False
        wait_until(ready, timeout=60, what="Prometheus to be ready")
        yield url
    finally:
        process.terminate()
        try:
            process.wait(20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def instance(name, ip, **extra):
    """
    An instance of shop/prod/node with a named port ``metrics`` and a TTL
    check ``alive``.
    """
    return {"product": "shop", "env": "prod", "job": "node", "instance": name,
            "address": ip, "ports": {"metrics": 9100, "http": 8080},
            "checks": [{"ttl": "10m", "name": "alive"}], "meta": {"version": "2.1"}, **extra}


def active_targets(prometheus):
    """
    ``{address: labels}`` of Prometheus' active targets, once it has any
    answer.
    """
    body = get_json(f"{prometheus}/api/v1/targets?state=active")
    if body is None:
        return None
    return {t["discoveredLabels"]["__address__"]: t["labels"]
            for t in body["data"]["activeTargets"]}


def test_prometheus_scrapes_exactly_the_healthy_instances(glimpse, prometheus):
    """
    Prometheus' targets are the healthy instances' metrics ports: not the
    one whose check never passed, not the draining one, not the other named
    port.  They carry the labels the shipped example keeps (job as Glimpse
    names it, zone, instance, version).  When one instance's check fails,
    Prometheus drops it within its refresh interval, and takes it back
    when it passes again.
    """
    state = {"instances": [instance("n-1", "127.0.12.1"), instance("n-2", "127.0.12.2"),
                           instance("n-3", "127.0.12.3"), instance("n-4", "127.0.12.4"),
                           instance("n-5", "127.0.12.5", drain=True)]}
    status, body = glimpse.put("/v1/providers/prom", state)
    assert status == 200, body
    for name in ("n-1", "n-2", "n-3", "n-5"):
        status, body = glimpse.put(f"/v1/providers/prom/instances/{name}/checks/alive/pass",
                                   None)
        assert status == 200, body
    healthy = {"127.0.12.1:9100", "127.0.12.2:9100", "127.0.12.3:9100"}

    def listed(expected):
        targets = active_targets(prometheus)
        return targets if targets is not None and set(targets) == expected else None

    targets = wait_until(lambda: listed(healthy), timeout=60,
                         what="Prometheus to list the healthy three")
    labels = targets["127.0.12.1:9100"]
    assert {k: labels[k] for k in ("job", "zone", "glimpse_instance", "version", "instance")} \
        == {"job": "shop/prod/node", "zone": "ams", "glimpse_instance": "n-1",
            "version": "2.1", "instance": "127.0.12.1:9100"}
    assert not any(k.startswith("__meta_") for k in labels)

    status, _ = glimpse.put("/v1/providers/prom/instances/n-2/checks/alive/fail", None)
    assert status == 200
    wait_until(lambda: listed(healthy - {"127.0.12.2:9100"}), timeout=30,
               what="Prometheus to drop n-2 after its check failed")
    status, _ = glimpse.put("/v1/providers/prom/instances/n-2/checks/alive/pass", None)
    assert status == 200
    wait_until(lambda: listed(healthy), timeout=30, what="Prometheus to take n-2 back")
