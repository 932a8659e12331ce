"""The `dane-relay` command line: argument parsing and dispatch only.

Each command group lives in its own `cli_*` module with a `register()`
function; this module wires them together and owns the exit-code rule:
bad input is one line on stderr and exit status 2, never a traceback.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence

from relay import (
    __version__,
    cli_check,
    cli_demo,
    cli_dns,
    cli_queue,
    cli_send,
    cli_serve,
    cli_tlsa,
    cli_user,
)
from relay.errors import UsageError

Handler = Callable[[argparse.Namespace], int]

EXIT_USAGE = 2


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="dane-relay",
        description=(
            "An outbound SMTP relay that delivers only to DANE-authenticated mail servers "
            "(RFC 6698/7671/7672)."
        ),
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    cli_tlsa.register(commands)
    cli_dns.register(commands)
    cli_send.register(commands)
    cli_user.register(commands)
    cli_check.register(commands)
    cli_demo.register(commands)
    cli_queue.register(commands)
    cli_serve.register(commands)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    handler: Handler | None = getattr(args, "handler", None)
    if handler is None:
        parser.print_help()
        return EXIT_USAGE
    try:
        return handler(args)
    except UsageError as exc:
        print(f"dane-relay: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
