"""
The public names of :mod:`glimpse.view`, pinned as klein's
``test_exports.py`` pins its own.
"""

import ast
from pathlib import Path

import glimpse.view

REPO = Path(__file__).resolve().parents[2]
PACKAGE = "glimpse.view"


def test_the_package_exports_what_others_import():
    """
    ``from glimpse.view import ...`` gives the read side's parts that the
    composition root, DNS, the HTTP API and the benchmarks use, each defined
    in the module named here.
    """
    assert glimpse.view.__all__ == [
        "Check", "CheckHistory", "Freshness", "Instance", "JobView", "Topology",
        "Unavailable", "ZoneView", "instances_from_health",
    ]
    homes = {"Check": "model", "CheckHistory": "history", "Freshness": "zone",
             "Instance": "model", "JobView": "zone", "Topology": "topology",
             "Unavailable": "topology", "ZoneView": "zone", "instances_from_health": "model"}
    for name in glimpse.view.__all__:
        assert getattr(glimpse.view, name).__module__ == f"glimpse.view.{homes[name]}"


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
