"""Shared fixtures: the real data in ../shared/data (next to the repository root)."""
from __future__ import annotations

from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"


@pytest.fixture(scope="session")
def shared_data() -> Path:
    assert SHARED_DATA.is_dir(), f"real data expected at {SHARED_DATA} (see README)"
    return SHARED_DATA
