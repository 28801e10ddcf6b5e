"""
The ``glimpse`` CLI against a live Glimpse over a real Consul: what an
operator reads, what a script gets with --json, and the exit codes.
"""

import io
import json
import os
import subprocess
import sys

import pytest

from glimpse.cli import main
from glimpse.dev.registrations import register
from glimpse.dev.twistd import REPO, start_glimpse

from support import wait_until

ZONE = "glimpse.test"
WEB = "http.web.prod.shop.ams"


@pytest.fixture(scope="module")
def glimpse(consul, tmp_path_factory):
    """
    A Glimpse over a Consul with shop/prod/web: web-1 passing, web-2 failing.
    """
    register(consul.url, "web", "web-1", "http", 8080, "127.0.13.1")
    register(consul.url, "web", "web-2", "http", 8080, "127.0.13.2", "critical")
    g = start_glimpse(consul.url, ZONE, workdir=str(tmp_path_factory.mktemp("glimpse")))
    wait_until(lambda: len(g.get(f"/v1/lookup/{WEB}")[1].get("instances", ())) == 2,
               what="the view")
    yield g
    g.stop()


def run(*argv):
    """
    ``(exit code, stdout, stderr)`` of the CLI, in this process.
    """
    out, err = io.StringIO(), io.StringIO()
    code = main(list(argv), out, err)
    return code, out.getvalue(), err.getvalue()


def test_lookup_prints_a_table_and_exits_0(glimpse):
    """
    ``glimpse lookup`` prints one row per instance with its health and
    failing checks.
    """
    code, out, _ = run("--agent", glimpse.url, "lookup", WEB)
    assert code == 0
    lines = out.splitlines()
    assert lines[0].split()[:4] == ["INSTANCE", "SERVICE", "NODE", "IP"]
    web2 = next(line for line in lines if line.startswith("web-2"))
    assert "critical" in web2 and "ttl=critical" in web2


def test_lookup_json_and_healthy(glimpse):
    """
    ``--json`` prints the agent's answer; ``--healthy`` keeps what DNS
    serves.  Options work after the subcommand too.
    """
    code, out, _ = run("lookup", WEB, "--healthy", "--json", "--agent", glimpse.url)
    assert code == 0
    assert [i["instance"] for i in json.loads(out)["instances"]] == ["web-1"]


def test_not_found_exits_1_with_the_reason(glimpse):
    """
    An address that does not exist exits 1 and says what to check.
    """
    code, _, err = run("--agent", glimpse.url, "lookup", "http.nope.prod.shop.ams")
    assert code == 1 and "no address" in err and "/v1/topology" in err


def test_usage_errors_exit_2():
    """
    A missing argument or an unknown command exits 2 with usage.
    """
    assert run("lookup")[0] == 2
    assert run("frobnicate")[0] == 2


def test_unreachable_agent_exits_3():
    """
    An agent that does not answer exits 3, naming the URL tried.
    """
    code, _, err = run("--agent", "http://127.0.0.1:9", "status")
    assert code == 3 and "127.0.0.1:9" in err


def test_topology_explain_and_status(glimpse):
    """
    ``topology`` prints counts per child, ``explain`` the deciding rule per
    instance, ``status`` whether the agent serves.
    """
    code, out, _ = run("--agent", glimpse.url, "topology", "ams/shop/prod")
    assert code == 0
    web = next(line for line in out.splitlines() if line.startswith("web"))
    assert web.split()[1:] == ["2", "1", "0", "1"]
    code, out, _ = run("--agent", glimpse.url, "topology", "ams/shop/prod/web")
    assert code == 0 and "web-1" in out
    code, out, _ = run("--agent", glimpse.url, "explain", WEB)
    assert code == 0
    assert "every check passes" in out and "check 'ttl' is critical" in out
    code, out, _ = run("--agent", glimpse.url, "status")
    assert code == 0 and out.startswith("serving: yes")


def test_watch_prints_the_snapshot(glimpse):
    """
    ``glimpse watch --count 1`` prints the current instances and exits.
    """
    code, out, _ = run("--agent", glimpse.url, "watch", WEB, "--count", "1")
    assert code == 0
    assert out.startswith("snapshot: 2 instance(s)")
    code, out, _ = run("--agent", glimpse.url, "watch", WEB, "--count", "1", "--json")
    assert json.loads(out.splitlines()[0])["event"] == "snapshot"


def test_watch_of_an_address_yet_to_exist_says_it_waits(glimpse):
    """
    ``glimpse watch`` on an address that does not exist says so and that it
    waits for it, instead of failing.
    """
    code, out, _ = run("--agent", glimpse.url, "watch", "http.later.prod.shop.ams",
                       "--count", "1")
    assert code == 0
    assert out.startswith("not there (yet): no address 'http.later.prod.shop.ams'")
    assert "waiting for it" in out


def test_provide_puts_the_state_and_reports_changes(glimpse, tmp_path):
    """
    ``glimpse provide`` applies a state file through the agent and says
    what changed; an invalid state exits 4 listing the problems.
    """
    state = tmp_path / "state.json"
    state.write_text(json.dumps({"instances": [{
        "product": "shop", "env": "prod", "job": "cli", "instance": "c-1",
        "address": "127.0.13.9", "ports": {"http": 8080}}]}))
    code, out, _ = run("--agent", glimpse.url, "provide", "--provider", "cli-test", str(state))
    assert code == 0 and out.startswith("applied: 1 added")
    state.write_text(json.dumps({"instances": [{"product": "shop"}]}))
    code, _, err = run("--agent", glimpse.url, "provide", "--provider", "cli-test", str(state))
    assert code == 4 and "invalid provider state" in err
    code, _, err = run("provide", "--provider", "x", str(tmp_path / "missing.json"))
    assert code == 2


def test_console_script_exit_code_and_help():
    """
    The entry point exits with main's code; --help lists every command and
    the exit codes.
    """
    env = dict(os.environ, PYTHONPATH=str(REPO))
    result = subprocess.run([sys.executable, "-m", "glimpse.cli", "--help"],
                            capture_output=True, text=True, env=env, timeout=30, check=False)
    assert result.returncode == 0
    for word in ("lookup", "topology", "watch", "explain", "provide", "status", "exit codes"):
        assert word in result.stdout
    result = subprocess.run([sys.executable, "-m", "glimpse.cli", "--agent",
                             "http://127.0.0.1:9", "status"],
                            capture_output=True, text=True, env=env, timeout=30, check=False)
    assert result.returncode == 3


def test_provide_through_the_config_dir(consul, glimpse, tmp_path):
    """
    ``glimpse provide --config-dir`` puts the state in the Consul agent's
    config directory and reloads it, with no Glimpse agent involved; the
    instances then show in lookups.
    """
    state = tmp_path / "state.json"
    state.write_text(json.dumps({"instances": [{
        "product": "shop", "env": "prod", "job": "filecli", "instance": "f-1",
        "address": "127.0.13.20", "ports": {"http": 8080}}]}))
    code, _, err = run("provide", "--provider", "file-cli", str(state),
                         "--config-dir", str(consul.config_dir), "--consul", consul.url)
    assert code == 0, err
    wait_until(lambda: glimpse.get("/v1/lookup/http.filecli.prod.shop.ams")[0] == 200,
               what="the file provider's instance")
