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
    "glimpse.dev": {"ClusterAgent": "zone", "ConsulNotFound": "consul",
                    "ConsulStartError": "agent", "DevConsul": "consul", "DevGlimpse": "twistd",
                    "Federation": "cluster", "GlimpseStartError": "twistd", "Zone": "zone",
                    "deregister": "registrations", "find_consul": "consul",
                    "free_ports": "agent", "http_json": "twistd", "register": "registrations",
                    "service_id": "registrations", "set_check": "registrations",
                    "start_dev_consul": "consul", "start_glimpse": "twistd",
                    "start_zone": "cluster", "start_zones": "cluster"},
    "glimpse.dns": {"DNSStats": "wire", "FastDatagramProtocol": "fastpath",
                    "FastUDPServer": "udpport", "GlimpseDatagramProtocol": "protocols",
                    "GlimpseResolver": "resolver", "GlimpseServerFactory": "server",
                    "GlimpseStreamProtocol": "stream", "ROTATIONS": None,
                    "StreamFactory": "connections", "ZoneIdentity": "answers",
                    "fitted_max_conns": "connections", "opt_record": "wire",
                    "read_opt": "wire"},
    "glimpse.http": {"Context": "lookup", "GlimpseCollector": "collector",
                     "make_registry": "collector", "HTTPError": "_json", "Hub": "hub",
                     "ProvidersResource": "providers", "ZonesResource": "zones",
                     "make_root": "root"},
    "glimpse.consul": {"CHECK_STATUSES": None, "TOKEN_HEADER": None,
                       "AgentSelf": "_answers", "ConsulBusy": "_answers",
                       "ConsulClient": "_client", "ConsulConnections": "_connect",
                       "connect_consul": "_connect",
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
                     "Instance": "model", "JobView": "zone", "Steering": "steering",
                     "Topology": "topology", "Unavailable": "topology", "ZoneView": "zone",
                     "instances_from_health": "model"},
    "glimpse.metrics": {"Buckets": "buckets", "GCPauses": "gcpauses",
                        "LagProbe": "lag"},
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
    The package that owns the first private part of ``dotted``, or ``None``
    when no part is private: ``glimpse.http._json.X`` and
    ``glimpse.dev.zone._up`` are both private to their package
    (``glimpse.http``, ``glimpse.dev``).
    """
    parts = dotted.split(".")
    for i, part in enumerate(parts):
        if part.startswith("_") and not part.startswith("__"):
            owner = parts[:i]
            if not REPO.joinpath(*owner, "__init__.py").exists():
                owner = owner[:-1]  # a module's private name: its package's
            return ".".join(owner)
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
