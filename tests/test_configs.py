"""
The configuration Glimpse ships works as shipped: every file under ``etc/``
is loaded by the program that will read it on a host (Glimpse, unbound,
systemd, Consul, Prometheus), and Glimpse's ``--config`` file is read as documented:
keys are the long options, the command line overrides them.
"""

import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import tomllib
import urllib.error
import urllib.request
import uuid
from pathlib import Path

import pytest
from twisted.python.usage import UsageError

from glimpse.config import ConfigError, config_path, with_config
from glimpse.dev.consul import free_ports, start_dev_consul
from glimpse.dev.twistd import REPO, http_json
from glimpse.tap import Options

from support import wait_until

ETC = REPO / "etc"


def parse(*argv):
    options = Options()
    options.parseOptions(list(argv))
    return options


def write(tmp_path, text, name="glimpse.toml"):
    path = tmp_path / name
    path.write_text(text)
    return path


# Glimpse's own config file.


def test_shipped_glimpse_config_is_parsed_by_glimpse(tmp_path):
    """
    ``etc/glimpse.toml`` is accepted by ``twistd glimpse --config`` and says
    what it claims: every key is an option, and each value is what Glimpse
    then uses (its state-dir is overridden here, as the test cannot write
    /var/lib).
    """
    shipped = ETC / "glimpse.toml"
    table = tomllib.loads(shipped.read_text())
    options = parse(f"--config={shipped}", f"--state-dir={tmp_path}")
    assert table["state-dir"] == "/var/lib/glimpse"
    for key, value in table.items():
        if key != "state-dir":
            assert options[key] == value, key
    assert options["state-dir"] == str(tmp_path)
    assert options["config"] == str(shipped)


def test_config_sets_options_and_command_line_overrides(tmp_path):
    """
    Keys of the config file set the options they name; an option on the
    command line wins over the file, and a command-line ``--http`` replaces
    the file's whole list rather than adding to it.
    """
    path = write(tmp_path, f"""
dns-zone = "Example.Internal."
dns-port = 5353
max-stale = 60
http = ["tcp:9001:interface=127.0.0.1", "tcp:9002:interface=127.0.0.1"]
state-dir = "{tmp_path / 'state'}"
""")
    options = parse("--config", str(path))
    assert (options["dns-zone"], options["dns-port"], options["max-stale"]) == \
        ("example.internal", 5353, 60.0)
    assert options["http"] == ["tcp:9001:interface=127.0.0.1", "tcp:9002:interface=127.0.0.1"]
    options = parse(f"--config={path}", "--dns-port=5454", "--http=tcp:9003:interface=127.0.0.1")
    assert (options["dns-zone"], options["dns-port"]) == ("example.internal", 5454)
    assert options["http"] == ["tcp:9003:interface=127.0.0.1"]
    # Without a config, nothing changes.
    assert parse(f"--state-dir={tmp_path}")["dns-port"] == 8053


@pytest.mark.parametrize(("text", "says"), [
    ('dns-prot = 53\n', "unknown key 'dns-prot'; the keys are the long options: "),
    ('config = "other.toml"\n', "unknown key 'config'"),
    ('dns-port = "many"\n', "dns-port takes a number, e.g. dns-port = 5; not 'many'"),
    ('dns-port = 70000\n', "port number"),
    ('dns-port = true\n', "dns-port takes a string or a number"),
    ('http = [1, 2]\n', "http takes a list of strings"),
    ('max-stale = 0\n', "must be more than 0"),
    ('dns-zone = \n', "not valid TOML"),
])
def test_bad_config_says_what_to_fix(tmp_path, text, says):
    """
    A config file with an unknown key, a value of the wrong kind, a value
    the option refuses, or broken TOML stops Glimpse with a message that
    names the problem.
    """
    path = write(tmp_path, text)
    with pytest.raises(UsageError) as e:
        parse(f"--config={path}", f"--state-dir={tmp_path}")
    assert says in str(e.value)


def test_missing_config_file_is_a_usage_error(tmp_path):
    """
    A ``--config`` path that does not exist is named in the error.
    """
    with pytest.raises(UsageError) as e:
        parse(f"--config={tmp_path}/nope.toml", f"--state-dir={tmp_path}")
    assert f"--config={tmp_path}/nope.toml: cannot read it" in str(e.value)


