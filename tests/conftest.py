"""Shared test helpers: where the external vectors live, and the fail-don't-skip rule."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

PROJECT = Path(__file__).resolve().parent.parent
SHARED_VECTORS = PROJECT.parent / "shared" / "vectors"


def in_ci() -> bool:
    return os.environ.get("CI", "").lower() in ("1", "true", "yes")


def vectors_dir(name: str) -> Path:
    """The folder of an external vector set, read in place from ../shared/vectors.

    Absent on a user's machine: the test skips with a clear message. In CI the
    folder must be there, so its absence fails the test.
    """
    folder = SHARED_VECTORS / name
    if not folder.is_dir():
        message = f"external vectors not found at {folder} (they live beside the checkout)"
        if in_ci():
            pytest.fail(message)
        pytest.skip(message)
    return folder
