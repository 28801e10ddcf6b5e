"""
Property: any sequence of valid full states PUT to a real Glimpse, randomly
interleaved with SIGKILL restarts (some in the middle of a PUT), ends with
Consul's catalog equal to the last acknowledged state.  Bounded so that it
runs in seconds: few examples, short sequences, small states.
"""

import threading
import urllib.parse

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from glimpse.dev.twistd import start_glimpse
from glimpse.providers.state import registrations, validate_state

from support import wait_until

ZONE = "glimpse.test"
PROVIDER = "prop"

_CHECKS = st.sampled_from([[], [{"ttl": "1h"}], [{"tcp": "127.0.0.1:9", "interval": "1m"}]])
_INSTANCE = st.fixed_dictionaries({
    "product": st.just("shop"), "env": st.sampled_from(["prod", "test"]),
    "job": st.sampled_from(["web", "api"]), "instance": st.sampled_from(["i-1", "i-2", "i-3"]),
    "ports": st.dictionaries(st.sampled_from(["http", "admin", "grpc"]),
                             st.integers(1024, 1030), min_size=1, max_size=3),
    "checks": _CHECKS, "drain": st.booleans(),
    "meta": st.dictionaries(st.sampled_from(["version", "team"]), st.sampled_from(["a", "b"])),
})
STATES = st.lists(_INSTANCE, max_size=4, unique_by=lambda i: (i["env"], i["job"], i["instance"])
                  ).map(lambda instances: {"instances": instances})
STEPS = st.lists(st.one_of(
    st.tuples(st.just("put"), STATES),
    st.tuples(st.just("restart"), st.none()),
    st.tuples(st.just("crash_put"), STATES),
), min_size=1, max_size=4)


@pytest.fixture(scope="module")
def glimpse(consul, tmp_path_factory):
    """
    One Glimpse, killed and restarted by the steps.
    """
    g = start_glimpse(consul.url, ZONE, workdir=str(tmp_path_factory.mktemp("glimpse")))
    yield g
    g.stop()


def catalog(consul):
    """
    ``{service id: glimpse-hash}`` of the provider in the catalog.
    """
    node = consul.get_json("agent/self")["Config"]["NodeName"]
    query = urllib.parse.quote(f'Meta["glimpse-provider"] == "{PROVIDER}"')
    services = consul.get_json(f"catalog/node-services/{node}?filter={query}")["Services"]
    return {s["ID"]: s["Meta"]["glimpse-hash"] for s in services}


def expected(document):
    """
    ``{service id: glimpse-hash}`` of a state.
    """
    return {sid: r["Meta"]["glimpse-hash"] for sid, r in
            registrations(PROVIDER, validate_state(document)).items()}


def acknowledged(glimpse):
    """
    The provider's acknowledged state as Glimpse reports it (empty if none).
    """
    status, body = glimpse.get(f"/v1/providers/{PROVIDER}")
    return body if status == 200 else {"instances": []}


@settings(max_examples=6, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(steps=STEPS)
def test_catalog_ends_with_last_acknowledged_state(glimpse, consul, steps):
    """
    Whatever the sequence, once Glimpse has settled the catalog holds
    exactly the last acknowledged state: each 200 is visible in the catalog
    at once, and a PUT cut short by a kill leaves the old or the new state,
    never a mix.
    """
    last = acknowledged(glimpse)
    for action, document in steps:
        if action == "put":
            status, body = glimpse.put(f"/v1/providers/{PROVIDER}", document)
            assert status == 200, body
            last = validate_state(document)
            assert catalog(consul) == expected(last)
        elif action == "restart":
            glimpse.kill()
            glimpse.start()
        else:
            # Kill as soon as the PUT is sent: wherever the apply was.
            thread = threading.Thread(target=_ignore_errors, args=(
                glimpse.put, f"/v1/providers/{PROVIDER}", document))
            thread.start()
            glimpse.kill()
            thread.join()
            glimpse.start()
            now = acknowledged(glimpse)
            assert now in (last, validate_state(document))
            last = now
    wait_until(lambda: catalog(consul) == expected(last), timeout=20,
               what="the catalog equal to the last acknowledged state")


def _ignore_errors(call, *args):
    try:
        call(*args, timeout=30)
    except OSError:
        pass
