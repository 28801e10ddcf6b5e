"""
Tests for :obj:`glimpse.mapping`: the names, keys and IDs Glimpse writes into
Consul, which ``docs/consul-mapping.md`` promises.
"""

from pathlib import Path

from glimpse import mapping
from glimpse.mapping import (
    ANY_PROVIDER,
    OWN_META_KEYS,
    alias_check_id,
    aliased_service,
    check_id,
    checks_port,
    consul_service_name,
    fingerprint,
    is_draining,
    is_file_sourced,
    is_own_meta_key,
    port_tags,
    provider_filter,
    registration_hash,
    registration_id,
    split_consul_service,
)

DOC = Path(__file__).parent.parent / "docs" / "consul-mapping.md"


def test_ids_and_names_as_documented():
    """
    A registration is named as the mapping document says: service
    ``<product>--<env>--<job>``, ID ``<provider>:<service>:<instance>:<port>``,
    checks ``<id>:check<N>``, the port name as its one tag.
    """
    name = consul_service_name("shop", "prod", "web")
    assert name == "shop--prod--web"
    assert split_consul_service(name) == ("shop", "prod", "web")
    sid = registration_id("deploy", name, "web-1", "http")
    assert sid == "deploy:shop--prod--web:web-1:http"
    assert check_id(sid, 2) == "deploy:shop--prod--web:web-1:http:check2"
    assert port_tags("http") == ["http"]


def test_alias_check_ids_name_the_port_carrying_the_checks():
    """
    An instance's checks are on its first named port in sorted order; the
    alias check of another port is ``<id>:alias:<that port>``, and reads
    back as the carrier's registration ID, whatever else the ID holds.
    """
    assert checks_port(["http", "admin", "metrics"]) == "admin"
    sid = registration_id("deploy", "shop--prod--web", "web-1", "http")
    alias = alias_check_id(sid, "admin")
    assert alias == "deploy:shop--prod--web:web-1:http:alias:admin"
    assert aliased_service(sid, alias) == "deploy:shop--prod--web:web-1:admin"
    assert aliased_service(sid, check_id(sid, 0)) is None
    assert aliased_service("other:shop--prod--web:web-1:http", alias) is None
    assert aliased_service(sid, f"{sid}:alias:") is None
    assert aliased_service(sid, f"{sid}:alias:a:b") is None


def test_fingerprint_does_not_change():
    """
    The fingerprint of a registration stays what it was: a new one would
    make every Glimpse rewrite all its registrations once (their checks
    going critical) on the upgrade.
    """
    definition = {"ID": "p:shop--prod--web:w1:http", "Name": "shop--prod--web",
                  "Tags": ["http"], "Port": 80, "Meta": {"glimpse-provider": "p"}, "Checks": []}
    assert fingerprint(definition) == fingerprint(dict(reversed(definition.items())))
    assert fingerprint(definition) == "6588a3bab1066036"


def test_reading_registrations():
    """
    What a registration's Meta says: its fingerprint, whether the file path
    wrote it, whether it drains, and which keys are Glimpse's own.
    """
    service = {"ID": "x", "Meta": {"glimpse-hash": "0" * 16, "glimpse-source": "file",
                                   "glimpse-drain": "true"}}
    assert registration_hash(service) == "0" * 16
    assert is_file_sourced(service) and is_draining(service["Meta"])
    bare = {"ID": "y", "Meta": None}
    assert registration_hash(bare) is None
    assert not is_file_sourced(bare) and not is_draining({})
    assert is_own_meta_key("glimpse-port") and not is_own_meta_key("version")
    assert provider_filter("deploy") == 'Meta["glimpse-provider"] == "deploy"'
    assert ANY_PROVIDER == '"glimpse-provider" in Meta'


def test_the_document_names_every_key():
    """
    ``docs/consul-mapping.md`` names every Meta key Glimpse writes, and
    points to this module.
    """
    text = DOC.read_text()
    assert all(f'"{key}"' in text for key in OWN_META_KEYS)
    assert "glimpse/mapping.py" in text
    assert sorted(mapping.__all__) == mapping.__all__
