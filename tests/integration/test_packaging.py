"""The distribution that `pip install` (and the Docker image) gets: a wheel built from the
project holds every module and data file of relay/ and tlsa/.

A subpackage missing from the setuptools configuration passes every other test (they import
from the source tree) and breaks only the installed command: `dane-relay demo` once failed
with "No module named 'relay.demo'" outside the checkout."""

from __future__ import annotations

import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration

PROJECT = Path(__file__).resolve().parents[2]


def test_the_wheel_holds_every_module_and_data_file(tmp_path: Path) -> None:
    source = tmp_path / "source"
    source.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(PROJECT / name, source / name)
    for package in ("relay", "tlsa"):
        shutil.copytree(
            PROJECT / package, source / package, ignore=shutil.ignore_patterns("__pycache__")
        )
    built = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(tmp_path), "."],
        cwd=source,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert built.returncode == 0, built.stderr
    (wheel,) = tmp_path.glob("dane_relay-*.whl")
    with zipfile.ZipFile(wheel) as archive:
        shipped = {name for name in archive.namelist() if not name.startswith("dane_relay-")}
    wanted = {
        str(path.relative_to(source))
        for package in ("relay", "tlsa")
        for path in (source / package).rglob("*")
        if path.is_file()
    }
    assert wanted - shipped == set()
    assert "relay/demo/scenarios.py" in shipped and "tlsa/data/root-anchors.txt" in shipped
