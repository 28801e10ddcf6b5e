"""
TLS to the Consul agent, both ways: Glimpse verifies the agent's
certificate against --consul-ca and shows it a client certificate
(--consul-cert, --consul-key), against a real Consul serving HTTPS with
``verify_incoming = true`` and a CA the test makes with ``consul tls``.
A wrong CA or a missing client certificate is one clear log line at start
and ``consul_error`` in /v1/status, never a fallback to plain HTTP or to
unverified TLS.  What each TLS failure is called is checked first, in
memory.
"""

import io
import json
import re
import subprocess
import urllib.request
from pathlib import Path

import pytest
from OpenSSL import SSL
from twisted.internet.defer import fail
from twisted.internet.task import Clock
from twisted.names import dns
from twisted.python.failure import Failure
from twisted.web._newclient import ResponseNeverReceived

from glimpse.cli.main import main
from glimpse.consul import ConsulClient, ConsulTLS, ConsulTLSError, reload_agent
from glimpse.dev.consul import free_ports, start_dev_consul
from glimpse.dev.twistd import start_glimpse

from support import ask, result_of, srv_targets, wait_until

ZONE = "glimpse.test"


class FailingHTTP:
    """
    A treq client whose every request fails as twisted.web's Agent fails a
    TLS handshake: ResponseNeverReceived around ``error``.
    """

    def __init__(self, error):
        self.error = error

    def request(self, method, url, **kwargs):
        return fail(ResponseNeverReceived([Failure(self.error)]))


def consul_error(error, tls=None, url="https://127.0.0.1:8501"):
    client = ConsulClient(FailingHTTP(error), url, Clock(), tls=tls)
    with pytest.raises(ConsulTLSError) as e:
        result_of(client.agent_self())
    return str(e.value)


def ssl_error(reason):
    return SSL.Error([("SSL routines", "", reason)])


@pytest.mark.parametrize(("reason", "tls", "says"), [
    ("certificate verify failed", ConsulTLS(ca="/etc/consul/ca.pem"),
     "could not be verified against the CA of --consul-ca=/etc/consul/ca.pem"),
    ("certificate verify failed", ConsulTLS(), "the system's trust store"),
    ("tlsv13 alert certificate required", ConsulTLS(ca="ca.pem"),
     "requires a client certificate (verify_incoming) and Glimpse has none"),
    ("sslv3 alert handshake failure", ConsulTLS(ca="ca.pem"), "--consul-cert and --consul-key"),
    ("tlsv1 alert unknown ca", ConsulTLS("ca.pem", "me.pem", "me.key"),
     "refused the client certificate of --consul-cert=me.pem"),
    ("wrong version number", ConsulTLS(), "does not speak TLS at https://127.0.0.1:8501"),
    ("something new", ConsulTLS(), "TLS: something new; check --consul-ca"),
])
def test_each_tls_failure_is_named_with_the_option_to_fix(reason, tls, says):
    """
    A failed handshake becomes a ConsulTLSError (a ConsulUnavailable: the
    view serves stale, then fails, as for any unreachable agent) whose
    message starts with TLS: and names the option that fixes it.
    """
    message = consul_error(ssl_error(reason), tls)
    assert message.startswith("Consul agent/self: TLS: ") and says in message
    assert reason in message


def test_a_certificate_for_another_host_is_named():
    """
    A certificate the agent's CA signed, but not for the host in --consul,
    says to point --consul at a name the certificate has.
    """
    class VerificationError(Exception):
        pass

    message = consul_error(VerificationError("hostname mismatch"))
    assert "is not for the host of https://127.0.0.1:8501" in message
    assert "point --consul at a name" in message


def test_other_failures_are_not_called_tls():
    """
    A refused connection stays what it is.
    """
    client = ConsulClient(FailingHTTP(ConnectionRefusedError("refused")),
                          "https://127.0.0.1:8501", Clock())
    failure = []
    client.agent_self().addErrback(failure.append)
    assert not failure[0].check(ConsulTLSError)


# ---------------------------------------------------------------------------
# A real Consul serving HTTPS with verify_incoming.
# ---------------------------------------------------------------------------


