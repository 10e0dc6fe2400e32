"""The public names of each package are exactly what its ``__all__`` lists."""

from __future__ import annotations

import loopwise.patterns


def test_patterns_exports() -> None:
    """Every name in ``loopwise.patterns.__all__`` exists, and nothing public is unlisted."""
    exported = set(loopwise.patterns.__all__)
    public = {
        name
        for name, value in vars(loopwise.patterns).items()
        if not name.startswith("_") and getattr(value, "__module__", "").startswith("loopwise.")
    }
    assert public == exported
    for name in exported:
        assert hasattr(loopwise.patterns, name)