def test_config_path_is_found_as_getopt_reads_it():
    """
    ``--config=PATH`` and ``--config PATH`` both count, the last one wins,
    and nothing after ``--`` is an option.
    """
    assert config_path(["--dns-port=1", "--config", "a.toml"]) == "a.toml"
    assert config_path(["--config=a.toml", "--config=b.toml"]) == "b.toml"
    assert config_path(["--", "--config=a.toml"]) is None
    assert config_path([]) is None


def test_with_config_puts_the_file_first(tmp_path):
    """
    The file's options come before the command line's, so that getopt lets
    the command line win.
    """
    path = write(tmp_path, 'dns-port = 1\nhttp = "tcp:1"\nflag = true\n')
    argv = [f"--config={path}", "--dns-port=2"]
    assert with_config(argv, ["dns-port", "http"], ["flag"], ["http"]) == \
        ["--dns-port=1", "--http=tcp:1", "--flag", *argv]
    with pytest.raises(ConfigError):
        with_config([f"--config={write(tmp_path, 'flag = 1')}"], [], ["flag"])


# The other programs' files.


def test_shipped_unbound_config_passes_unbound_checkconf(tmp_path):
    """
    ``etc/unbound/glimpse.conf`` is accepted by unbound-checkconf, and it
    keeps unbound closed: listening on loopback and refusing everyone but
    loopback.
    """
    shipped = ETC / "unbound" / "glimpse.conf"
    result = subprocess.run([_program("unbound-checkconf"), str(shipped)],
                            capture_output=True, text=True, cwd=tmp_path, check=False)
    assert result.returncode == 0, result.stdout + result.stderr
    lines = [line.split("#")[0].strip() for line in shipped.read_text().splitlines()]
    assert "interface: 127.0.0.1" in lines
    allowed = {line.split()[1] for line in lines
               if line.startswith("access-control:") and line.split()[-1] == "allow"}
    assert allowed == {"127.0.0.0/8", "::1/128"}
    assert {"access-control: 0.0.0.0/0 refuse", "access-control: ::0/0 refuse"} <= set(lines)


def test_shipped_systemd_unit_passes_systemd_analyze_verify(tmp_path):
    """
    ``etc/systemd/glimpse.service`` passes ``systemd-analyze verify``, runs
    Glimpse in the foreground with its config, and is hardened.  Only the
    install path of twistd is changed to this environment's, since verify
    checks that the program exists.
    """
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        pytest.skip("systemd-analyze is not installed (package systemd)")
    text = (ETC / "systemd" / "glimpse.service").read_text()
    assert "ExecStart=/opt/glimpse/bin/twistd -n " in text
    twistd = Path(sys.executable).with_name("twistd")
    assert twistd.exists(), f"no twistd next to {sys.executable}"
    unit = tmp_path / "glimpse.service"
    unit.write_text(text.replace("/opt/glimpse/bin/twistd", str(twistd)))
    result = subprocess.run([analyze, "verify", str(unit)],
                            capture_output=True, text=True, cwd=tmp_path, check=False)
    assert result.returncode == 0 and "glimpse.service" not in result.stderr, result.stderr
    settings = dict(line.split("=", 1) for line in text.splitlines()
                    if "=" in line and not line.startswith("#"))
    assert settings["DynamicUser"] == "yes" and settings["StateDirectory"] == "glimpse"
    assert settings["NoNewPrivileges"] == "yes" and settings["ProtectSystem"] == "strict"
    assert settings["Restart"] == "on-failure"
    assert "--config=/etc/glimpse/glimpse.toml" in settings["ExecStart"]


def _consul_files():
    # Agent config fragments (consul validate) and ACL policies (rules a
    # server accepts), told apart by name.
    files = sorted(p for p in (ETC / "consul").glob("*") if p.suffix in (".hcl", ".json"))
    policies = [p for p in files if "policy" in p.name]
    return [p for p in files if p not in policies], policies


