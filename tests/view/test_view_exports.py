"""
Tests for :obj:`glimpse.view`'s exports: the names other packages use.
"""

import glimpse.view


def test_exports():
    """
    The package exports exactly the read side's public names, each defined
    inside the package, so other packages never reach into its modules.
    """
    assert glimpse.view.__all__ == [
        "Check", "CheckHistory", "Freshness", "Instance", "JobView", "Topology",
        "Unavailable", "ZoneView", "instances_from_health",
    ]
    for name in glimpse.view.__all__:
        assert getattr(glimpse.view, name).__module__.startswith("glimpse.view.")
