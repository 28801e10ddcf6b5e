"""
The public names of :mod:`glimpse.consul`, pinned as klein's
``test_exports.py`` pins its own.
"""

import ast
from pathlib import Path

import glimpse.consul

REPO = Path(__file__).resolve().parents[1]
PACKAGE = "glimpse.consul"


def test_the_package_exports_what_others_import():
    """
    ``from glimpse.consul import ...`` gives the client, its answers and
    errors, and the blocking reload; both modules behind them are private.
    """
    assert glimpse.consul.__all__ == [
        "CHECK_STATUSES", "TOKEN_HEADER", "AgentSelf", "ConsulClient", "ConsulDenied",
        "ConsulError", "ConsulNotFound", "ConsulUnavailable", "Response", "reload_agent",
    ]
    homes = {"AgentSelf": "_answers", "ConsulClient": "_client", "ConsulDenied": "_answers",
             "ConsulError": "_answers", "ConsulNotFound": "_answers",
             "ConsulUnavailable": "_answers", "Response": "_answers", "reload_agent": "_client"}
    for name, home in homes.items():
        assert getattr(glimpse.consul, name).__module__ == f"glimpse.consul.{home}"


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
