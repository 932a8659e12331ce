"""`dane-relay user` (placeholder until implemented)."""

from __future__ import annotations

import argparse
from typing import Any


def register(commands: Any) -> None:
    parser: argparse.ArgumentParser = commands.add_parser("user", help="(not yet implemented)")
    parser.set_defaults(handler=lambda args: 2)
