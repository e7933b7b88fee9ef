"""Shared fixtures: where the real sample data lives, and generated sources cut from it."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("PLATEZARR_SHARED_DATA", REPO.parent / "shared" / "data"))


def shared(*parts: str) -> Path:
    """A path inside ../shared/data, or a skip naming what is missing."""
    path = SHARED_DATA.joinpath(*parts)
    if not path.exists():
        pytest.skip(f"real sample data not found at {path} (set PLATEZARR_SHARED_DATA or check out shared/ beside the repo)")
    return path


@pytest.fixture
def rxrx1_dir() -> Path:
    """The real RxRx1 sample: images/train/{experiment}/Plate{n}/B02_s{1,2}_w{1..6}.png and metadata.csv."""
    return shared("rxrx1")
