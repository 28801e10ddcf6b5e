"""
The public names of :mod:`glimpse.metrics`, pinned as klein's
``test_exports.py`` pins its own.
"""

import ast
from pathlib import Path

import glimpse.metrics

REPO = Path(__file__).resolve().parents[2]
PACKAGE = "glimpse.metrics"


def test_the_package_exports_what_others_import():
    """
    ``from glimpse.metrics import ...`` gives what the agent, the DNS
    server and the tests use, each defined in the module named here.
    """
    assert glimpse.metrics.__all__ == [
        "Buckets", "GCPauses", "GlimpseCollector", "LagProbe", "make_registry"]
    homes = {"Buckets": "buckets", "GCPauses": "gcpauses", "GlimpseCollector": "registry",
             "LagProbe": "lag", "make_registry": "registry"}
    for name in glimpse.metrics.__all__:
        assert getattr(glimpse.metrics, name).__module__ == f"glimpse.metrics.{homes[name]}"


def test_nothing_private_is_imported_from_outside():
    """
    A ``_module`` or ``_name`` of the package is imported only inside it.
    """
    offenders = []
    for path in sorted(REPO.glob("[gbt]*/**/*.py")):
        if path.is_relative_to(REPO.joinpath(*PACKAGE.split("."))):
            continue
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith(PACKAGE):
                names = [node.module or "", *(a.name for a in node.names)]
            elif isinstance(node, ast.Import):
                names = [a.name for a in node.names if a.name.startswith(PACKAGE)]
            else:
                continue
            if any(part.startswith("_") for n in names for part in n.split(".")):
                offenders.append(f"{path.relative_to(REPO)}:{node.lineno}")
    assert offenders == []
