"""
``twistd glimpse``'s command line: defaults, validation that says what to
type instead, and the plugin as installed by ``pip install .``.
"""

import os
import subprocess
import sys

import pytest
from twisted.python.usage import UsageError

from glimpse.http.limits import HTTPLimits
from glimpse.tap import Options

from tls_helpers import make_pki


@pytest.fixture(scope="module")
def tls_files(tmp_path_factory):
    """
    A CA, a certificate it signed and its key, and another CA's (openssl).
    """
    return make_pki(tmp_path_factory.mktemp("pki"))


def parse(*argv, state_dir):
    options = Options()
    options.parseOptions([f"--state-dir={state_dir}", *argv])
    return options


def test_defaults_listen_on_loopback(tmp_path):
    """
    With no options Glimpse talks to the local Consul agent and listens on
    loopback only: DNS on 127.0.0.1:8053, HTTP on 127.0.0.1:8411.
    """
    options = parse(state_dir=tmp_path)
    assert {k: options[k] for k in options} == {
        "config": None,
        "consul": "http://127.0.0.1:8500",
        "consul-token-file": None,
        "consul-ca": None,
        "consul-max-conns": 64,
        "consul-poll-period": 1.0,
        "consul-poll-rate": 4000.0,
        "consul-cert": None,
        "consul-key": None,
        "dns-zone": "glimpse.test",
        "dns-interface": "127.0.0.1",
        "dns-port": 8053,
        "dns-advertise": None,
        "dns-ttl": 5,
        "negative-ttl": 5,
        "dns-tcp-max-conns": 1024,
        "dns-tcp-idle-timeout": 30.0,
        "dns-rotations": 16,
        "max-stale": 300.0,
        "idle-timeout": 600.0,
        "zones-interval": 30.0,
        "catalog-interval": 1.0,
        "state-dir": str(tmp_path),
        "lookup-cap": 1000,
        "failover-min": 1,
        "failover-order": None,
        "serve-warning": 0,
        "panic-threshold": None,
        "panic-hold": 30.0,
        "provider-token-file": None,
        "http": ["tcp:8411:interface=127.0.0.1"],
        "http-header-timeout": 5.0,
        "http-body-timeout": 30.0,
        "http-idle-timeout": 30.0,
        "http-max-body": 16 * 1024 * 1024,
        "http-max-conns": 4096,
        "http-max-conns-per-client": 2048,
        "http-max-streams-per-client": 1024,
    }


def test_options_are_normalised_and_repeatable(tmp_path):
    """
    The DNS zone is normalised, and --http may be given more than once.
    """
    token = tmp_path / "token"
    token.write_text("secret\n")
    options = parse("--dns-zone=Glimpse.Example.", "--http=tcp:1234:interface=127.0.0.1",
                    "--http=unix:/tmp/glimpse.sock", f"--consul-token-file={token}",
                    "--dns-interface=0.0.0.0", "--dns-advertise=10.0.0.5",
                    state_dir=tmp_path)
    assert options["dns-zone"] == "glimpse.example"
    assert options["http"] == ["tcp:1234:interface=127.0.0.1", "unix:/tmp/glimpse.sock"]
    assert options["consul-token-file"] == str(token)


@pytest.mark.parametrize(("argv", "says"), [
    (["--consul=127.0.0.1:8500"], "write a URL such as http://127.0.0.1:8500"),
    (["--dns-zone=bad_zone"], "is not a DNS label"),
    (["--dns-interface=localhost"], "give an IP address"),
    (["--dns-interface=0.0.0.0"], "--dns-advertise"),
    (["--dns-port=70000"], "port number"),
    (["--http=nonsense:1"], "write e.g. --http=tcp:8411"),
    (["--consul-token-file=/nonexistent/token"], "no such readable file"),
    (["--consul-ca=/nonexistent/ca.pem"], "no such readable file"),
    (["--max-stale=0"], "must be more than 0"),
    (["--dns-ttl=-1"], "0 or more"),
    (["--http-header-timeout=0"], "--http-header-timeout must be more than 0"),
    (["--http-max-body=-5"], "--http-max-body must be more than 0"),
    (["--http-max-body=16MiB"], "'16MiB'"),
    (["--consul-cert=/nonexistent/cert.pem"], "no such readable file"),
    (["--dns-tcp-max-conns=0"], "--dns-tcp-max-conns must be more than 0"),
    (["--dns-tcp-idle-timeout=0"], "--dns-tcp-idle-timeout must be more than 0"),
    (["--dns-rotations=0"], "--dns-rotations must be more than 0"),
    (["--catalog-interval=0"], "--catalog-interval must be more than 0"),
    (["--failover-min=0"], "--failover-min must be more than 0"),
    (["--failover-order=fra,Bad_Zone"], "is not a DNS label"),
    (["--failover-order=fra,any"], "'any' is not a zone"),
    (["--failover-order=fra,lon,fra"], "names a zone twice"),
    (["--failover-order=,"], "e.g. --failover-order=fra,lon"),
    (["--panic-threshold=1.5"], "more than 0 and at most 1, e.g. --panic-threshold=0.5"),
    (["--panic-threshold=0"], "more than 0 and at most 1"),
    (["--panic-threshold=half"], "half"),
    (["--panic-hold=-1"], "--panic-hold must be 0 or more seconds"),
])
def test_bad_options_say_what_to_type_instead(tmp_path, argv, says):
    """
    A wrong option is a UsageError whose message says what to write.
    """
    with pytest.raises(UsageError) as e:
        parse(*argv, state_dir=tmp_path)
    assert says in str(e.value)


