"""
The OpenAPI document against the code: schemathesis drives a live Glimpse
over a real Consul with requests generated from /v1/openapi.json and
checks every answer against it.
"""

import subprocess
import sys
from pathlib import Path

import pytest

from glimpse.dev.registrations import register
from glimpse.dev.twistd import start_glimpse
from glimpse.http.openapi import document

from support import wait_until

ZONE = "glimpse.test"


@pytest.fixture(scope="module")
def glimpse(consul, tmp_path_factory):
    """
    A Glimpse over a Consul with a little topology to find.
    """
    register(consul.url, "web", "web-1", "http", 8080, "127.0.11.1")
    register(consul.url, "web", "web-2", "http", 8080, "127.0.11.2", "critical")
    g = start_glimpse(consul.url, ZONE, workdir=str(tmp_path_factory.mktemp("glimpse")))
    wait_until(lambda: g.get("/v1/lookup/http.web.prod.shop.ams")[0] == 200, what="the view")
    yield g
    g.stop()


def test_every_mounted_route_is_documented():
    """
    Each resource of /v1 has its path in the document, so clients (and the
    fuzzing below) know about all of them.
    """
    paths = set(document()["paths"])
    for route in ("lookup", "explain", "watch", "topology", "status", "zones", "providers",
                  "openapi.json", "sd"):
        assert any(p.startswith(f"/v1/{route}") for p in paths), route
    assert "/metrics" in paths


def test_every_operation_documents_the_limits_answers():
    """
    Every operation lists the answers of the HTTP limits (408, 429 and 503
    with Retry-After), and those that take a body a 413 too.
    """
    for path, item in document()["paths"].items():
        for method, operation in item.items():
            if method == "parameters":
                continue
            responses = operation["responses"]
            assert {"408", "429", "503"} <= set(responses), (path, method)
            assert "Retry-After" in responses["429"]["headers"]
            assert "Retry-After" in responses["503"]["headers"]
            if "requestBody" in operation:
                assert "413" in responses, (path, method)


def test_schemathesis_finds_no_server_error_and_no_answer_outside_the_schema(glimpse, tmp_path):
    """
    Requests generated from the document (valid and invalid) never get a
    5xx, and every answer's status, content type, headers and body are the
    documented ones.  Streams (/v1/watch) are left out: they never end.
    """
    st = Path(sys.executable).parent / "schemathesis"
    result = subprocess.run(
        [str(st), "run", f"{glimpse.url}/v1/openapi.json", "--url", glimpse.url,
         "--checks", "not_a_server_error,status_code_conformance,content_type_conformance,"
                     "response_schema_conformance,response_headers_conformance",
         "--exclude-path-regex", "^/v1/watch", "--max-examples", "10",
         "--generation-deterministic", "--request-timeout", "10"],
        capture_output=True, text=True, timeout=300, cwd=tmp_path, check=False)
    assert result.returncode == 0, result.stdout[-6000:] + result.stderr[-2000:]
