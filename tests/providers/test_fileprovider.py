"""
The file path (:obj:`glimpse.providers.files`) against a real Consul agent that
reads a config directory, with a real Glimpse answering DNS from it.
"""

import io
import json
import os
from pathlib import Path

import pytest
from twisted.names import dns

from glimpse.cli.main import main
from glimpse.dev.consul import free_ports
from glimpse.dev.twistd import start_glimpse
from glimpse.providers.files import FileProviderError, provide_to_config_dir, provider_file
from glimpse.providers.state import InvalidState

from support import a_addresses, ask, wait_until

ZONE = "glimpse.test"


@pytest.fixture(scope="module")
def glimpse(consul, tmp_path_factory):
    """
    One Glimpse on the module's agent.
    """
    g = start_glimpse(consul.url, ZONE, workdir=str(tmp_path_factory.mktemp("glimpse")))
    yield g
    g.stop()


def state(job, *instances):
    """
    A state of shop/prod/<job> with instances ``(name, ip)``, port http 80.
    """
    return {"instances": [{"product": "shop", "env": "prod", "job": job, "instance": name,
                           "address": ip, "ports": {"http": 80}} for name, ip in instances]}


def provide(consul, provider, document, **kwargs):
    """
    Run the file path for the module's agent.
    """
    return provide_to_config_dir(provider, document, str(consul.config_dir), consul.url, **kwargs)


def dns_ips(glimpse, job):
    """
    The A answer for ``http.<job>.prod.shop.ams``.
    """
    return a_addresses(ask(glimpse.dns, f"http.{job}.prod.shop.ams.{ZONE}", dns.A))


def agent_ids(consul, provider):
    """
    The agent's service IDs of a provider.
    """
    return sorted(sid for sid in consul.get_json("agent/services")
                  if sid.startswith(f"{provider}:"))


def test_state_in_dns_and_replaced_whole(glimpse, consul):
    """
    A state written to the config dir shows up in Glimpse's DNS; the same
    state again does nothing and says so; a second state replaces the first
    whole.
    """
    first = provide(consul, "fp-a", state("files", ("f-1", "127.0.8.1"), ("f-2", "127.0.8.2")))
    assert first.changed and first.path == str(consul.config_dir / "glimpse-provider-fp-a.json")
    wait_until(lambda: dns_ips(glimpse, "files") == {"127.0.8.1", "127.0.8.2"},
               what="both instances in DNS")
    again = provide(consul, "fp-a", state("files", ("f-2", "127.0.8.2"), ("f-1", "127.0.8.1")))
    assert not again.changed and "unchanged" in again.message
    provide(consul, "fp-a", state("files", ("f-3", "127.0.8.3")))
    assert agent_ids(consul, "fp-a") == ["fp-a:shop--prod--files:f-3:http"]
    wait_until(lambda: dns_ips(glimpse, "files") == {"127.0.8.3"}, what="only f-3 in DNS")


def test_invalid_state_changes_nothing(consul):
    """
    An invalid state raises InvalidState listing its problems, and neither
    the file nor the agent changes.
    """
    provide(consul, "fp-b", state("inv", ("i-1", "127.0.9.1")))
    path = provider_file(str(consul.config_dir), "fp-b")
    before = Path(path).read_bytes()
    with pytest.raises(InvalidState) as e:
        provide(consul, "fp-b", {"instances": [{"product": "shop"}]})
    assert "$.instances[0].ports" in str(e.value)
    assert Path(path).read_bytes() == before
    assert agent_ids(consul, "fp-b") == ["fp-b:shop--prod--inv:i-1:http"]


def test_two_providers_never_touch_each_other(consul):
    """
    Each provider has its own file: writing and emptying one leaves the
    other's file and registrations as they were.
    """
    provide(consul, "fp-c", state("two", ("c-1", "127.0.10.1")))
    path_c = provider_file(str(consul.config_dir), "fp-c")
    stat_c = os.stat(path_c)
    provide(consul, "fp-d", state("two", ("d-1", "127.0.10.2")))
    provide(consul, "fp-d", {"instances": []})
    assert os.stat(path_c).st_mtime_ns == stat_c.st_mtime_ns
    assert agent_ids(consul, "fp-c") == ["fp-c:shop--prod--two:c-1:http"]
    assert agent_ids(consul, "fp-d") == []