def test_steering_options_from_the_command_line_or_the_config_file(tmp_path):
    """
    The steering options come from the command line or the config file:
    --failover-order as a list of zones (lower-cased), --serve-warning a
    switch (true in the file), the panic threshold a fraction.
    """
    config = tmp_path / "glimpse.toml"
    config.write_text('serve-warning = true\nfailover-order = "FRA, lon"\npanic-hold = 5\n')
    options = parse(f"--config={config}", "--panic-threshold=0.5", "--failover-min=2",
                    state_dir=tmp_path)
    assert {k: options[k] for k in ("serve-warning", "failover-order", "failover-min",
                                    "panic-threshold", "panic-hold")} == {
        "serve-warning": 1, "failover-order": ["fra", "lon"], "failover-min": 2,
        "panic-threshold": 0.5, "panic-hold": 5.0}


def test_http_limits_are_numbers_from_the_command_line_or_the_config_file(tmp_path):
    """
    The HTTP limits come from the command line or the config file, as
    numbers, and make the HTTPLimits the site is given.
    """
    config = tmp_path / "glimpse.toml"
    config.write_text("http-max-conns = 100\nhttp-header-timeout = 2.5\n")
    options = parse(f"--config={config}", "--http-max-conns-per-client=10",
                    state_dir=tmp_path)
    assert HTTPLimits.from_options(options) == HTTPLimits(
        header_timeout=2.5, max_conns=100, max_conns_per_client=10)


def test_tls_files_for_consul_need_https_and_each_other(tmp_path, tls_files):
    """
    A CA or client certificate with an http:// Consul URL is refused (TLS
    is never dropped silently); a certificate without its key, a key that
    is not the certificate's, or a file with no certificate in it is a
    UsageError naming the option.
    """
    ca, cert, key, other_key = (tls_files[n] for n in ("ca", "cert", "key", "other_key"))
    https = "--consul=https://127.0.0.1:8501"
    for argv, says in [
        ([f"--consul-ca={ca}"], "--consul-ca needs an https:// --consul URL"),
        ([f"--consul-cert={cert}", f"--consul-key={key}"], "--consul-cert needs an https://"),
        ([https, f"--consul-cert={cert}"], "--consul-cert and --consul-key go together"),
        ([https, f"--consul-cert={cert}", f"--consul-key={other_key}"],
         "is not the private key of --consul-cert"),
        ([https, f"--consul-ca={key}"], "no PEM certificate in it"),
        ([https, f"--consul-cert={cert}", f"--consul-key={cert}"], "not a PEM private key"),
    ]:
        with pytest.raises(UsageError) as e:
            parse(*argv, state_dir=tmp_path)
        assert says in str(e.value), argv
    options = parse(https, f"--consul-ca={ca}", f"--consul-cert={cert}", f"--consul-key={key}",
                    state_dir=tmp_path)
    assert (options["consul-cert"], options["consul-key"]) == (str(cert), str(key))


def test_unwritable_state_dir_is_a_usage_error(tmp_path):
    """
    A state directory that cannot be created stops Glimpse at start with a
    message naming the option.
    """
    blocker = tmp_path / "file"
    blocker.write_text("")
    with pytest.raises(UsageError) as e:
        parse(state_dir=blocker / "state")
    assert "--state-dir" in str(e.value)


def test_pip_installed_plugin_shows_help(tmp_path):
    """
    ``pip install .`` installs the twistd plugin: ``twistd glimpse --help``
    lists every option, run from outside the source tree.
    """
    repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    target = tmp_path / "site"
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-build-isolation",
         "--target", str(target), repo],
        check=True, capture_output=True, cwd=tmp_path)
    assert (target / "twisted" / "plugins" / "glimpse_plugin.py").exists()
    assert not (target / "twisted" / "plugins" / "__init__.py").exists()
    env = dict(os.environ, PYTHONPATH=str(target))
    result = subprocess.run(
        [sys.executable, "-c", "from twisted.scripts.twistd import run; run()",
         "glimpse", "--help"],
        capture_output=True, text=True, cwd=tmp_path, env=env, check=False)
    assert result.returncode == 0, result.stderr
    for option in ("--consul=", "--consul-token-file=", "--consul-ca=", "--consul-cert=",
                   "--consul-key=", "--dns-zone=", "--dns-interface=", "--dns-port=", "--http=",
                   "--state-dir=", "--http-header-timeout=", "--http-body-timeout=",
                   "--http-idle-timeout=", "--http-max-body=", "--http-max-conns=",
                   "--http-max-conns-per-client=", "--http-max-streams-per-client=",
                   "--failover-min=", "--failover-order=", "--serve-warning",
                   "--panic-threshold=", "--panic-hold="):
        assert option in result.stdout
