"""
SRV weights in a provider's state (:mod:`glimpse.providers.weights`):
validated with the rest of the state, written as Consul's ``Weights``.
"""

import copy
import json
from pathlib import Path

import jsonschema
import pytest

from glimpse.providers.files import config_services
from glimpse.providers.state import InvalidState, registrations, validate_state

HTTP_ID = "prov:shop--prod--web:web-1:http"
SCHEMA = json.loads((Path(__file__).resolve().parents[2] / "glimpse" / "schema"
                     / "provider-state.json").read_text())


def web(**extra):
    """
    A valid instance of shop/prod/web with two named ports.
    """
    return {"product": "shop", "env": "prod", "job": "web", "instance": "web-1",
            "address": "10.0.0.1", "ports": {"http": 8080, "admin": 9090}, **extra}


def schema_accepts(document):
    """
    Whether the published JSON Schema accepts ``document``.
    """
    return jsonschema.Draft202012Validator(SCHEMA).is_valid(document)


def problems(instance):
    """
    The problems of a state of ``instance`` alone, by JSON path.
    """
    with pytest.raises(InvalidState) as raised:
        validate_state({"instances": [instance]})
    return dict(raised.value.problems)


def test_weights_become_consul_weights_on_every_port():
    """
    An instance's weight is kept in its normalised state, each state that
    is left out at 1, and every named port's registration carries it as
    Consul's Weights.
    """
    state = validate_state({"instances": [web(weight={"passing": 10})]})
    assert state["instances"][0]["weight"] == {"passing": 10, "warning": 1}
    regs = registrations("prov", state)
    assert {sid: r["Weights"] for sid, r in regs.items()} == {
        HTTP_ID: {"Passing": 10, "Warning": 1},
        "prov:shop--prod--web:web-1:admin": {"Passing": 10, "Warning": 1}}


def test_an_instance_without_weight_registers_as_before():
    """
    Without a weight nothing about the registration changes (no Weights, so
    Consul's defaults, and the same fingerprint): an upgrade rewrites none.
    """
    state = validate_state({"instances": [web()]})
    assert "weight" not in state["instances"][0]
    plain = registrations("prov", state)[HTTP_ID]
    assert "Weights" not in plain
    weighted = registrations("prov", validate_state({"instances": [web(weight={})]}))[HTTP_ID]
    assert weighted["Weights"] == {"Passing": 1, "Warning": 1}
    assert weighted["Meta"]["glimpse-hash"] != plain["Meta"]["glimpse-hash"]


def test_a_changed_weight_changes_the_fingerprint():
    """
    Changing a weight is a change of the registration: it is written again.
    """
    def fingerprint(weight):
        state = validate_state({"instances": [web(weight=weight)]})
        return registrations("prov", state)[HTTP_ID]["Meta"]["glimpse-hash"]

    assert fingerprint({"passing": 10}) != fingerprint({"passing": 11})


@pytest.mark.parametrize(("weight", "path", "message"), [
    (10, "$.instances[0].weight",
     'weight is an object of SRV weights, e.g. {"passing": 10, "warning": 1}'),
    ({"passing": 0}, "$.instances[0].weight.passing",
     "0 is not a weight: an integer from 1 to 65535"),
    ({"warning": 65536}, "$.instances[0].weight.warning",
     "65536 is not a weight: an integer from 1 to 65535"),
    ({"passing": 2.5}, "$.instances[0].weight.passing",
     "2.5 is not a weight: an integer from 1 to 65535"),
    ({"passing": True}, "$.instances[0].weight.passing",
     "True is not a weight: an integer from 1 to 65535"),
    ({"passing": "10"}, "$.instances[0].weight.passing",
     "'10' is not a weight: an integer from 1 to 65535"),
    ({"critical": 1}, "$.instances[0].weight.critical",
     'unknown key; weight has passing and warning, e.g. {"passing": 10, "warning": 1}'),
])
def test_a_bad_weight_rejects_the_whole_state_with_its_path(weight, path, message):
    """
    A weight that is not an integer from 1 to 65535 for passing or warning
    is reported at its JSON path, with the rest of the state's problems,
    and the published schema rejects it too.
    """
    instance = web(weight=weight)
    found = problems(instance)
    assert found[path] == message
    assert not schema_accepts({"instances": [copy.deepcopy(instance)]})


def test_every_weight_problem_is_reported_at_once():
    """
    Both states' problems come together, with the other fields'.
    """
    found = problems(web(weight={"passing": 0, "warning": -1}, drain="no"))
    assert set(found) == {"$.instances[0].weight.passing", "$.instances[0].weight.warning",
                          "$.instances[0].drain"}


def test_schema_accepts_weights():
    """
    The published schema accepts what the validator accepts.
    """
    assert schema_accepts({"instances": [web(weight={"passing": 65535, "warning": 1})]})
    assert schema_accepts({"instances": [web(weight={})]})


def test_the_file_path_writes_weights_in_the_config_file_spelling():
    """
    The file path's service definitions carry the same weights, spelled as
    Consul's config files spell them.
    """
    state = validate_state({"instances": [web(weight={"passing": 7, "warning": 2})]})
    rendered = {s["id"]: s for s in config_services("prov", state)["services"]}
    assert rendered[HTTP_ID]["weights"] == {"passing": 7, "warning": 2}
