"""Test modules have unique basenames.

Why: tests/ folders are not packages, so pytest imports every test module by its
basename; two ``test_tls.py`` in different folders stop collection of the whole
suite ("import file mismatch"), which a merge of two branches did once.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path

TESTS = Path(__file__).parent


def test_test_module_basenames_are_unique() -> None:
    names = Counter(path.name for path in TESTS.rglob("test_*.py"))
    assert not [name for name, count in names.items() if count > 1]
