"""The functional core stays pure: these modules import no I/O machinery."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PROJECT = Path(__file__).resolve().parents[2]
PURE_MODULES = [
    "tlsa/records.py",
    "tlsa/answers.py",
    "tlsa/match.py",
    "tlsa/discovery.py",
    "relay/policy.py",
    "tlsa/replies.py",
    "tlsa/validator.py",
    "relay/trouble.py",
    "relay/smtp_evidence.py",
    "relay/evidence.py",
    "relay/schedule.py",
    "relay/dsn.py",
    "relay/submission.py",
    "relay/check.py",
    "relay/check_auth.py",
    "relay/demo/zones.py",
    "relay/demo/results.py",
    "relay/demo/render.py",
    "relay/dns_trust.py",
]
FORBIDDEN = {"asyncio", "socket", "ssl", "time", "random", "subprocess", "os", "selectors"}


@pytest.mark.parametrize("module", PURE_MODULES)
def test_pure_module_imports_no_io(module: str) -> None:
    path = PROJECT / module
    if not path.exists():
        pytest.fail(f"{module} is missing")
    tree = ast.parse(path.read_text())
    imported: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            imported.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            imported.add(node.module.split(".")[0])
    assert not imported & FORBIDDEN, f"{module} imports {sorted(imported & FORBIDDEN)}"
