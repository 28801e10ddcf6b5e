"""
Tests for :obj:`glimpse.providers`' exports: the names other packages use.
"""

import glimpse.providers


def test_exports():
    """
    The package exports exactly the write side's public names, each defined
    inside the package, so other packages never reach into its modules.
    """
    assert glimpse.providers.__all__ == [
        "Applier", "ApplyResult", "FileProviderError", "FileResult", "InvalidState",
        "NoSuchCheck", "NotAcknowledged", "NotApplied", "ProviderStore", "ReconcileService",
        "provide_to_config_dir", "registrations", "validate_state",
    ]
    for name in glimpse.providers.__all__:
        assert getattr(glimpse.providers, name).__module__.startswith("glimpse.providers.")
