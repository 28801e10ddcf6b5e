"""
Glimpse's own HTTP API over TLS (``--http=ssl:...``), asked by real TLS
clients (Python's ``ssl`` and curl) with a CA the test makes; the HTTP
limits hold there too: a client slow to send its headers, or one that
never even finishes the TLS handshake, is closed, and an upload too large
is refused before it is read.
"""

import http.client
import json
import socket
import ssl
import subprocess
import time

import pytest

from glimpse.dev.consul import free_ports
from glimpse.dev.twistd import start_glimpse

from http_helpers import read_response
from support import wait_until
from tls_helpers import make_pki

ZONE = "glimpse.test"


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    """
    A CA and the certificate it signed for Glimpse (127.0.0.1, localhost).
    """
    return make_pki(tmp_path_factory.mktemp("pki"))


@pytest.fixture(scope="module")
def https(consul, pki, tmp_path_factory):
    """
    A Glimpse serving its API over TLS too, with a short header timeout and
    room for 20 connections per client: ``(glimpse, https port)``.
    """
    (port,) = free_ports(1)
    endpoint = (f"ssl:{port}:privateKey={pki['key']}:certKey={pki['cert']}"
                ":interface=127.0.0.1")
    g = start_glimpse(consul.url, ZONE, extra_args=[
        f"--http={endpoint}", "--http-header-timeout=3", "--http-max-body=100000",
        "--http-max-conns-per-client=20"],
        workdir=str(tmp_path_factory.mktemp("glimpse")))
    yield g, port
    g.stop()


def tls_context(pki):
    return ssl.create_default_context(cafile=str(pki["ca"]))


def test_python_ssl_client_gets_the_api_over_tls(https, pki):
    """
    A client trusting the CA reads /v1/status over TLS; one that does not
    trust it fails its handshake rather than reading anything.
    """
    _, port = https
    conn = http.client.HTTPSConnection("127.0.0.1", port, context=tls_context(pki), timeout=10)
    try:
        conn.request("GET", "/v1/status")
        response = conn.getresponse()
        body = json.loads(response.read())
        assert response.status in (200, 503) and "serving" in body
    finally:
        conn.close()
    stranger = http.client.HTTPSConnection(
        "127.0.0.1", port, context=ssl.create_default_context(cafile=str(pki["other_ca"])),
        timeout=10)
    with pytest.raises(ssl.SSLCertVerificationError):
        stranger.request("GET", "/v1/status")
    stranger.close()


def test_curl_gets_the_api_over_tls(https, pki):
    """
    ``curl --cacert`` reads the OpenAPI document over TLS.
    """
    _, port = https
    result = subprocess.run(
        ["curl", "-sS", "--fail", "--max-time", "10", "--cacert", str(pki["ca"]),
         f"https://127.0.0.1:{port}/v1/openapi.json"],
        capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["openapi"].startswith("3.")


def tls_socket(port, pki):
    raw = socket.create_connection(("127.0.0.1", port), timeout=10)
    return tls_context(pki).wrap_socket(raw, server_hostname="127.0.0.1")


def test_a_slow_client_over_tls_is_closed_at_the_header_timeout(https, pki):
    """
    Over TLS too, a client trickling its headers a byte a second is
    answered 408 and closed once the header timeout is up.
    """
    _, port = https
    s = tls_socket(port, pki)
    s.settimeout(0.05)
    request = b"GET /v1/status HTTP/1.1\r\nHost: glimpse\r\nX-Slow: " + b"a" * 100
    state = {"sent": 0, "received": b"", "closed": False}
    try:
        def trickle():
            try:
                chunk = s.recv(65536)
                state["received"] += chunk
                state["closed"] = not chunk
            except TimeoutError:
                pass
            except (ssl.SSLError, OSError):
                state["closed"] = True
            if state["closed"]:
                return True
            s.send(request[state["sent"]:state["sent"] + 1])
            state["sent"] += 1
            time.sleep(1.0)
            return False

        wait_until(trickle, timeout=30, interval=0, what="the slow TLS client to be closed")
        assert state["sent"] >= 2
        assert state["received"].startswith(b"HTTP/1.1 408")
    finally:
        s.close()


def test_a_client_that_never_finishes_the_handshake_is_closed(https):
    """
    A client that connects and never completes the TLS handshake is closed
    at the header timeout too.
    """
    _, port = https
    with socket.create_connection(("127.0.0.1", port), timeout=30) as s:
        s.sendall(b"\x16\x03\x01")  # the start of a ClientHello, and no more
        try:
            data = s.recv(65536)
        except ConnectionResetError:
            data = b""
        # Closed (a hang would be a TimeoutError here), with nothing to say.
        assert data == b""


def test_an_upload_too_large_is_413_over_tls(https, pki):
    """
    Over TLS, a Content-Length over --http-max-body is a JSON 413 before
    any of the body is sent.
    """
    _, port = https
    s = tls_socket(port, pki)
    try:
        s.sendall(b"PUT /v1/providers/big HTTP/1.1\r\nHost: glimpse\r\n"
                  b"Content-Length: 10000000000\r\n\r\n")
        status, _, body = read_response(s)
        assert status == 413
        assert "--http-max-body" in body["detail"]
    finally:
        s.close()


def test_a_client_over_its_cap_gets_429_over_tls(https, pki):
    """
    With its 20 connections taken (by clients that never start TLS), a
    client's next TLS connection completes its handshake and reads a JSON
    429 with Retry-After, then is closed.
    """
    _, port = https
    held = [socket.create_connection(("127.0.0.1", port), timeout=10) for _ in range(20)]
    try:
        def answer():
            s = tls_socket(port, pki)
            with s:
                s.sendall(b"GET /v1/status HTTP/1.1\r\nHost: glimpse\r\n\r\n")
                data = b""
                while True:
                    chunk = s.recv(65536)
                    if not chunk:
                        return data
                    data += chunk

        data = wait_until(lambda: (d := answer()).startswith(b"HTTP/1.1 429") and d,
                          what="a 429 over TLS")
        head, _, body = data.partition(b"\r\n\r\n")
        assert b"Retry-After: 3" in head
        assert "--http-max-conns-per-client" in json.loads(body)["detail"]
    finally:
        for s in held:
            s.close()
