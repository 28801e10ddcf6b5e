"""
What :mod:`glimpse.dns` offers other packages, pinned as
``tests/test_exports.py`` pins the other packages' (this table belongs in its
``EXPORTS``; it is here until it moves there).
"""

import importlib

#: ``glimpse.dns.__all__``: each name and the module that defines it.
EXPORTS = {
    "DNSStats": "wire",
    "FastDatagramProtocol": "fastpath",
    "FastUDPServer": "udpport",
    "GlimpseDatagramProtocol": "protocols",
    "GlimpseResolver": "server",
    "GlimpseServerFactory": "server",
    "GlimpseStreamProtocol": "protocols",
    "ZoneIdentity": "answers",
    "opt_record": "wire",
    "read_opt": "wire",
}


def test_the_package_exports_its_public_names():
    """
    ``from glimpse.dns import ...`` gives exactly the names other packages
    build the DNS server with, each defined where the table says.
    """
    module = importlib.import_module("glimpse.dns")
    assert sorted(module.__all__) == sorted(EXPORTS)
    for name, home in EXPORTS.items():
        assert getattr(module, name).__module__ == f"glimpse.dns.{home}"
