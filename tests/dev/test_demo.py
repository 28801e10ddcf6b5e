"""
Tests for :mod:`glimpse.dev.demo` (``make run``) against production-shaped
Consul: ``make run CLUSTER=1``.
"""

import json
import os
import re
import signal
import subprocess
import sys
import urllib.request
from pathlib import Path

import pytest
from twisted.names import dns

from glimpse.dev.consul import free_ports
from glimpse.dev.demo import main

from support import ask, wait_until

pytestmark = pytest.mark.consul

REPO = Path(__file__).resolve().parents[2]


def get_json(url):
    """
    GET ``url`` and decode its JSON body.
    """
    with urllib.request.urlopen(url, timeout=5) as response:
        return json.load(response)


def test_cluster_and_consul_exclude_each_other(capsys):
    """
    ``--cluster`` starts its own Consul: asking for another one as well is
    a usage error that says what to drop.
    """
    with pytest.raises(SystemExit) as caught:
        main(["--cluster", "--consul", "127.0.0.1:8500"])
    assert caught.value.code == 2
    assert "drop --consul" in capsys.readouterr().err


def test_make_run_cluster_serves_through_client_agent(consul_binary, tmp_path):
    """
    ``make run CLUSTER=1`` starts 3 servers and a client agent, seeds the
    demo through Glimpse onto that client agent, answers DNS, and on
    SIGTERM stops Glimpse and every Consul agent and exits 0.
    """
    dns_port, http_port = free_ports(2)
    out = tmp_path / "out"
    env = dict(os.environ, GLIMPSE_CONSUL=consul_binary,
               PYTHONPATH=os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]))
    with open(out, "wb") as sink:  # A file, not a pipe: Glimpse logs on and nobody reads.
        process = subprocess.Popen(
            [sys.executable, "-m", "glimpse.dev.demo", "--cluster", f"--dns-port={dns_port}",
             f"--http-port={http_port}", f"--workdir={tmp_path / 'run'}"],
            stdout=sink, stderr=subprocess.STDOUT, env=env)
    try:
        wait_until(lambda: "Glimpse is running" in out.read_text() or process.poll() is not None,
                   timeout=90, what="the demo's tips")
        text = out.read_text()
        assert process.poll() is None, text
        zone = re.search(r"zone ams: Glimpse uses client agent ams-c1 at (\S+); servers (.*)",
                         text)
        assert zone, text
        client_url = zone.group(1)
        pids = [int(pid) for pid in re.findall(r"ams-s\d pid (\d+)", zone.group(2))]
        assert len(pids) == 3
        assert get_json(f"{client_url}/v1/agent/self")["Config"]["Server"] is False
        assert any(sid.startswith("demo:") for sid in get_json(f"{client_url}/v1/agent/services"))
        def web_ips():
            answer = ask(("127.0.0.1", dns_port), "http.web.prod.shop.ams.glimpse.test", dns.A)
            return sorted(r.payload.dottedQuad() for r in answer.answers)
        # Their checks pass once Consul has run them: wait.
        assert wait_until(lambda: web_ips() == ["127.0.10.1", "127.0.10.2"], timeout=30,
                          what="web-1 and web-2 in DNS")
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=30) == 0
        for pid in pids:
            with pytest.raises(ProcessLookupError):
                os.kill(pid, 0)
    finally:
        if process.poll() is None:
            # SIGTERM first: a SIGKILL would leave its agents running.
            process.terminate()
            try:
                process.wait(30)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