def test_failed_reload_keeps_the_previous_file(consul):
    """
    When the agent refuses to reload, the error says why and the previous
    file is back in place; an unreachable agent is told apart (the CLI
    exits 1 and 3 for them).
    """
    provide(consul, "fp-e", state("rel", ("e-1", "127.0.11.1")))
    path = provider_file(str(consul.config_dir), "fp-e")
    before = Path(path).read_bytes()
    broken = consul.config_dir / "zz-broken.json"
    broken.write_text("{not json")
    try:
        with pytest.raises(FileProviderError) as e:
            provide(consul, "fp-e", state("rel", ("e-2", "127.0.11.2")))
        assert not e.value.unreachable and "refused to reload" in str(e.value)
        assert "put back" in str(e.value)
    finally:
        broken.unlink()
    assert Path(path).read_bytes() == before
    (port,) = free_ports(1)
    with pytest.raises(FileProviderError) as e:
        provide_to_config_dir("fp-e", state("rel", ("e-3", "127.0.11.3")),
                              str(consul.config_dir), f"http://127.0.0.1:{port}")
    assert e.value.unreachable and "cannot reach" in str(e.value)
    assert Path(path).read_bytes() == before
    assert agent_ids(consul, "fp-e") == ["fp-e:shop--prod--rel:e-1:http"]


def test_http_path_leaves_file_registrations_alone(glimpse, consul):
    """
    A provider name used on both paths: the HTTP path's PUT and DELETE
    never touch what the file path registered.
    """
    provide(consul, "both", state("mixed", ("m-1", "127.0.12.1")))
    status, body = glimpse.put("/v1/providers/both", state("mixed", ("m-2", "127.0.12.2")))
    assert status == 200 and body["removed"] == []
    assert agent_ids(consul, "both") == ["both:shop--prod--mixed:m-1:http",
                                         "both:shop--prod--mixed:m-2:http"]
    assert glimpse.delete("/v1/providers/both")[0] == 200
    assert agent_ids(consul, "both") == ["both:shop--prod--mixed:m-1:http"]


def test_cli_provide_with_config_dir(consul, tmp_path):
    """
    ``glimpse provide --provider NAME --config-dir DIR STATE.json`` writes
    the state and reloads the agent (exit 0, says what it did); an invalid
    state exits non-zero listing the problem and changes nothing; an
    unreachable agent exits 3.
    """
    def run(document, consul_url=consul.url):
        path = tmp_path / "state.json"
        path.write_text(json.dumps(document))
        out, err = io.StringIO(), io.StringIO()
        code = main(["provide", "--provider", "fp-cli", "--config-dir", str(consul.config_dir),
                     "--consul", consul_url, str(path)], out, err)
        return code, out.getvalue() + err.getvalue()

    code, text = run(state("cli", ("x-1", "127.0.13.1")))
    assert code == 0 and "reloaded" in text
    assert agent_ids(consul, "fp-cli") == ["fp-cli:shop--prod--cli:x-1:http"]
    code, text = run({"instances": [{"product": "shop"}]})
    assert code != 0 and "$.instances[0].ports" in text
    (port,) = free_ports(1)
    code, text = run(state("cli", ("x-2", "127.0.13.2")), f"http://127.0.0.1:{port}")
    assert code == 3 and "cannot reach" in text
    assert agent_ids(consul, "fp-cli") == ["fp-cli:shop--prod--cli:x-1:http"]


def test_cli_exit_codes_of_a_failed_file_path(consul, tmp_path):
    """
    ``glimpse provide --config-dir`` exits 1 when the reload or the write
    fails (the agent refused its configuration; a bad provider name), and
    3 when the agent cannot be reached.
    """
    path = tmp_path / "state.json"
    path.write_text(json.dumps(state("codes", ("k-1", "127.0.14.1"))))
    (port,) = free_ports(1)

    def run(provider, consul_url=consul.url):
        err = io.StringIO()
        code = main(["provide", "--provider", provider, "--config-dir",
                     str(consul.config_dir), "--consul", consul_url, str(path)],
                    io.StringIO(), err)
        return code, err.getvalue()

    broken = consul.config_dir / "zz-broken.json"
    broken.write_text("{not json")
    try:
        code, text = run("fp-codes")
    finally:
        broken.unlink()
    assert code == 1 and "refused to reload" in text
    code, text = run("Not A Label")
    assert code == 1 and "--provider=Not A Label" in text
    code, text = run("fp-codes", f"http://127.0.0.1:{port}")
    assert code == 3 and "cannot reach" in text
    assert agent_ids(consul, "fp-codes") == []
