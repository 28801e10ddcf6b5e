"""
Each package's public names, pinned as klein's ``test_exports.py`` pins its
own, and the rule that makes "private" mean something: a ``_module`` or
``_name`` is imported only inside the package that owns it.
"""

import ast
import importlib
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]

#: Every package's ``__all__``: each name and the module that defines it
#: (``None`` for a constant, which has no module of its own).
EXPORTS = {
    "glimpse.cli": {"Unreachable": "client", "main": "main", "request": "client",
                    "run": "main", "sse_events": "client"},
    "glimpse.http": {"Context": "lookup", "HTTPError": "_json", "Hub": "hub",
                     "ProvidersResource": "providers", "ZonesResource": "zones",
                     "make_root": "root"},
    "glimpse.consul": {"CHECK_STATUSES": None, "TOKEN_HEADER": None,
                       "AgentSelf": "_answers", "ConsulClient": "_client",
                       "ConsulDenied": "_answers", "ConsulError": "_answers",
                       "ConsulNotFound": "_answers", "ConsulTLS": "_tls",
                       "ConsulTLSError": "_answers", "ConsulUnavailable": "_answers",
                       "Response": "_answers", "TLSConfigError": "_tls",
                       "reload_agent": "_reload"},
    "glimpse.providers": {"Applier": "applier", "ApplyResult": "results",
                          "FileProviderError": "files", "FileResult": "files",
                          "InvalidState": "state", "NoSuchCheck": "state",
                          "NotAcknowledged": "results", "NotApplied": "results",
                          "ProviderStore": "store", "ReconcileService": "applier",
                          "provide_to_config_dir": "files", "registrations": "state",
                          "validate_state": "state"},
    "glimpse.view": {"Check": "model", "CheckHistory": "history", "Freshness": "zone",
                     "Instance": "model", "JobView": "zone", "Topology": "topology",
                     "Unavailable": "topology", "ZoneView": "zone",
                     "instances_from_health": "model"},
    "glimpse.metrics": {"Buckets": "buckets", "GCPauses": "gcpauses",
                        "GlimpseCollector": "registry", "LagProbe": "lag",
                        "make_registry": "registry"},
}


@pytest.mark.parametrize("package", sorted(EXPORTS))
def test_each_package_exports_its_public_names(package):
    """
    ``from glimpse.<package> import ...`` gives exactly the names other
    packages use, each defined where the table says.
    """
    module = importlib.import_module(package)
    assert sorted(module.__all__) == sorted(EXPORTS[package])
    for name, home in EXPORTS[package].items():
        if home is not None:
            assert getattr(module, name).__module__ == f"{package}.{home}"


def _sources():
    for top in ("glimpse", "tests", "bench", "twisted"):
        yield from sorted((REPO / top).rglob("*.py"))


def _private_owner(dotted):
    """
    The package that owns the first private part of ``dotted`` (``a.b._c.d``
    -> ``a.b``), or ``None`` when no part is private.
    """
    parts = dotted.split(".")
    for i, part in enumerate(parts):
        if part.startswith("_") and not part.startswith("__"):
            return ".".join(parts[:i])
    return None


def test_nothing_private_is_imported_from_outside_its_package():
    """
    A name or module starting with ``_`` is used only inside its own
    package (and the tests that mirror it: ``tests/dns/`` for
    ``glimpse/dns/``): a reader can change it knowing every use is next to it.
    """
    offenders = []
    for path in _sources():
        here = ".".join(path.relative_to(REPO).with_suffix("").parts)
        if here.startswith("tests."):
            here = "glimpse." + here.removeprefix("tests.")
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("glimpse"):
                names = [f"{node.module}.{alias.name}" for alias in node.names]
            elif isinstance(node, ast.Import):
                names = [a.name for a in node.names if a.name.startswith("glimpse")]
            else:
                continue
            for name in names:
                owner = _private_owner(name)
                if owner is not None and not here.startswith(owner + "."):
                    offenders.append(f"{path.relative_to(REPO)}:{node.lineno} {name}")
    assert offenders == []
