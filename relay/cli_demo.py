"""`dane-relay demo`: downgrade and DNS-poisoning attacks, and what DANE does about them.

    dane-relay demo [--json] [--html FILE]

Builds a world on loopback in this process (relay/demo: a DNSSEC-signed
hierarchy with its own trust anchor, an honest MX with a TLSA record, an
attacker's MX, two men in the middle and a DNS spoofer), runs four scenarios
with an opportunistic sender and with dane-relay, and prints the story (or
JSON with --json); --html also writes the story as one self-contained page.
Needs no root, no network and no configuration file.

Exit status: 0 when every scenario turned out as shown (the attacks read the
opportunistic sender's mail, dane-relay deferred and leaked nothing, both
delivered without an attack); 1 otherwise, or when the world cannot start
(e.g. the loopback interface is down); 2 for bad usage.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from pathlib import Path
from typing import Any

from relay.demo.render import html_page, narrative, to_json
from relay.demo.results import surprises
from relay.demo.scenarios import run_demo
from relay.errors import UsageError

EXIT_OK = 0
EXIT_SURPRISE = 1


def register(commands: Any, name: str, summary: str) -> None:
    parser: argparse.ArgumentParser = commands.add_parser(
        name,
        help=summary,
        description=(
            "Run four scenarios on an in-process loopback world, each with a plain "
            "opportunistic-TLS sender and with dane-relay, and show what the attacker captured."
        ),
    )
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument("--html", type=Path, metavar="FILE", help="also write the story as HTML")
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    try:
        report = asyncio.run(run_demo())
    except OSError as exc:
        print(f"dane-relay: demo: cannot run the loopback world: {exc}", file=sys.stderr)
        return EXIT_SURPRISE
    if args.html is not None:
        try:
            args.html.write_text(html_page(report), "utf-8")
        except OSError as exc:
            raise UsageError(f"demo: cannot write {args.html}: {exc.strerror or exc}") from None
    if args.json:
        print(json.dumps(to_json(report), indent=2))
    else:
        print(narrative(report))
        if args.html is not None:
            print(f"The same story as a page: {args.html}")
    problems = surprises(report)
    for problem in problems:
        print(f"dane-relay: demo: unexpected: {problem}", file=sys.stderr)
    return EXIT_SURPRISE if problems else EXIT_OK