def consul_tls(binary, *args, cwd):
    subprocess.run([binary, "tls", *args], cwd=cwd, check=True, capture_output=True)


@pytest.fixture(scope="module")
def pki(consul_binary, tmp_path_factory):
    """
    Made with ``consul tls`` as an operator would: the agent's CA, a server
    certificate (127.0.0.1, localhost) and a client certificate it signed;
    and another CA with a client certificate of its own.
    """
    ours = tmp_path_factory.mktemp("pki")
    consul_tls(consul_binary, "ca", "create", cwd=ours)
    consul_tls(consul_binary, "cert", "create", "-server", "-dc", "ams", cwd=ours)
    consul_tls(consul_binary, "cert", "create", "-client", "-dc", "ams", cwd=ours)
    theirs = tmp_path_factory.mktemp("other-pki")
    consul_tls(consul_binary, "ca", "create", cwd=theirs)
    consul_tls(consul_binary, "cert", "create", "-client", "-dc", "ams", cwd=theirs)
    return {
        "ca": ours / "consul-agent-ca.pem",
        "server": (ours / "ams-server-consul-0.pem", ours / "ams-server-consul-0-key.pem"),
        "client": (ours / "ams-client-consul-0.pem", ours / "ams-client-consul-0-key.pem"),
        "other_ca": theirs / "consul-agent-ca.pem",
        "other_client": (theirs / "ams-client-consul-0.pem",
                         theirs / "ams-client-consul-0-key.pem"),
    }


@pytest.fixture(scope="module")
def tls_consul(consul_binary, pki, tmp_path_factory):
    """
    A dev agent serving its HTTP API over HTTPS too, with verify_incoming:
    ``(agent, https URL)``.
    """
    (https,) = free_ports(1)
    cert, key = pki["server"]
    hcl = [f'tls {{ defaults {{ ca_file = "{pki["ca"]}" cert_file = "{cert}" '
           f'key_file = "{key}" verify_incoming = true }} }}', f"ports {{ https = {https} }}"]
    with start_dev_consul(consul_binary, "ams", extra_hcl=hcl,
                          workdir=str(tmp_path_factory.mktemp("tls-consul"))) as agent:
        yield agent, f"https://127.0.0.1:{https}"


def tls_args(ca, client=None):
    args = [f"--consul-ca={ca}"]
    if client is not None:
        args += [f"--consul-cert={client[0]}", f"--consul-key={client[1]}"]
    return args


def metric(glimpse, name):
    with urllib.request.urlopen(glimpse.url + "/metrics", timeout=10) as r:
        text = r.read().decode()
    return sum(float(v) for v in re.findall(rf"^{re.escape(name)}(?:{{[^}}]*}})? (\S+)$",
                                            text, re.M))


def test_glimpse_with_the_ca_and_a_client_certificate_serves_end_to_end(tls_consul, pki,
                                                                        tmp_path):
    """
    Given the agent's CA and a client certificate it signed, Glimpse reads
    and writes Consul over mutual TLS: a provider's state PUT to Glimpse is
    registered, and DNS answers with it.
    """
    _, https = tls_consul
    g = start_glimpse(https, ZONE, extra_args=tls_args(pki["ca"], pki["client"]),
                      workdir=str(tmp_path))
    try:
        wait_until(lambda: g.get("/v1/status")[0] == 200, what="Glimpse serving")
        assert g.get("/v1/status")[1]["consul_error"] is None
        state = {"instances": [{"product": "shop", "env": "prod", "job": "tls", "instance": "t1",
                                "address": "127.0.13.1", "ports": {"http": 8443},
                                "checks": []}]}
        status, body = g.put("/v1/providers/tls-test", state)
        assert status == 200, body
        name = f"http.tls.prod.shop.ams.{ZONE}"
        wait_until(lambda: srv_targets(ask(g.dns, name, dns.SRV))
                   == {(f"7f000d01.addr.ams.{ZONE}", 8443)}, what="the SRV answer")
    finally:
        g.stop()


