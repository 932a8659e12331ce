"""The `dane-relay` command line: argument parsing and dispatch only.

Each command group lives in its own `cli_*` module with a `register()`
function; this module wires them together and owns the exit-code rule:
bad input is one line on stderr and exit status 2, never a traceback.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Callable, Sequence

from relay import __version__
from relay.errors import UsageError

Handler = Callable[[argparse.Namespace], int]

EXIT_USAGE = 2


#: Every command, in --help order: the module that implements it (its `register(commands,
#: name, summary)` defines the arguments) and the one line --help shows.  Only the module of
#: the command being run is imported: `queue list` or `send` does not pay for loading the
#: engine, the checker and the demo (measured: `--help` 0.39 -> 0.03 s, `queue --help` 0.25 s).
COMMANDS: dict[str, tuple[str, str]] = {
    "tlsa": ("relay.cli_tlsa", "generate TLSA records or check a chain against them"),
    "dns": ("relay.cli_dns", "look up a DNS record and show its DNSSEC status"),
    "send": (
        "relay.cli_send",
        "deliver one message now, without a queue, and report per recipient",
    ),
    "user": ("relay.cli_user", "manage the users who may AUTH to the submission listener"),
    "check": (
        "relay.cli_check",
        "check whether DANE senders can reach DOMAIN, per MX and per IP address",
    ),
    "demo": (
        "relay.cli_demo",
        "show, on loopback, the attacks DANE stops (STARTTLS stripping, "
        "certificate substitution, DNS poisoning)",
    ),
    "queue": ("relay.cli_queue", "list, show, flush, hold, release, delete or requeue queued mail"),
    "serve": (
        "relay.cli_serve",
        "run the relay: accept mail on [listen] address, queue it, deliver it with DANE",
    ),
}


def build_parser(command: str | None = None) -> argparse.ArgumentParser:
    """The whole command line, with the arguments of `command` (None: of every command).

    Commands other than `command` are listed by name and summary only, so that
    their modules need not be imported; `main` passes the command it finds in argv.
    """
    parser = argparse.ArgumentParser(
        prog="dane-relay",
        description=(
            "An outbound SMTP relay that delivers only to DANE-authenticated mail servers "
            "(RFC 6698/7671/7672)."
        ),
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, (module, summary) in COMMANDS.items():
        if command is None or name == command:
            importlib.import_module(module).register(commands, name, summary)
        else:
            commands.add_parser(name, help=summary)
    return parser


def _command_in(argv: Sequence[str]) -> str:
    """The command word of argv: the first argument that is not an option (the top level
    has only --help and --version, which take no value), or "" when there is none."""
    return next((arg for arg in argv if not arg.startswith("-")), "")


def main(argv: Sequence[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    parser = build_parser(_command_in(argv))
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
