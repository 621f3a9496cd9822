"""The public API is exactly ``inferline.__all__``: sorted, complete, importable."""

from __future__ import annotations

import inferline


def test_all_is_sorted_and_complete() -> None:
    assert inferline.__all__ == sorted(inferline.__all__)
    public = {
        name
        for name, value in vars(inferline).items()
        if not name.startswith("_") and getattr(value, "__module__", "").startswith("inferline")
    }
    assert public <= set(inferline.__all__)
    for name in inferline.__all__:
        assert hasattr(inferline, name), name