@pytest.mark.parametrize(("files", "says"), [
    (lambda p: tls_args(p["other_ca"], p["client"]),
     "could not be verified against the CA of --consul-ca="),
    (lambda p: tls_args(p["ca"]),
     "requires a client certificate (verify_incoming) and Glimpse has none"),
    (lambda p: tls_args(p["ca"], p["other_client"]), "refused the client certificate"),
], ids=["wrong CA", "no client certificate", "client certificate of another CA"])
def test_a_tls_mistake_is_one_clear_error_at_start_and_in_status(tls_consul, pki, tmp_path,
                                                                 files, says):
    """
    With the wrong CA, or without (or with a foreign) client certificate,
    Glimpse says so once in its log, naming the option to fix, and in
    /v1/status as consul_error, while it keeps retrying; it never serves
    from a plain-HTTP or unverified Consul instead.
    """
    _, https = tls_consul
    g = start_glimpse(https, ZONE, extra_args=files(pki), workdir=str(tmp_path))
    try:
        status = wait_until(lambda: (s := g.get("/v1/status"))[1].get("consul_error") and s,
                            what="consul_error in /v1/status")
        code, body = status
        assert code == 503 and body["serving"] is False and body["zones"] == {}
        assert "TLS: " in body["consul_error"] and says in body["consul_error"]
        # Several attempts later, still one line in the log.
        wait_until(lambda: metric(g, "glimpse_consul_errors_total") >= 4,
                   what="Glimpse to retry")
        lines = [line for line in Path(g.log_path).read_text().splitlines() if says in line]
        assert len(lines) == 1, lines
        assert g.get("/v1/status")[1]["consul_error"] == body["consul_error"]
    finally:
        g.stop()


def test_the_blocking_reload_takes_the_client_certificate(tls_consul, pki):
    """
    ``glimpse provide --config-dir``'s reload (urllib) shows the client
    certificate too; without one, the agent's refusal is named.
    """
    _, https = tls_consul
    reload_agent(https, ca=str(pki["ca"]), cert=str(pki["client"][0]),
                 key=str(pki["client"][1]))
    with pytest.raises(ConsulTLSError, match="--consul-cert and --consul-key"):
        reload_agent(https, ca=str(pki["ca"]))
    with pytest.raises(ConsulTLSError, match="--consul-ca"):
        reload_agent(https, ca=str(pki["other_ca"]))


def test_provide_through_the_config_dir_takes_the_client_certificate(tls_consul, pki, tmp_path):
    """
    ``glimpse provide --config-dir`` reloads an agent with verify_incoming
    when given --consul-cert and --consul-key (the agent then serves the
    registration); without them it exits 3 (Consul out of reach) naming
    the options, and the file it wrote is taken back out of the agent's
    config directory.
    """
    agent, https = tls_consul
    state = tmp_path / "state.json"
    state.write_text(json.dumps({"instances": [{
        "product": "shop", "env": "prod", "job": "tlsfile", "instance": "t-1",
        "address": "127.0.13.30", "ports": {"http": 8080}}]}))
    base = ["provide", "--provider", "tls-file", str(state), "--config-dir",
            str(agent.config_dir), "--consul", https, f"--consul-ca={pki['ca']}"]
    written = agent.config_dir / "glimpse-provider-tls-file.json"

    code, _, err = run_cli(*base)
    assert code == 3 and "--consul-cert and --consul-key" in err, err
    assert "put back" in err and not written.exists()

    code, _, err = run_cli(*base, f"--consul-cert={pki['client'][0]}")
    assert code == 2 and "go together" in err

    code, out, err = run_cli(*base, f"--consul-cert={pki['client'][0]}",
                             f"--consul-key={pki['client'][1]}")
    assert code == 0, err
    assert written.exists() and "reloaded the Consul agent" in out
    wait_until(lambda: _catalog(agent, "shop--prod--tlsfile"), what="the registration")


def _catalog(agent, service):
    with urllib.request.urlopen(f"{agent.url}/v1/catalog/service/{service}") as r:
        return json.load(r)


def run_cli(*argv):
    """
    ``(exit code, stdout, stderr)`` of the CLI, in this process.
    """
    out, err = io.StringIO(), io.StringIO()
    code = main(list(argv), out, err)
    return code, out.getvalue(), err.getvalue()