def test_shipped_unit_command_runs_glimpse_with_the_shipped_config(tmp_path, consul):
    """
    The unit's ExecStart, run as written (only twistd's install path, and
    in the config only Consul's address, the ports and the state directory
    changed for the test), starts a Glimpse that serves.
    """
    unit = (ETC / "systemd" / "glimpse.service").read_text()
    (exec_start,) = [line.split("=", 1)[1] for line in unit.splitlines()
                     if line.startswith("ExecStart=")]
    dns_port, http_port = free_ports(2)
    config = (ETC / "glimpse.toml").read_text()
    for key, value in [("consul", f'"{consul.url}"'), ("dns-port", str(dns_port)),
                       ("http", f'["tcp:{http_port}:interface=127.0.0.1"]'),
                       ("state-dir", f'"{tmp_path / "state"}"')]:
        config, n = re.subn(rf"(?m)^{key} = .*$", f"{key} = {value}", config)
        assert n == 1, key
    (tmp_path / "glimpse.toml").write_text(config)
    argv = shlex.split(exec_start.replace("/etc/glimpse/glimpse.toml",
                                          str(tmp_path / "glimpse.toml")))
    assert argv[0] == "/opt/glimpse/bin/twistd"
    argv[:1] = [sys.executable, "-c", "from twisted.scripts.twistd import run; run()"]
    env = dict(os.environ, PYTHONPATH=str(REPO))
    with open(tmp_path / "glimpse.log", "wb") as log:
        process = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, env=env,
                                   cwd=tmp_path)
    try:
        def serving():
            assert process.poll() is None, (tmp_path / "glimpse.log").read_text()
            try:
                return http_json("GET", f"http://127.0.0.1:{http_port}/v1/status",
                                 timeout=1)[0] == 200
            except OSError:
                return False
        wait_until(serving, what="Glimpse started from the unit's command to serve")
        assert (tmp_path / "state").is_dir()
    finally:
        process.terminate()
        process.wait(10)


def test_shipped_consul_fragment_passes_consul_validate(tmp_path, consul_binary):
    """
    The Consul agent fragment under ``etc/consul/`` passes ``consul
    validate`` together with the one setting every agent has (its data
    dir).
    """
    fragments, _ = _consul_files()
    assert fragments, "etc/consul/ holds no agent config fragment (.hcl or .json)"
    base = tmp_path / "base.hcl"
    base.write_text(f'data_dir = "{tmp_path / "data"}"\n')
    result = subprocess.run([consul_binary, "validate", str(base), *map(str, fragments)],
                            capture_output=True, text=True, cwd=tmp_path, check=False)
    assert result.returncode == 0, result.stdout + result.stderr


def test_shipped_acl_policies_are_accepted_by_consul(tmp_path, consul_binary):
    """
    Every ACL policy under ``etc/consul/`` is accepted by a real Consul with
    ACLs on, as ``consul acl policy create -rules @FILE`` would be.
    """
    _, policies = _consul_files()
    if not policies:
        pytest.skip("etc/consul/ ships no ACL policy")
    token = str(uuid.uuid4())
    with start_dev_consul(consul_binary, "acl", workdir=str(tmp_path), acl_token=token) as agent:
        for path in policies:
            request = urllib.request.Request(
                f"{agent.url}/v1/acl/policy", method="PUT",
                data=json.dumps({"Name": path.stem, "Rules": path.read_text()}).encode(),
                headers={"X-Consul-Token": token})
            try:
                with urllib.request.urlopen(request, timeout=10) as response:
                    assert json.load(response)["Name"] == path.stem
            except urllib.error.HTTPError as e:
                pytest.fail(f"{path.name}: Consul refused it: {e.code} {e.read().decode()}")


def test_shipped_prometheus_configs_pass_promtool(tmp_path):
    """
    Every Prometheus config under ``etc/prometheus/`` passes ``promtool
    check config``, and each discovers its targets through Glimpse's
    ``/v1/sd/prometheus`` (tests/test_prometheus.py runs Prometheus on the
    example).
    """
    configs = sorted((ETC / "prometheus").glob("*.yml"))
    assert configs, "etc/prometheus/ ships no Prometheus config"
    for path in configs:
        result = subprocess.run([_program("promtool", "prometheus"), "check", "config",
                                 str(path)], capture_output=True, text=True, cwd=tmp_path,
                                check=False)
        assert result.returncode == 0, result.stdout + result.stderr
        assert "/v1/sd/prometheus?address=" in path.read_text(), path.name


def test_shipped_provider_states_are_valid():
    """
    Every example provider state under ``etc/examples/`` is one Glimpse
    accepts.
    """
    from glimpse.providers.state import InvalidState, validate_state
    examples = sorted((ETC / "examples").glob("*.json"))
    assert examples
    for path in examples:
        try:
            validate_state(json.loads(path.read_text()))
        except InvalidState as e:
            pytest.fail(f"{path.name}: {e}")


def _program(name, package="unbound"):
    found = shutil.which(name) or (f"/usr/sbin/{name}" if os.path.exists(f"/usr/sbin/{name}")
                                   else None)
    assert found, f"{name} is not installed: apt-get install {package}"
    return found
