"""
The public names of :mod:`glimpse.providers`, pinned as klein's
``test_exports.py`` pins its own.
"""

import ast
from pathlib import Path

import glimpse.providers

REPO = Path(__file__).resolve().parents[2]
PACKAGE = "glimpse.providers"


def test_the_package_exports_what_others_import():
    """
    ``from glimpse.providers import ...`` gives the write side's parts that
    the composition root, the HTTP API, the CLI and the benchmarks use, each
    defined in the module named here.
    """
    assert glimpse.providers.__all__ == [
        "Applier", "ApplyResult", "FileProviderError", "FileResult", "InvalidState",
        "NoSuchCheck", "NotAcknowledged", "NotApplied", "ProviderStore", "ReconcileService",
        "provide_to_config_dir", "registrations", "validate_state",
    ]
    homes = {"Applier": "applier", "ApplyResult": "results", "FileProviderError": "files",
             "FileResult": "files", "InvalidState": "state", "NoSuchCheck": "state",
             "NotAcknowledged": "results", "NotApplied": "results", "ProviderStore": "store",
             "ReconcileService": "applier", "provide_to_config_dir": "files",
             "registrations": "state", "validate_state": "state"}
    for name in glimpse.providers.__all__:
        assert getattr(glimpse.providers, name).__module__ == f"glimpse.providers.{homes[name]}"


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
